"""The Qt-free core, in layers (ARCHITECTURE.md): base < config < model | data < quantize < analysis <
tune | deploy < report < run. Loading, layer inventory, recipe, calibration data, quantization, comparison,
measurement and export. Nothing in this package may import Qt (an import-linter contract and a test
enforce it)."""
