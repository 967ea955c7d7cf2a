"""Stand-ins swapped into the copy about to be converted (torch_ao.float_rewrite, torch_ao.kernel_rewrite):
float modules for those torch.ao converts to int8 whatever their setting, and the pieces of the app's
corrections of int8 kernels that compute something else than the float op (qconfigs.KERNEL_CORRECTIONS)."""

from __future__ import annotations

from typing import List, Optional, Tuple

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
    argument given (torch_ao.kernel_rewrite fills them in); its name keeps the node reading as its op."""
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


class StackedRNN(torch.nn.Module):
    """A multi-layer nn.LSTM or nn.GRU run as one single-layer module per layer (`layers.0`, `layers.1`,
    ...), computing the same outputs and final states. Swapped in when a model is loaded
    (split_stacked_rnns), so each layer is a quantization point of its own: torch.ao quantizes a
    multi-layer LSTM as one, and one layer it cannot quantize (the first layer of an audio encoder fed raw
    mel power spanning eight decades: 0 dB in dynamic int8) would otherwise keep the whole stack float.
    Dropout between layers is applied as the original applies it (training only)."""

    def __init__(self, rnn: torch.nn.Module) -> None:
        super().__init__()
        kind = type(rnn)
        self.is_lstm = isinstance(rnn, torch.nn.LSTM)
        self.dropout = float(rnn.dropout)
        self.batch_first = rnn.batch_first
        self.layers = torch.nn.ModuleList()
        directions = 2 if rnn.bidirectional else 1
        out_size = (rnn.proj_size if getattr(rnn, "proj_size", 0) else rnn.hidden_size) * directions
        for k in range(rnn.num_layers):
            extra = {"proj_size": rnn.proj_size} if self.is_lstm and rnn.proj_size else {}
            one = kind(rnn.input_size if k == 0 else out_size, rnn.hidden_size, num_layers=1, bias=rnn.bias,
                       batch_first=rnn.batch_first, bidirectional=rnn.bidirectional, **extra)
            with torch.no_grad():
                for name, p in one.named_parameters():
                    stem, _, rest = name.partition("_l0")
                    p.copy_(getattr(rnn, f"{stem}_l{k}{rest}"))
            one.train(rnn.training)
            self.layers.append(one)
        self.directions = directions
        self.train(rnn.training)

    def _between(self, x: torch.Tensor, k: int) -> torch.Tensor:
        if self.dropout > 0 and self.training and k < len(self.layers) - 1:
            return F.dropout(x, self.dropout, True)
        return x


class StackedLSTM(StackedRNN):
    __doc__ = StackedRNN.__doc__

    def forward(self, x: torch.Tensor, hx: Optional[Tuple[torch.Tensor, torch.Tensor]] = None
                ) -> Tuple[torch.Tensor, Tuple[torch.Tensor, torch.Tensor]]:
        hs: List[torch.Tensor] = []
        cs: List[torch.Tensor] = []
        d = self.directions
        for k, layer in enumerate(self.layers):
            if hx is None:
                x, (h, c) = layer(x)
            else:
                x, (h, c) = layer(x, (hx[0][k * d:(k + 1) * d], hx[1][k * d:(k + 1) * d]))
            x = self._between(x, k)
            hs.append(h)
            cs.append(c)
        return x, (torch.cat(hs, 0), torch.cat(cs, 0))


class StackedGRU(StackedRNN):
    __doc__ = StackedRNN.__doc__

    def forward(self, x: torch.Tensor, hx: Optional[torch.Tensor] = None) -> Tuple[torch.Tensor, torch.Tensor]:
        hs: List[torch.Tensor] = []
        d = self.directions
        for k, layer in enumerate(self.layers):
            if hx is None:
                x, h = layer(x)
            else:
                x, h = layer(x, hx[k * d:(k + 1) * d])
            x = self._between(x, k)
            hs.append(h)
        return x, torch.cat(hs, 0)


def split_stacked_rnns(model: torch.nn.Module) -> list:
    """Swap, in place, every multi-layer nn.LSTM/nn.GRU of `model` (exactly those types) for a StackedRNN;
    the names swapped."""
    found = [(name, m) for name, m in model.named_modules()
             if type(m) in (torch.nn.LSTM, torch.nn.GRU) and m.num_layers > 1]
    for name, m in found:
        parent, _, leaf = name.rpartition(".")
        stacked = StackedLSTM(m) if isinstance(m, torch.nn.LSTM) else StackedGRU(m)
        setattr(model.get_submodule(parent) if parent else model, leaf, stacked)
    return [name for name, _ in found]
