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
from dataclasses import dataclass, field

import numpy as np

from ..base.compat import quiet_ao
from ..base.progress import CancelToken, Job, Stage
from ..base.tensors import first_tensor
from ..quantize.observers import RANGES, MultiObserver
from ..quantize.points import QuantPoint, is_observer
from .compare import weight_data
from .point_result import PointResult, channel_weight_sqnr, outlier_channels
from .qparams import SAMPLES, QParams, Sums, chunks, observer_qparams, tensor_qparams
from .ranges import HIST_BINS, RangeCounter
from .taps import (
    TapBook,
    disable_weight_fake_quant,
    int8_taps,
    int8_weight_copy,
    make_tap,
    set_path,
    strip_observers,
    unwrap_island,
)

# -- taps ----------------------------------------------------------------------------------------------


# -- the analysis -------------------------------------------------------------------------------------


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
        self.book = TapBook()
        self.model = copy.deepcopy(prepared).eval()
        disable_weight_fake_quant(self.model)
        for p in points:
            if p.observer is None:
                continue
            path = p.observer if mode != "eager" else f"{p.observer}.activation_post_process" if p.observer else \
                "activation_post_process"
            set_path(self.model, path, make_tap(self.book, p.name, self.clamps.get(p.name)))
        self.actual_qparams: dict[str, QParams] = {}  # the grid each point's int8 tensor really has
        self.int8_weights = {}
        for p in points:
            if p.weighted and p.kind == "module":
                path = p.target if mode != "eager" else p.name
                override = recipe.overrides.get(p.name)
                dup = int8_weight_copy(prepared.get_submodule(path),
                                        override.per_channel if override is not None else None)
                if dup is not None:
                    dup = dup.eval()
                    strip_observers(dup)
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
                strip_observers(dup)
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
        counters[name] = RangeCounter(qp, edges, obs)
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
    yield stage.step(0, f"{batches} batch(es) of {calib.description}")  # the previous stage's bar is not this one's
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


@dataclass
class _PointErrors:
    """One point's running sums over the chunks of one analysis pass."""

    accumulated: Sums = field(default_factory=Sums)  # the int8 model's value against float
    local: Sums = field(default_factory=Sums)  # only this point quantized, on float inputs
    kernel: Sums = field(default_factory=Sums)  # the int8 kernel against its float op on the same int8 inputs
    rounding_sq: float = 0.0  # squared error of rounding the float value to the point's grid
    rounding_n: int = 0


def analyse_static(analysis: StaticAnalysis, qmodel, float_points: set, data, samples: int = SAMPLES,
                   cancel: CancelToken | None = None, data_key: str = "") -> Job[list[PointResult]]:
    """Accumulated, local and normalised error at every point of a static (FX/eager/QAT) int8 model.
    Local and normalised figures depend on the calibration and the data only: computed on the first
    conversion, reused by the next ones over the same `data_key`."""
    import torch

    points = analysis.points
    cached = analysis.local_cache[1] if analysis.local_cache and analysis.local_cache[0] == data_key else None
    errors = {p.name: _PointErrors() for p in points}
    int8_side, value_type, runs, int8_flags = int8_taps(qmodel, points, analysis.prepared, analysis.kernel_refs,
                                                        analysis.mode)
    book = analysis.book
    total = min(samples, data.samples)
    stage = Stage("per-point error", total, cancel)
    handles = analysis.weighted_hooks() if cached is None else []
    yield stage.step(0, "every quantization point")
    try:
        with torch.no_grad(), quiet_ao():
            for done, chunk in chunks(data, total):
                book.values.clear()
                book.pending.clear()
                book.calls.clear()
                analysis.model(*chunk)
                got, module_io = int8_side(chunk)
                _read_real_grids(analysis, got, float_points)
                _check_kernels(analysis, module_io, errors)
                for p in points:
                    _add_point(analysis, p.name, book.values.get(p.name), got.get(p.name),
                               book.pending.get(p.name), errors[p.name], with_local=cached is None)
                yield stage.step(done + len(chunk[0]), f"{done + len(chunk[0])}/{total} samples")
    finally:
        for h in handles:
            h.remove()
        book.values.clear()
        book.pending.clear()
    if cached is None:
        cached = {p.name: _local_figures(analysis, p.name, errors[p.name]) for p in points}
        analysis.local_cache = (data_key, cached)
    q_modules = dict(qmodel.named_modules())
    return [_point_result(analysis, p, float_points, errors[p.name], cached[p.name], q_modules, value_type, runs,
                          int8_flags) for p in points]


def _grid(analysis: StaticAnalysis, name: str) -> QParams | None:
    """The point's int8 grid: the converted model's own when it was read, else the calibrated one."""
    return analysis.actual_qparams.get(name) or analysis.qparams.get(name)


def _read_real_grids(analysis: StaticAnalysis, got: dict, float_points: set) -> None:
    """Each int8 point's real grid, read once off the converted model's own tensor."""
    for p in analysis.points:
        if p.name not in analysis.actual_qparams and p.name not in float_points:
            found = tensor_qparams(got.get(p.name), analysis.qparams.get(p.name))
            if found is not None:
                analysis.actual_qparams[p.name] = found


def _check_kernels(analysis: StaticAnalysis, module_io: dict, errors: dict) -> None:
    """Each checked int8 module's output against its float op on the same (dequantized) int8 inputs,
    rounded to the point's grid: what the int8 kernel adds beyond rounding."""
    import torch

    for name, (args, out) in module_io.items():
        qp, ref_op = _grid(analysis, name), analysis.kernel_refs.get(name)
        out = first_tensor(out)
        if qp is None or ref_op is None or not torch.is_tensor(out):
            continue
        try:
            expected = first_tensor(ref_op(*[a.dequantize() if torch.is_tensor(a) and a.is_quantized else a
                                             for a in args]))
        except (RuntimeError, TypeError):  # the float op does not take these inputs: no check
            continue
        if torch.is_tensor(expected) and expected.shape == out.shape:
            errors[name].kernel.add(qp.fake(expected.float()), out.float())


def _add_point(analysis: StaticAnalysis, name: str, ref, q, weighted_out, errors: _PointErrors,
               with_local: bool) -> None:
    """One chunk at one point: `ref` the float value, `q` the int8 model's, `weighted_out` the point's
    output with int8 weights (weighted points)."""
    import torch

    if not torch.is_tensor(ref):
        return
    ref = ref.float()
    clamp = analysis.clamps.get(name)  # readers clamp: the value compared is the clamped one
    if torch.is_tensor(q) and q.shape == ref.shape:
        q = q.dequantize() if q.is_quantized else q
        errors.accumulated.add(ref, q.float().clamp(*clamp) if clamp is not None else q)
    qp = _grid(analysis, name)
    if qp is None or not with_local:
        return
    rounded = qp.fake(ref)
    err = rounded - ref
    errors.rounding_sq += float((err * err).sum())
    errors.rounding_n += err.numel()
    if torch.is_tensor(weighted_out) and weighted_out.shape == ref.shape:
        wq = qp.fake(weighted_out.float())
        errors.local.add(ref, wq.clamp(*clamp) if clamp is not None else wq)
    else:
        errors.local.add(ref, rounded)


def _local_figures(analysis: StaticAnalysis, name: str, errors: _PointErrors) -> tuple:
    """(local SQNR, normalised rounding error) of a point, kept for the next conversions."""
    qp, sq, n = _grid(analysis, name), errors.rounding_sq, errors.rounding_n
    return (errors.local.db if qp is not None else None,
            math.sqrt(sq / n) / qp.scale if qp is not None and n else None)


def _point_result(analysis: StaticAnalysis, p: QuantPoint, float_points: set, errors: _PointErrors, local: tuple,
                  q_modules: dict, value_type: dict, runs: dict, int8_flags: dict) -> PointResult:
    kept = p.name in float_points
    weight = None
    if p.weighted and p.kind == "module":
        path = p.target if analysis.mode != "eager" else p.name
        if path in analysis.float_modules and path in q_modules:
            weight = weight_data(analysis.float_modules[path], unwrap_island(q_modules[path]))
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
    return PointResult(
        p.name, p.kind, p.op, p.parent, value_type.get(p.name, p.op), quantized, runs.get(p.name, p.runs),
        errors.accumulated.db, *local, inputs=p.inputs, reason=reason, toggle=p.toggle, weight=weight,
        outlier_channels=outlier_channels(weight), kept_float=kept,
        kernel_sqnr_db=errors.kernel.db if not kept else None, weight_sqnr_db=channel_weight_sqnr(weight),
        other_range=other_range)


def range_choice_errors(analysis: StaticAnalysis, data, samples: int = SAMPLES,
                        cancel: CancelToken | None = None) -> Job[dict]:
    """{point: {range choice: local SQNR}}: each activation range the calibration observed (observers.
    MultiObserver), applied to the float values at the point, over one pass: which range fits each point."""
    import torch

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
    sums = {(n, c): Sums() for n, gs in grids.items() for c in gs}
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
            for done, chunk in chunks(data, total):
                analysis.model(*chunk)
                yield stage.step(done + len(chunk[0]), f"{len(grids)} points x {len(RANGES)} ranges")
    finally:
        book.keep, book.on_value = True, None
    return {n: {c: sums[(n, c)].db for c in gs} for n, gs in grids.items()}
