"""Layer 1, the ground: what every layer uses and that knows nothing of models or quantization: errors,
progress and cancelling of jobs, input specs, atomic result folders and scratch space, tensor helpers
(SQNR), the bundled demo's files, torch.ao compatibility. Imports nothing of qtapp."""
