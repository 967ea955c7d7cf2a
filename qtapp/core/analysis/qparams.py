"""Quantization parameters as the analysis uses them (`QParams`: scale, zero point, grid), read off an
observer, a quantized tensor or a dynamic call; and the running SQNR sums over sample chunks."""

from __future__ import annotations

import math
from dataclasses import dataclass

from ..base.compat import quiet_ao
from ..base.tensors import sqnr_db
from ..quantize.observers import MultiObserver

IDEAL_ROUNDING = 1 / math.sqrt(12)


CHUNK = 8  # samples per analysis pass: bounds the memory held for every point's float tensor


SAMPLES = 16  # evaluation samples the per-point errors are measured on (a point's tensor holds many values each)


@dataclass(frozen=True)
class QParams:
    """A per-tensor int8 grid. `qmin`/`qmax` bound the integer type (quint8 0..255), which is where
    values clip; `range_levels` is how many levels the calibrated range spans (fbgemm and x86 calibrate
    to 128 of quint8's 256 levels, so values up to twice the calibrated maximum still fit)."""

    scale: float
    zero_point: int
    qmin: int
    qmax: int
    fixed: bool = False
    range_levels: int = 0

    def __post_init__(self) -> None:
        if not self.range_levels:
            object.__setattr__(self, "range_levels", self.qmax - self.qmin + 1)

    @property
    def lo(self) -> float:
        return self.scale * (self.qmin - self.zero_point)

    @property
    def hi(self) -> float:
        return self.scale * (self.qmax - self.zero_point)

    @property
    def levels(self) -> int:
        return self.qmax - self.qmin + 1

    def with_scale(self, scale: float, zero_point: int) -> "QParams":
        return QParams(scale, zero_point, self.qmin, self.qmax, self.fixed, self.range_levels)

    def levels_of(self, x):
        import torch

        return torch.round(x / self.scale) + self.zero_point

    def fake(self, x):
        """`x` rounded to this range as torch's own quantize op rounds it."""
        import torch

        return torch.fake_quantize_per_tensor_affine(x.float(), self.scale, self.zero_point, self.qmin, self.qmax)


def observer_qparams(observer, choice: str | None = None) -> QParams | None:
    """The calibrated per-tensor range of an activation observer (or QAT fake-quantizer), for range
    `choice` when it observed several (observers.MultiObserver); None when it rounds to no integer type."""
    import torch

    dtype = getattr(observer, "dtype", None)
    if dtype not in (torch.quint8, torch.qint8, torch.uint8, torch.int8):
        return None
    with quiet_ao():
        scale, zp = observer.calculate_qparams(choice) if isinstance(observer, MultiObserver) \
            else observer.calculate_qparams()
    scale, zp = float(scale.flatten()[0]), int(zp.flatten()[0])
    if not math.isfinite(scale) or scale <= 0:
        return None
    info = torch.iinfo(dtype)
    return QParams(scale, zp, info.min, info.max, "FixedQParams" in type(observer).__name__,
                   int(observer.quant_max) - int(observer.quant_min) + 1)


def tensor_qparams(q, like: QParams | None) -> QParams | None:
    """The grid an int8 tensor of the converted model really has (its own scale: a scalar multiply
    rescales exactly, a module keeps one output range for all its calls)."""
    import torch

    if not (torch.is_tensor(q) and q.is_quantized and q.qscheme() == torch.per_tensor_affine):
        return None
    info = torch.iinfo(q.int_repr().dtype)
    levels = like.range_levels if like is not None else info.max - info.min + 1
    return QParams(float(q.q_scale()), int(q.q_zero_point()), info.min, info.max,
                   like.fixed if like is not None else False, levels)


def dynamic_qparams(x, reduce_range: bool) -> QParams:
    """The range dynamic quantization computes for one call's input (quint8, the range always holds 0)."""
    lo, hi = min(float(x.min()), 0.0), max(float(x.max()), 0.0)
    qmax = 127 if reduce_range else 255
    scale = (hi - lo) / qmax if hi > lo else 1.0
    zp = int(min(max(round(-lo / scale), 0), qmax))
    return QParams(scale, zp, 0, 255, range_levels=qmax + 1)


@dataclass
class Sums:
    sig: float = 0.0
    noise: float = 0.0

    def add(self, ref, got) -> None:
        ref, got = ref.float(), got.float()
        self.sig += float((ref * ref).sum())
        self.noise += float(((ref - got) ** 2).sum())

    @property
    def db(self) -> float | None:
        return sqnr_db(self.sig, self.noise) if self.sig or self.noise else None


def chunks(data, samples: int):
    """(index of the chunk, its inputs): the first `samples` samples of `data`, CHUNK at a time."""
    taken = 0
    for inputs, _y in data:
        n = len(inputs[0])
        for start in range(0, n, CHUNK):
            if taken >= samples:
                return
            chunk = tuple(t[start:start + min(CHUNK, samples - taken)] for t in inputs)
            yield taken, chunk
            taken += len(chunk[0])
