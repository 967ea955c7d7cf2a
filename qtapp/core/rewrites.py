"""Stand-ins swapped into the copy about to be converted (backends.float_rewrite, backends.kernel_rewrite):
float modules for those torch.ao converts to int8 whatever their setting, and the pieces of the app's
corrections of int8 kernels that compute something else than the float op (qconfigs.KERNEL_CORRECTIONS)."""

from __future__ import annotations

from typing import List, Optional

import torch
import torch.nn.functional as F


class FloatPReLU(torch.nn.Module):
    """PReLU, kept float: the same function under a type torch.ao has no int8 pattern for."""

    def __init__(self, weight: torch.Tensor) -> None:
        super().__init__()
        self.weight = weight

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.prelu(x, self.weight)


class FloatAvgPool(torch.nn.Module):
    """An average pool computed in float on the dequantized int8 input; convert_fx rounds its output back
    with the range the pool shares with its input (the int8 pool's own output scale and zero point).

    torch's quantized avg_pool2d (also under avg_pool1d) calls QNNPACK's average pooling whenever the
    process runs the qnnpack engine (quint8, ceil_mode False), and QNNPACK takes neither count_include_pad
    nor divisor_override: it divides every window by its full size (conv -> pool -> conv: 12.6 dB). Swapped
    in when converting for qnnpack (the engine is the running process's: a file made on fbgemm and run on
    qnnpack is hit too, and is not corrected). Exact: 0 steps off the float op."""

    def __init__(self, pool: torch.nn.Module) -> None:
        super().__init__()
        self.pool = pool

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(x)


class FloatEmbeddingBag(torch.nn.Module):
    """EmbeddingBag kept float (mode "max"): torch's int8 EmbeddingBag sums whatever its mode."""

    def __init__(self, bag: torch.nn.EmbeddingBag) -> None:
        super().__init__()
        self.weight = bag.weight
        self.max_norm, self.norm_type = bag.max_norm, bag.norm_type
        self.scale_grad_by_freq, self.mode, self.sparse = bag.scale_grad_by_freq, bag.mode, bag.sparse
        self.include_last_offset, self.padding_idx = bag.include_last_offset, bag.padding_idx

    def forward(self, input: torch.Tensor, offsets: Optional[torch.Tensor] = None,
                per_sample_weights: Optional[torch.Tensor] = None) -> torch.Tensor:
        return F.embedding_bag(input, self.weight, offsets, self.max_norm, self.norm_type, self.scale_grad_by_freq,
                               self.mode, self.sparse, per_sample_weights, self.include_last_offset, self.padding_idx)


def bag_mean_weights(ids: torch.Tensor, offsets: Optional[torch.Tensor], padding_idx: int,
                     include_last_offset: bool) -> torch.Tensor:
    """Per-sample weights that make a sum over each bag its mean: 1 / (the bag's entries other than
    `padding_idx`) for each entry, 0 for padding entries (and for ids after the last bag's end).

    torch's int8 EmbeddingBag (torch 2.14) calls quantized::embedding_bag_byte with mode 0, and that kernel
    sums whatever mode it is given; it does take per-sample weights, so the sum it computes with these is
    the mean of the bag's int8 rows (exact to float rounding). `ids` 2-D: one bag per row; 1-D: bags start
    at `offsets` (with include_last_offset, its last entry ends the last bag)."""
    valid = (ids != padding_idx).to(torch.float32)
    if ids.dim() == 2:
        return valid / valid.sum(dim=1, keepdim=True).clamp(min=1.0)
    assert offsets is not None
    n = ids.numel()
    if include_last_offset:
        starts = offsets[:-1]
        end = offsets[-1]
    else:
        starts = offsets
        end = torch.full((), n, dtype=offsets.dtype, device=offsets.device)
    position = torch.arange(n, dtype=offsets.dtype, device=offsets.device)
    valid = valid * (position < end).to(torch.float32)
    bag = (torch.searchsorted(starts.contiguous(), position, right=True) - 1).clamp(min=0)
    counts = torch.zeros(starts.numel(), dtype=torch.float32, device=ids.device).index_add_(0, bag, valid)
    return valid / counts.clamp(min=1.0)[bag]


def avg_pool2d(input: torch.Tensor, kernel_size: List[int], stride: List[int], padding: List[int], ceil_mode: bool,
               count_include_pad: bool, divisor_override: Optional[int]) -> torch.Tensor:
    """F.avg_pool2d under a function torch.ao has no int8 pattern for: FloatAvgPool's functional twin, every
    argument given (backends.kernel_rewrite fills them in); its name keeps the node reading as its op."""
    return F.avg_pool2d(input, kernel_size, stride, padding, ceil_mode, count_include_pad, divisor_override)


def avg_pool1d(input: torch.Tensor, kernel_size: List[int], stride: List[int], padding: List[int], ceil_mode: bool,
               count_include_pad: bool) -> torch.Tensor:
    """F.avg_pool1d, likewise (its int8 form runs the same QNNPACK pool)."""
    return F.avg_pool1d(input, kernel_size, stride, padding, ceil_mode, count_include_pad)


class MeanEmbeddingBag(torch.nn.Module):
    """A dynamically quantized EmbeddingBag of mode "mean": the int8 bag (which sums whatever its mode)
    called with per-sample weights 1 / bag size (bag_mean_weights), so its sum is the bag's mean."""

    def __init__(self, bag: torch.nn.Module, padding_idx: Optional[int], include_last_offset: bool) -> None:
        super().__init__()
        self.bag = bag
        self.padding_idx = -1 if padding_idx is None else int(padding_idx)
        self.include_last_offset = include_last_offset

    def forward(self, input: torch.Tensor, offsets: Optional[torch.Tensor] = None) -> torch.Tensor:
        weights = bag_mean_weights(input, offsets, self.padding_idx, self.include_last_offset)
        return self.bag(input, offsets, weights)
