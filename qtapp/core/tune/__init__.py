"""Layer 6: choosing a configuration: cost model, scoring of configurations, per-point sensitivity, the
search for a target within a budget. Imports `analysis` and below; never `deploy`."""
