"""Layer 3, beside `model`: calibration and evaluation data (image folders, tensor files, the demo, random
inputs) as `DataSource`s of batches. May import `config` and `base`; never `model`."""
