"""Layer 4: the only layer that knows which library quantizes. Backends (torch.ao FX/eager/dynamic, PT2E)
chosen through `registry.backend_for`, qconfigs and observers, quantization points, fusion, the layer
inventory, equalisation, the known int8 kernel corrections."""
