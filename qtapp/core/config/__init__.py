"""Layer 2: the recipe (`QuantRecipe`, versioned, read and written as JSON) and the names it may hold
(metric names). Imports only `base`."""
