"""Activation range statistics of a point (`RangeStats`): histogram, share of the grid in use, clipped
values, counted over calibration batches by `RangeCounter`."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from .qparams import QParams

HIST_BINS = 96


def _num(x: float) -> str:
    return f"{x:.4g}"


@dataclass
class RangeStats:
    """An activation point's range (calibrated, or per call for dynamic quantization) against the values
    it rounds: what share is clipped at each end, rounds to zero, and how many levels are really used."""

    lo: float  # the representable range (dequantized): where values clip
    hi: float
    scale: float
    zero_point: int
    qmin: int
    qmax: int
    fixed: bool  # a range fixed by the op (sigmoid, softmax)
    per_call: bool  # dynamic quantization: a new range each call (scale, range: the median call's)
    observed_min: float | None  # what the observer saw during calibration
    observed_max: float | None
    data_min: float  # over the analysed batches
    data_max: float
    values: int
    clipped_low: float  # shares of all values
    clipped_high: float
    exact_zero: float
    rounds_to_zero: float  # non-zero values that round to the zero level
    levels_used: int
    levels_total: int  # the levels the calibrated range spans (128 on fbgemm/x86, of quint8's 256)
    central_levels: int  # levels spanned by the central 99.9% of the values
    source: str = "calibration"  # which data the figures come from
    hist_edges: object = field(default=None, repr=False)  # numpy, for the plots
    hist_counts: object = field(default=None, repr=False)

    @property
    def central_share(self) -> float:
        """The share of the calibrated range the central 99.9% of values span."""
        return self.central_levels / max(self.levels_total, 1)

    @property
    def grid_levels(self) -> int:
        """The levels of the int8 grid (the integer type: 256 for quint8), where values clip."""
        return self.qmax - self.qmin + 1

    @property
    def calibrated_lo(self) -> float:
        """The bottom of the calibrated range (the int8 grid's bottom: the calibrated levels start there)."""
        return self.scale * (self.qmin - self.zero_point)

    @property
    def calibrated_hi(self) -> float:
        """The top of the calibrated range (below `hi` where the integer type has more levels)."""
        return self.scale * (self.qmin + self.levels_total - 1 - self.zero_point)

    def levels_text(self) -> str:
        """How many levels the values use, always counted against the whole int8 grid (the levels values can
        take before they clip): "84 of the int8 grid's 256 levels"."""
        return f"{self.levels_used} of the int8 grid's {self.grid_levels} levels"

    def range_text(self) -> str:
        """The point's range, in the one wording every point gets: the range as calibrated (or fixed by the
        op, or the median call's), what its observer saw where that differs, its levels and step, and the
        representable range of the int8 grid, named as such:
        "calibrated range 0 to 4.937 (its observer saw 0 to 6.001): 128 levels in steps of 0.0389; the int8
        grid represents 0 to 9.913 (256 levels)"."""
        kind = ("one range per call, the median call's" if self.per_call else
                "range fixed by the op" if self.fixed else "calibrated range")
        lo, hi = _num(self.calibrated_lo), _num(self.calibrated_hi)
        text = f"{kind} {lo} to {hi}"
        if not (self.per_call or self.fixed) and self.observed_min is not None and self.observed_max is not None \
                and (_num(self.observed_min), _num(self.observed_max)) != (lo, hi):
            text += f" (its observer saw {_num(self.observed_min)} to {_num(self.observed_max)})"
        text += f": {self.levels_total} levels in steps of {self.scale:.3g}"
        if self.grid_levels > self.levels_total:
            return text + (f"; the int8 grid represents {_num(self.lo)} to {_num(self.hi)} "
                           f"({self.grid_levels} levels)")
        return text + ", the whole int8 grid"

    def to_json(self) -> dict:
        keys = ("lo", "hi", "scale", "zero_point", "qmin", "qmax", "fixed", "per_call", "observed_min",
                "observed_max", "data_min", "data_max", "values", "clipped_low", "clipped_high", "exact_zero",
                "rounds_to_zero", "levels_used", "levels_total", "central_levels", "source")
        out = {k: getattr(self, k) for k in keys}
        out["levels"] = self.levels_text()
        out.update(calibrated_lo=self.calibrated_lo, calibrated_hi=self.calibrated_hi, grid_levels=self.grid_levels,
                   range_text=self.range_text())
        out["histogram"] = {"lo": float(self.hist_edges[0]), "hi": float(self.hist_edges[-1]),
                            "counts": [int(v) for v in self.hist_counts]}  # equal bins from lo to hi
        return out


class RangeCounter:
    """Accumulates one point's values against one range (or one range per call)."""

    def __init__(self, qp: QParams | None, edges=None, observed=(None, None)) -> None:
        self.qp, self.edges, self.observed = qp, edges, observed
        self.levels = None
        self.n = self.low = self.high = self.zero = self.rz = 0
        self.dmin, self.dmax = math.inf, -math.inf
        self.counts = None
        self.calls: list[QParams] = []

    def add(self, x, qp: QParams | None = None) -> None:
        import torch

        x = x.detach().reshape(-1).float()
        if x.numel() == 0:
            return
        qp = qp or self.qp
        if qp is not self.qp:
            self.calls.append(qp)
        lo, hi = (float(v) for v in torch.aminmax(x))
        q = torch.round(x / qp.scale)
        q += qp.zero_point
        q.clamp_(qp.qmin - 1, qp.qmax + 1)  # one level beyond each end: the values clipped there
        counts = torch.bincount(q.long() - (qp.qmin - 1), minlength=qp.levels + 2)
        zeros = int((x == 0).sum())
        self.n += x.numel()
        self.low, self.high = self.low + int(counts[0]), self.high + int(counts[-1])
        levels = counts[1:-1]
        self.zero += zeros
        if qp.qmin <= qp.zero_point <= qp.qmax:  # exact zeros sit on the zero level; the rest rounded there
            self.rz += int(levels[qp.zero_point - qp.qmin]) - zeros
        self.levels = levels if self.levels is None else self.levels + levels
        self.dmin, self.dmax = min(self.dmin, lo), max(self.dmax, hi)
        if self.edges is None:  # first batch: a display range that holds the data and the int8 range
            e_lo, e_hi = min(lo, qp.lo), max(hi, qp.hi)
            self.edges = np.linspace(e_lo, e_hi if e_hi > e_lo else e_lo + 1.0, HIST_BINS + 1)
        e_lo, e_hi = float(self.edges[0]), float(self.edges[-1])
        inside = x if e_lo <= lo and hi <= e_hi else x.clamp(e_lo, e_hi)  # later batches may reach further
        h = torch.histc(inside, HIST_BINS, e_lo, e_hi)
        self.counts = h if self.counts is None else self.counts + h

    def result(self, source: str) -> RangeStats | None:
        if not self.n:
            return None
        qp = self.qp if not self.calls else sorted(self.calls, key=lambda c: c.scale)[len(self.calls) // 2]
        levels = self.levels.numpy()
        cum = np.cumsum(levels) / levels.sum()
        a, b = int(np.searchsorted(cum, 0.0005)), int(np.searchsorted(cum, 0.9995))
        return RangeStats(qp.lo, qp.hi, qp.scale, qp.zero_point, qp.qmin, qp.qmax, qp.fixed, bool(self.calls),
                          *self.observed, self.dmin, self.dmax, self.n, self.low / self.n, self.high / self.n,
                          self.zero / self.n, self.rz / self.n, int((levels > 0).sum()), qp.range_levels,
                          max(b - a + 1, 1), source, np.asarray(self.edges), self.counts.numpy())
