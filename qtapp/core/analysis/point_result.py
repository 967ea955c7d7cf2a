"""`PointResult`: one quantization point's analysis (errors, range, weights, diagnosis), and the per-channel
weight figures it carries."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

from ..base.tensors import sqnr_db
from .ranges import RangeStats

OUTLIER_CHANNEL_RATIO = 20.0


@dataclass
class PointResult:
    name: str
    kind: str  # input | module | op
    op: str
    parent: str
    type: str  # what it is in the converted model (QuantizedConvReLU2d, quantized.add_relu, Hardswish)
    quantized: bool  # its output is int8 in the converted model
    runs: str  # int8 | float
    accumulated_sqnr_db: float | None
    local_sqnr_db: float | None
    normalised_error: float | None
    inputs: tuple[str, ...] = ()  # the points it reads
    reason: str = ""
    toggle: str | None = None
    range: RangeStats | None = field(default=None, repr=False)
    weight: object = field(default=None, repr=False)  # compare.WeightData
    outlier_channels: tuple = ()  # ((channel, ratio to the median channel), ...), worst first
    diagnosis: tuple = ()  # diagnosis.Finding, worst first
    kept_float: bool = False
    kernel_sqnr_db: float | None = None  # the int8 module against its float op fed the same int8 input
    weight_sqnr_db: float | None = None  # the median output channel's int8 weights against its float ones
    other_range: tuple | None = None  # (the scale its int8 output has, its own calibrated scale) when they differ

    @property
    def sqnr_db(self) -> float | None:
        """The accumulated figure (what the report has always called a layer's SQNR)."""
        return self.accumulated_sqnr_db

    def to_json(self) -> dict:
        return {"name": self.name, "kind": self.kind, "op": self.op, "parent": self.parent, "type": self.type,
                "quantized": self.quantized, "runs": self.runs, "kept_float": self.kept_float,
                "sqnr_db": self.sqnr_db, "accumulated_sqnr_db": self.accumulated_sqnr_db,
                "local_sqnr_db": self.local_sqnr_db, "normalised_error": self.normalised_error,
                "kernel_sqnr_db": self.kernel_sqnr_db, "weight_sqnr_db": self.weight_sqnr_db,
                "other_range": list(self.other_range) if self.other_range else None,
                "inputs": list(self.inputs), "reason": self.reason or None, "toggle": self.toggle,
                "range": self.range.to_json() if self.range is not None else None,
                "outlier_channels": [{"channel": c, "ratio": r} for c, r in self.outlier_channels],
                "diagnosis": [f.to_json() for f in self.diagnosis]}


def channel_weight_sqnr(weight) -> float | None:
    """The median output channel's weight SQNR: one channel's weights dwarfing the others' under one
    scale leave the others with few levels, which an output SQNR ruled by that channel hides."""
    if weight is None or weight.dequantized is None or weight.qscheme == "float16":
        return None
    w = np.asarray(weight.float_weight, dtype=np.float64)
    d = np.asarray(weight.dequantized, dtype=np.float64)
    if w.ndim < 2:
        return None
    w, d = w.reshape(w.shape[0], -1), d.reshape(d.shape[0], -1)
    sig, noise = (w * w).sum(axis=1), ((w - d) ** 2).sum(axis=1)
    db = [sqnr_db(float(a), float(b)) for a, b in zip(sig, noise)]
    db = [x if x is not None else 120.0 for x in db]  # an exact channel
    return float(np.median(db))


def outlier_channels(weight) -> tuple:
    if weight is None or weight.float_weight is None:
        return ()
    w = np.asarray(weight.float_weight, dtype=np.float64)
    if w.ndim < 2 or w.shape[0] < 4:
        return ()
    peak = np.abs(w.reshape(w.shape[0], -1)).max(axis=1)
    median = float(np.median(peak))
    if median <= 0:
        return ()
    ratios = peak / median
    worst = np.argsort(-ratios)
    return tuple((int(c), float(ratios[c])) for c in worst[:3] if ratios[c] >= OUTLIER_CHANNEL_RATIO)


def with_diagnosis(results: list[PointResult], findings: dict) -> list[PointResult]:
    return [replace(r, diagnosis=tuple(findings.get(r.name, ()))) for r in results]
