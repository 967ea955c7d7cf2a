"""The Qt-free core: loading, layer inventory, recipe, calibration data, quantization, comparison,
measurement and export. Nothing in this package may import Qt (an import-linter contract and a test
enforce it)."""
