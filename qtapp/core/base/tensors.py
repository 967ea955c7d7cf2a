"""Small tensor facts used at every layer: SQNR from two sums, the first tensor of a model's output, whether
a module is a quantized one."""

from __future__ import annotations

import math


def sqnr_db(signal_sq: float, noise_sq: float) -> float | None:
    """SQNR = 10·log10(Σref² / Σ(ref−q)²); None when the two are identical (no noise to measure)."""
    if noise_sq == 0:
        return None
    if signal_sq == 0:
        return -math.inf if noise_sq else None
    return 10.0 * math.log10(signal_sq / noise_sq)


def first_tensor(out, dequantize: bool = True):
    """The first tensor of a model's (or op's) output, dequantized unless asked to keep int8 values."""
    import torch

    if isinstance(out, torch.Tensor):
        return out.dequantize() if out.is_quantized and dequantize else out
    if isinstance(out, (tuple, list)) and out:
        return first_tensor(out[0], dequantize)
    if isinstance(out, dict) and out:
        return first_tensor(next(iter(out.values())), dequantize)
    return None


def is_quantized_module(m) -> bool:
    mod = type(m).__module__
    return mod.startswith(("torch.ao.nn.quantized", "torch.ao.nn.intrinsic.quantized"))
