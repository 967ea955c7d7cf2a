"""Layer 5: what quantization did to a model, measured: output comparison and task metrics, the per-point
analysis (quantization parameters, range statistics, taps, static/dynamic/PT2E readers) and its diagnosis."""
