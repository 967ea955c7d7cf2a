"""Quantization Studio: turn a trained PyTorch model into a smaller, faster int8 model.

`qtapp.core` holds everything that does work and imports no Qt; `qtapp.cli` and `qtapp.ui` are two
faces over it. Importing `qtapp` is cheap: torch is imported lazily by the modules that need it.
"""

__version__ = "0.1.0"
