"""Error at every quantization point, three ways, and each activation point's range against its data.

One pass of hooks over a few batches, not one pass per point:
  accumulated  the int8 model's tensor at the point against the float model's (the error that has
               built up by then); read from the converted model itself
  local        the point's own error: the float model's values at its input, with only this point
               quantized (its int8 weights, its output rounded to its calibrated range); so the first
               broken point stands out even when everything after it is bad too. Dynamic points run
               their real int8 layer on the float input.
  normalised   RMSE of the point's output rounding divided by its scale: 1/sqrt(12) ~ 0.29 is pure
               rounding; far above means values clipped at the ends of the range

The float side is a copy of the calibrated (prepared) model with each observer replaced by a tap, so
its graph is the one the int8 model was converted from; observer statistics are never touched.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field, replace

import numpy as np

from ._torchao_compat import quiet_ao
from .compare import first_tensor, is_quantized_module, sqnr_db, weight_data
from .points import QuantPoint, align, int8_values, is_observer, point_value_node, quantized_sources
from .progress import CancelToken, Job, Stage

IDEAL_ROUNDING = 1 / math.sqrt(12)
HIST_BINS = 96
CHUNK = 8  # samples per analysis pass: bounds the memory held for every point's float tensor
SAMPLES = 16  # evaluation samples the per-point errors are measured on (a point's tensor holds many values each)
OUTLIER_CHANNEL_RATIO = 20.0


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

    from .observers import MultiObserver

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
    def calibrated_hi(self) -> float:
        """The top of the calibrated range (below `hi` where the integer type has more levels)."""
        return self.scale * (self.qmin + self.levels_total - 1 - self.zero_point)

    def levels_text(self) -> str:
        """How many levels the values use, of how many: "97 of 128 levels", or where values go past the
        calibrated range into the levels the integer type has beyond it, "129 of 256 levels (128 calibrated)"."""
        grid = self.qmax - self.qmin + 1
        if self.levels_used > self.levels_total and grid > self.levels_total:
            return f"{self.levels_used} of {grid} levels ({self.levels_total} calibrated)"
        return f"{self.levels_used} of {self.levels_total} levels"

    def to_json(self) -> dict:
        keys = ("lo", "hi", "scale", "zero_point", "qmin", "qmax", "fixed", "per_call", "observed_min",
                "observed_max", "data_min", "data_max", "values", "clipped_low", "clipped_high", "exact_zero",
                "rounds_to_zero", "levels_used", "levels_total", "central_levels", "source")
        out = {k: getattr(self, k) for k in keys}
        out["levels"] = self.levels_text()
        out["histogram"] = {"lo": float(self.hist_edges[0]), "hi": float(self.hist_edges[-1]),
                            "counts": [int(v) for v in self.hist_counts]}  # equal bins from lo to hi
        return out


class _RangeCounter:
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
    diagnosis: tuple = ()  # point_diagnosis.Finding, worst first
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


# -- taps ----------------------------------------------------------------------------------------------

class _Book:
    """What the taps report to during one pass (a plain object: the taps are modules, this is not)."""

    def __init__(self) -> None:
        self.values: dict[str, object] = {}
        self.pending: dict[str, object] = {}  # weighted points: the output with int8 weights
        self.calls: dict[int, int] = {}  # calls of each hooked module so far in this pass
        self.keep = True
        self.on_value = None

    def seen(self, name: str, x, fresh: bool = False) -> None:
        """`x` is the value at point `name` now; kept (with `keep`) as a copy unless `fresh` (made for this
        call alone): a later in-place op (ReLU6(inplace=True), add_) would otherwise change what is kept."""
        if self.on_value is not None:
            self.on_value(name, x)
        if self.keep and name not in self.values:
            self.values[name] = _snapshot(x) if not fresh else x


def _snapshot(x):
    """A copy of a point's tensor as it is now, which later in-place ops on the original cannot change."""
    import torch

    return x.detach().clone() if torch.is_tensor(x) else x


def _make_tap(book: _Book, name: str, clamp: tuple | None = None):
    """A module reporting the value at point `name` to `book`. With `clamp` (an observer whose readers all
    clamp: observers.bound_clamped_observers), the value reported is the clamped one: the int8 tensor there
    stands for it, and the readers compute nothing else."""
    import torch

    class Tap(torch.nn.Module):
        def forward(self, x):
            if clamp is None:
                book.seen(name, x)
            else:
                book.seen(name, x.clamp(*clamp), fresh=True)
            return x

    return Tap()


def _set_path(root, path: str, module) -> None:
    parent, _, attr = path.rpartition(".")
    setattr(root.get_submodule(parent) if parent else root, attr, module)


def _weight_observer(module):
    qconfig = getattr(module, "qconfig", None)
    if qconfig is not None and qconfig.weight is not None:
        return qconfig.weight()
    return None


def _fake_quant_weight(weight, observer):
    import torch

    with quiet_ao():
        observer(weight.detach())
        scale, zp = observer.calculate_qparams()
    scale, zp = scale.float(), zp.float()
    qmin, qmax = observer.quant_min, observer.quant_max
    if scale.numel() > 1:
        shape = [1] * weight.dim()
        shape[observer.ch_axis] = -1
        scale, zp = scale.reshape(shape), zp.reshape(shape)
    return (torch.clamp(torch.round(weight / scale + zp), qmin, qmax) - zp) * scale


def _int8_weight_copy(module, per_channel: bool | None = None):
    """A copy of a float (fused) module whose weight is rounded to int8 as convert_fx rounds it (or with
    the scales a per-point override asks for); a QAT module rounds its own weights in forward (with its
    trained range), so its copy keeps doing that."""
    import torch
    from torch.ao.quantization import FakeQuantizeBase

    wfq = getattr(module, "weight_fake_quant", None)
    if isinstance(wfq, FakeQuantizeBase):
        dup = copy.deepcopy(module)
        dup.weight_fake_quant.enable_fake_quant()
        dup.weight_fake_quant.disable_observer()
        return dup
    target = module
    inner = next(iter(module.children()), None) if type(module).__module__.startswith("torch.ao.nn.intrinsic") else None
    if inner is not None and isinstance(getattr(inner, "weight", None), torch.Tensor):
        target = inner
    observer = _weight_observer(module) or _weight_observer(target)
    if per_channel is not None and observer is not None:
        from .qconfigs import weight_observer

        observer = weight_observer(per_channel)()
    if observer is None or not isinstance(getattr(target, "weight", None), torch.Tensor):
        return None
    dup = copy.deepcopy(module)
    dup_target = next(iter(dup.children())) if target is not module else dup
    with torch.no_grad():
        dup_target.weight.copy_(_fake_quant_weight(dup_target.weight, observer))
    return dup


def _disable_weight_fake_quant(model) -> None:
    """QAT modules round their weights in forward: off for the float side."""
    from torch.ao.quantization import FakeQuantizeBase

    for m in model.modules():
        wfq = getattr(m, "weight_fake_quant", None)
        if isinstance(wfq, FakeQuantizeBase):
            wfq.disable_fake_quant()


# -- the analysis -------------------------------------------------------------------------------------

@dataclass
class _Sums:
    sig: float = 0.0
    noise: float = 0.0

    def add(self, ref, got) -> None:
        ref, got = ref.float(), got.float()
        self.sig += float((ref * ref).sum())
        self.noise += float(((ref - got) ** 2).sum())

    @property
    def db(self) -> float | None:
        return sqnr_db(self.sig, self.noise) if self.sig or self.noise else None


def _chunks(data, samples: int):
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


def _channel_weight_sqnr(weight) -> float | None:
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


def _outlier_channels(weight) -> tuple:
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


class StaticAnalysis:
    """The float side of a static (FX, eager or QAT) calibration, built once and reused for every
    conversion of it: qparams per point, a tapped float model, and each weighted point's int8-weight copy."""

    def __init__(self, calibrated, points: list[QuantPoint], mode: str, recipe=None) -> None:
        recipe = recipe or calibrated.recipe
        self.mode, self.points = mode, points
        prepared = calibrated.prepared
        self.prepared = prepared
        self.qparams: dict[str, QParams] = {}
        self.observed_range: dict[str, tuple] = {}
        self.clamps: dict[str, tuple] = {}  # points whose readers all clamp: (lo, hi)
        for p in points:
            if p.observer is None:
                continue
            obs = prepared.get_submodule(p.observer)
            if mode == "eager":
                obs = getattr(obs, "activation_post_process", None)
            if obs is None or not is_observer(obs):
                continue
            override = recipe.overrides.get(p.name)
            qp = observer_qparams(obs, override.observer if override is not None and override.observer
                                  else recipe.observer)
            if getattr(obs, "clamp", None) is not None:
                self.clamps[p.name] = tuple(obs.clamp)
            if qp is not None:
                self.qparams[p.name] = qp
                inner = getattr(obs, "activation_post_process", obs)
                mn, mx = getattr(inner, "min_val", None), getattr(inner, "max_val", None)
                if mn is not None and mn.numel() == 1 and math.isfinite(float(mn)):
                    self.observed_range[p.name] = (float(mn), float(mx))
        self.book = _Book()
        self.model = copy.deepcopy(prepared).eval()
        _disable_weight_fake_quant(self.model)
        for p in points:
            if p.observer is None:
                continue
            path = p.observer if mode != "eager" else f"{p.observer}.activation_post_process" if p.observer else \
                "activation_post_process"
            _set_path(self.model, path, _make_tap(self.book, p.name, self.clamps.get(p.name)))
        self.actual_qparams: dict[str, QParams] = {}  # the grid each point's int8 tensor really has
        self.int8_weights = {}
        for p in points:
            if p.weighted and p.kind == "module":
                path = p.target if mode != "eager" else p.name
                override = recipe.overrides.get(p.name)
                dup = _int8_weight_copy(prepared.get_submodule(path),
                                        override.per_channel if override is not None else None)
                if dup is not None:
                    dup = dup.eval()
                    _strip_observers(dup)
                    self.int8_weights[p.name] = (path, dup)
        self.float_modules = dict(self.model.named_modules())
        # The kernel check runs each activation module's float op on the int8 model's own input (conv and
        # linear kernels are checked by their local error already; a second conv per layer would double the cost).
        self.kernel_refs = {}
        self.local_cache: tuple | None = None  # (evaluation key, {point: (local dB, normalised error)})
        for p in points:
            if p.kind != "module" or p.name not in self.qparams or p.weighted:
                continue
            path = p.target if mode != "eager" else p.name
            if isinstance(path, str) and path:
                dup = copy.deepcopy(prepared.get_submodule(path)).eval()
                _strip_observers(dup)
                self.kernel_refs[p.name] = dup

    def weighted_hooks(self):
        """Forward hooks that give each weighted point its output with int8 weights, on float input. A
        module called twice (fc, fc@1) is one hook that hands each call to its own point."""
        import torch

        by_path: dict[str, list] = {}
        for name, (path, dup) in self.int8_weights.items():
            by_path.setdefault(path, []).append((name, dup))
        handles = []
        for path, calls in by_path.items():
            def hook(_m, args, _out, calls=calls):
                k = self.book.calls.get(id(calls), 0)
                self.book.calls[id(calls)] = k + 1
                if k < len(calls):
                    name, dup = calls[k]
                    with torch.no_grad():
                        self.book.pending[name] = first_tensor(dup(*args))
            handles.append(self.float_modules[path].register_forward_hook(hook))
        return handles


def _strip_observers(module) -> None:
    """Eager prepared modules call their output observer in a forward hook: a copy used as a float op
    must not. (A fake-quantizer's own observer, also named activation_post_process, stays.)"""
    for m in list(module.modules()):
        if is_observer(m):
            continue
        if is_observer(getattr(m, "activation_post_process", None) or object()):
            del m.activation_post_process
            m._forward_hooks.clear()


def static_ranges(analysis: StaticAnalysis, calib, max_batches: int, cancel: CancelToken | None) -> Job[dict]:
    """Range statistics of every activation point over the first calibration batches: depends on the
    calibration only, so computed once and reused by every reconversion."""
    import torch

    counters = {}
    for name, qp in analysis.qparams.items():
        qp = analysis.actual_qparams.get(name, qp)  # the int8 model's own grid where it has been seen
        obs = analysis.observed_range.get(name, (None, None))
        edges = None
        if obs[0] is not None:
            lo, hi = min(obs[0], qp.lo), max(obs[1], qp.hi)
            edges = np.linspace(lo, hi, HIST_BINS + 1) if hi > lo else None
        counters[name] = _RangeCounter(qp, edges, obs)
    constants = {p.name for p in analysis.points if p.kind == "constant"}
    seen: set = set()  # a held tensor is the same values at every forward: counted once

    def add(name, x):
        if name in counters and torch.is_tensor(x) and name not in seen:
            counters[name].add(x)
            if name in constants:
                seen.add(name)

    book = analysis.book
    book.keep = False
    book.on_value = add
    batches = min(len(calib), max_batches)
    stage = Stage("activation ranges", batches, cancel)
    try:
        with torch.no_grad(), quiet_ao():
            for i, (inputs, _y) in enumerate(calib):
                if i >= batches:
                    break
                analysis.model(*inputs)
                yield stage.step(i + 1, f"batch {i + 1}/{batches} of {calib.description}")
    finally:
        book.keep, book.on_value = True, None
    return {name: c.result("calibration") for name, c in counters.items()}


def analyse_static(analysis: StaticAnalysis, qmodel, float_points: set, data, samples: int = SAMPLES,
                   cancel: CancelToken | None = None, data_key: str = "") -> Job[list[PointResult]]:
    """Accumulated, local and normalised error at every point of a static (FX/eager/QAT) int8 model.
    Local and normalised figures depend on the calibration and the data only: computed on the first
    conversion, reused by the next ones over the same `data_key`."""
    import torch

    points, mode = analysis.points, analysis.mode
    cached = analysis.local_cache[1] if analysis.local_cache and analysis.local_cache[0] == data_key else None
    acc = {p.name: _Sums() for p in points}
    local = {p.name: _Sums() for p in points}
    kernel = {p.name: _Sums() for p in points}
    rounding = {p.name: [0.0, 0] for p in points}
    int8_side, value_type, runs, int8_flags = _int8_taps(qmodel, analysis, mode)
    book = analysis.book
    total = min(samples, data.samples)
    stage = Stage("per-point error", total, cancel)
    handles = analysis.weighted_hooks() if cached is None else []
    yield stage.step(0, "every quantization point")
    try:
        with torch.no_grad(), quiet_ao():
            for done, chunk in _chunks(data, total):
                book.values.clear()
                book.pending.clear()
                book.calls.clear()
                analysis.model(*chunk)
                got, module_io = int8_side(chunk)
                for p in points:  # each point's real int8 grid, from the converted model's own tensor
                    if p.name not in analysis.actual_qparams and p.name not in float_points:
                        found = tensor_qparams(got.get(p.name), analysis.qparams.get(p.name))
                        if found is not None:
                            analysis.actual_qparams[p.name] = found
                grid = lambda name: analysis.actual_qparams.get(name) or analysis.qparams.get(name)  # noqa: E731
                for name, (args, out) in module_io.items():
                    qp, ref_op = grid(name), analysis.kernel_refs.get(name)
                    out = first_tensor(out)
                    if qp is None or ref_op is None or not torch.is_tensor(out):
                        continue
                    try:
                        expected = first_tensor(ref_op(*[a.dequantize() if torch.is_tensor(a) and a.is_quantized
                                                          else a for a in args]))
                    except (RuntimeError, TypeError):  # the float op does not take these inputs: no check
                        continue
                    if torch.is_tensor(expected) and expected.shape == out.shape:
                        kernel[name].add(qp.fake(expected.float()), out.float())
                for p in points:
                    ref = book.values.get(p.name)
                    if not torch.is_tensor(ref):
                        continue
                    ref = ref.float()
                    q = got.get(p.name)
                    clamp = analysis.clamps.get(p.name)  # readers clamp: the value compared is the clamped one
                    if torch.is_tensor(q) and q.shape == ref.shape:
                        q = q.dequantize() if q.is_quantized else q
                        acc[p.name].add(ref, q.float().clamp(*clamp) if clamp is not None else q)
                    qp = grid(p.name)
                    if qp is None or cached is not None:
                        continue
                    rounded = qp.fake(ref)
                    err = rounded - ref
                    rounding[p.name][0] += float((err * err).sum())
                    rounding[p.name][1] += err.numel()
                    wq = book.pending.get(p.name)
                    if torch.is_tensor(wq) and wq.shape == ref.shape:  # a weighted point: its int8-weight output
                        wq = qp.fake(wq.float())
                        local[p.name].add(ref, wq.clamp(*clamp) if clamp is not None else wq)
                    else:
                        local[p.name].add(ref, rounded)
                yield stage.step(done + len(chunk[0]), f"{done + len(chunk[0])}/{total} samples")
    finally:
        for h in handles:
            h.remove()
        book.values.clear()
        book.pending.clear()
    if cached is None:
        cached = {}
        for p in points:
            qp, (sq, n) = analysis.actual_qparams.get(p.name) or analysis.qparams.get(p.name), rounding[p.name]
            cached[p.name] = (local[p.name].db if qp is not None else None,
                              math.sqrt(sq / n) / qp.scale if qp is not None and n else None)
        analysis.local_cache = (data_key, cached)
    q_modules = dict(qmodel.named_modules())
    ref_modules = analysis.float_modules
    out = []
    for p in points:
        kept = p.name in float_points
        weight = None
        if p.weighted and p.kind == "module":
            path = p.target if mode != "eager" else p.name
            if path in ref_modules and path in q_modules:
                weight = weight_data(ref_modules[path], _unwrap_island(q_modules[path]))
        # A layer kept float whose op does run in float is not int8, though the next int8 op rounds its output.
        quantized = int8_flags.get(p.name, p.observed and not kept) and not (kept and runs.get(p.name) == "float")
        reason = p.reason
        if kept and quantized and p.kind != "input":
            reason = "torch kept it in int8 although it was set float: " + (p.reason or "its convert ignores the setting")
        elif kept and int8_flags.get(p.name) and runs.get(p.name) == "float":
            reason = ("kept float: it runs in float, but its output is rounded to int8 again for the next op, which "
                      "runs in int8, so this alone changes little; keep that op float too to keep the value float")
        own, real = analysis.qparams.get(p.name), analysis.actual_qparams.get(p.name)
        # A module whose int8 output is on another grid than its own calibrated one (it runs twice and
        # torch.ao keeps one output range for both calls): (real scale, its own scale).
        other_range = (real.scale, own.scale) if p.kind == "module" and own is not None and real is not None \
            and quantized and abs(math.log(real.scale / own.scale)) > math.log(1.1) else None
        out.append(PointResult(
            p.name, p.kind, p.op, p.parent, value_type.get(p.name, p.op), quantized, runs.get(p.name, p.runs),
            acc[p.name].db, *cached[p.name], inputs=p.inputs, reason=reason, toggle=p.toggle, weight=weight,
            outlier_channels=_outlier_channels(weight), kept_float=kept,
            kernel_sqnr_db=kernel[p.name].db if not kept else None, weight_sqnr_db=_channel_weight_sqnr(weight),
            other_range=other_range))
    return out


def _unwrap_island(module):
    """An eager float island is Sequential(DeQuantStub, layer, QuantStub): its layer."""
    import torch.nn as nn

    if isinstance(module, nn.Sequential) and len(module) == 3 and type(module[0]).__name__ == "DeQuantStub":
        return module[1]
    return module


def _int8_taps(qmodel, analysis: StaticAnalysis, mode: str):
    """A function that runs the int8 model on a chunk and returns {point: its int8 tensor}, with each
    point's converted type, where it runs, and whether its value is int8."""
    import torch

    points = analysis.points
    if mode == "eager":
        return _eager_int8_taps(qmodel, points)
    mapping = align(analysis.prepared, qmodel)
    nodes = {n.name: n for n in qmodel.graph.nodes}
    mapping.update(quantized_sources(qmodel))  # inputs and held tensors: the quantize node that reads them
    int8 = int8_values(qmodel)
    from .points import runs_in

    wanted, value_type, runs, flags = {}, {}, {}, {}
    for p in points:
        node_name = point_value_node(p, mapping)
        if node_name is None:
            continue
        node = nodes[node_name]
        quantize = [u for u in node.users if u.op == "call_function"
                    and getattr(u.target, "__name__", "") == "quantize_per_tensor"]
        runs[p.name] = "int8" if p.kind in ("input", "constant") else runs_in(qmodel, node, int8)
        # An op that runs in float has its output rounded by the quantize node after it: that is the point's value.
        wanted[quantize[0].name if quantize and not int8.get(node_name, False) else node_name] = p.name
        flags[p.name] = int8.get(node_name, False) or bool(quantize)
        if node.op == "call_module":
            value_type[p.name] = type(qmodel.get_submodule(node.target)).__name__
        elif node.op in ("call_function", "call_method"):
            value_type[p.name] = str(node.target) if hasattr(node.target, "_qualified_op_name") or \
                isinstance(node.target, torch._ops.OpOverloadPacket) else getattr(node.target, "__name__", str(node.target))

    checked = {node_name for node_name, point in wanted.items() if nodes[node_name].op == "call_module"
               and point in analysis.kernel_refs}

    class Recorder(torch.fx.Interpreter):
        def run_node(self, n):
            if n.name in checked:
                args, kwargs = self.fetch_args_kwargs_from_env(n)
                result = self.call_module(n.target, args, kwargs)
                self.io[wanted[n.name]] = (args, result)
            else:
                result = super().run_node(n)
            name = wanted.get(n.name)
            if name is not None:
                # its grid is read off it; a copy: an in-place op after it (ReLU6) would change the original
                self.record[name] = _snapshot(first_tensor(result, dequantize=False))
            return result

    def run(chunk):
        rec = Recorder(qmodel)
        rec.record, rec.io = {}, {}
        rec.run(*chunk)
        return rec.record, rec.io

    return run, value_type, runs, flags


def _eager_int8_taps(qmodel, points):
    import torch

    modules = dict(qmodel.named_modules())
    record: dict = {}
    io: dict = {}
    value_type, runs, flags = {}, {}, {}
    for p in points:
        m = modules.get(p.name)
        if m is None:
            continue
        value_type[p.name] = type(_unwrap_island(m)).__name__
        flags[p.name] = is_quantized_module(_unwrap_island(m))  # a float island's layer is float
        runs[p.name] = "int8" if flags[p.name] else "float"

    def run(chunk):
        record.clear()
        handles, patched = [], []
        for p in points:
            m = modules.get(p.name)
            if m is None:
                continue
            if hasattr(m, "add") and type(m).__name__ == "QFunctional":
                for meth in ("add", "add_relu", "add_scalar", "mul", "mul_scalar", "cat"):
                    orig = getattr(m, meth)

                    def wrapper(*a, _orig=orig, _name=p.name, **k):
                        out = _orig(*a, **k)
                        if _name not in record:
                            record[_name] = _snapshot(out)
                        return out
                    setattr(m, meth, wrapper)
                    patched.append((m, meth))
            else:
                def hook(_m, args, out, name=p.name):
                    if name not in record:  # a copy, as the float side keeps: in-place ops come later
                        record[name] = _snapshot(first_tensor(out, dequantize=False))
                    if p.kind == "module":
                        io.setdefault(name, (args, out))
                handles.append(m.register_forward_hook(hook))
        io.clear()
        try:
            qmodel(*chunk)
        finally:
            for h in handles:
                h.remove()
            for m, meth in patched:
                delattr(m, meth)
        return dict(record), dict(io)

    return run, value_type, runs, flags


def analyse_dynamic(float_model, qmodel, points: list[QuantPoint], float_points: set, data, engine: str,
                    samples: int = SAMPLES, cancel: CancelToken | None = None,
                    dtype: str = "qint8") -> Job[list[PointResult]]:
    """Dynamic quantization: each layer's real int8 kernel on the float model's input (local), the int8
    model's output against float (accumulated), and the range each call's input gets (int8 only:
    float16 weights leave the inputs float)."""
    import torch

    f_mods, q_mods = dict(float_model.named_modules()), dict(qmodel.named_modules())
    names = [p.name for p in points if p.name in f_mods and p.name in q_mods]
    acc = {n: _Sums() for n in names}
    local = {n: _Sums() for n in names}
    ranges = {n: _RangeCounter(None) for n in names}
    reduce_range = engine in ("fbgemm", "x86")
    f_calls, q_calls = {}, {}

    def f_hook(name):
        def hook(_m, args, out):
            ref = first_tensor(out)
            f_calls.setdefault(name, []).append(ref)
            x = args[0] if args and torch.is_tensor(args[0]) else None
            if x is None or name in float_points:
                return
            if x.is_floating_point() and dtype == "qint8":  # an embedding reads ids: no input range to round
                ranges[name].add(x, dynamic_qparams(x, reduce_range))
            got = first_tensor(q_mods[name].forward(*args))  # forward: no hook, so not an int8-model call
            if got is not None and ref is not None and got.shape == ref.shape:
                local[name].add(ref, got)
        return hook

    handles = [f_mods[n].register_forward_hook(f_hook(n)) for n in names]
    handles += [q_mods[n].register_forward_hook(
        lambda _m, _i, out, n=n: q_calls.setdefault(n, []).append(first_tensor(out)) and None) for n in names]
    total = min(samples, data.samples)
    stage = Stage("per-point error", total, cancel)
    yield stage.step(0, "every quantized layer")
    try:
        with torch.no_grad(), quiet_ao():
            for done, chunk in _chunks(data, total):
                f_calls.clear()
                q_calls.clear()
                float_model(*chunk)
                qmodel(*chunk)
                for n in names:
                    for ref, got in zip(f_calls.get(n, ()), q_calls.get(n, ())):
                        if ref is not None and got is not None and ref.shape == got.shape:
                            acc[n].add(ref, got)
                yield stage.step(done + len(chunk[0]), f"{done + len(chunk[0])}/{total} samples")
    finally:
        for h in handles:
            h.remove()
    out = []
    for p in points:
        if p.name not in acc:
            continue
        kept = p.name in float_points
        qm = q_mods[p.name]
        weight = weight_data(f_mods[p.name], qm)
        out.append(PointResult(
            p.name, p.kind, p.op, p.parent, type(qm).__name__, is_quantized_module(qm), "int8" if not kept else "float",
            acc[p.name].db, local[p.name].db if not kept else None, None, reason=p.reason, toggle=p.toggle,
            range=ranges[p.name].result("evaluation (one range per call)"), weight=weight,
            outlier_channels=_outlier_channels(weight), kept_float=kept, weight_sqnr_db=_channel_weight_sqnr(weight)))
    return out


def with_diagnosis(results: list[PointResult], findings: dict) -> list[PointResult]:
    return [replace(r, diagnosis=tuple(findings.get(r.name, ()))) for r in results]


def range_choice_errors(analysis: StaticAnalysis, data, samples: int = SAMPLES,
                        cancel: CancelToken | None = None) -> Job[dict]:
    """{point: {range choice: local SQNR}}: each activation range the calibration observed (observers.
    MultiObserver), applied to the float values at the point, over one pass: which range fits each point."""
    import torch

    from .observers import RANGES, MultiObserver

    grids: dict[str, dict[str, QParams]] = {}
    for p in analysis.points:
        if p.observer is None or p.name not in analysis.qparams or p.shares_range:  # a shared range is its owner's
            continue
        obs = analysis.prepared.get_submodule(p.observer)
        obs = getattr(obs, "activation_post_process", obs) if analysis.mode == "eager" else obs
        if not isinstance(obs, MultiObserver):
            continue
        if not analysis.qparams[p.name].fixed:
            grids[p.name] = {c: qp for c in RANGES if (qp := observer_qparams(obs, c)) is not None}
    sums = {(n, c): _Sums() for n, gs in grids.items() for c in gs}
    book = analysis.book

    def on_value(name, x):
        if name in grids and torch.is_tensor(x):
            x = x.float()
            for c, qp in grids[name].items():
                sums[(name, c)].add(x, qp.fake(x))

    book.keep, book.on_value = False, on_value
    total = min(samples, data.samples)
    stage = Stage("range choices", total, cancel)
    try:
        with torch.no_grad(), quiet_ao():
            for done, chunk in _chunks(data, total):
                analysis.model(*chunk)
                yield stage.step(done + len(chunk[0]), f"{len(grids)} points x {len(RANGES)} ranges")
    finally:
        book.keep, book.on_value = True, None
    return {n: {c: sums[(n, c)].db for c in gs} for n, gs in grids.items()}
