"""Every activation range qtapp offers, from one calibration pass, chosen per point at conversion.

`MultiObserver` watches the data once with each way of choosing a range: min-max, a moving average of
per-batch min-max, torch's histogram observer (the range minimising the L2 rounding error), and
percentile clipping at 99.9% and 99.99% (read off that same histogram). `calculate_qparams()` answers
for the one chosen; choosing another later needs no new calibration, only a reconversion.

An observer whose every reader clamps (ReLU6, Hardtanh, clamp: torch.ao shares one range between such an op
and its input) watches the clamped values (`bound_clamped_observers`): a conv's range before a ReLU6 then
spans [0, 6] at most instead of its raw outputs (MobileNetV2's [-7.4, 31.3]), and int8 rounding saturating
at that range computes the clamp itself.
"""

from __future__ import annotations

import torch
from torch.ao.quantization.observer import HistogramObserver, MinMaxObserver, MovingAverageMinMaxObserver

RANGES = ("minmax", "moving-average", "histogram", "percentile-99.9", "percentile-99.99")


class MultiObserver(MinMaxObserver):
    def __init__(self, dtype=torch.quint8, qscheme=torch.per_tensor_affine, quant_min=0, quant_max=127,
                 chosen: str = "histogram", **kwargs) -> None:
        super().__init__(dtype=dtype, qscheme=qscheme, quant_min=quant_min, quant_max=quant_max, **kwargs)
        if chosen not in RANGES:
            raise ValueError(f"unknown activation range {chosen!r}: {', '.join(RANGES)}")
        self.chosen = chosen
        self.moving = MovingAverageMinMaxObserver(dtype=dtype, qscheme=qscheme, quant_min=quant_min,
                                                  quant_max=quant_max)
        self.hist = HistogramObserver(dtype=dtype, qscheme=qscheme, quant_min=quant_min, quant_max=quant_max)
        self._frozen: dict | None = None  # every choice's answer, once the data is all seen
        self.clamp: tuple[float, float] | None = None  # (lo, hi) every reader of this range clamps to

    def freeze(self) -> None:
        """Calibration is over: work out every choice's range and qparams now, once, rather than at each
        conversion (the histogram's search is the costly part of converting a model). New data thaws it."""
        self._frozen = None
        if self.min_val.numel() == 0 or not torch.isfinite(self.min_val).all():
            return
        ranges = {c: self.range_of(c) for c in RANGES}
        self._frozen = {"ranges": ranges, "qparams": {c: self.calculate_qparams(c) for c in RANGES}}

    def forward(self, x_orig):
        self._frozen = None
        seen = x_orig if self.clamp is None else x_orig.detach().clamp(*self.clamp)
        super().forward(seen)  # the true min and max
        self.moving(seen)
        self.hist(seen)
        return x_orig

    def range_of(self, choice: str) -> tuple[float, float] | None:
        """The (min, max) `choice` would quantize to (before the zero point is fitted in); None before data."""
        if self._frozen is not None:
            return self._frozen["ranges"][choice]
        if self.min_val.numel() == 0 or not torch.isfinite(self.min_val).all():
            return None
        if choice == "minmax":
            return float(self.min_val), float(self.max_val)
        if choice == "moving-average":
            return float(self.moving.min_val), float(self.moving.max_val)
        if choice == "histogram":
            lo, hi = self.hist._non_linear_param_search()
            return float(lo), float(hi)
        share = float(choice.split("-", 1)[1]) / 100.0
        return self._percentile(1.0 - share), self._percentile(share)

    def _percentile(self, q: float) -> float:
        hist = self.hist.histogram.double()
        total = float(hist.sum())
        lo, hi = float(self.hist.min_val), float(self.hist.max_val)
        if total == 0 or hi <= lo:
            return lo if q < 0.5 else hi
        cdf = torch.cumsum(hist, 0) / total
        i = int(torch.searchsorted(cdf, torch.tensor(q, dtype=cdf.dtype)).clamp(max=len(hist) - 1))
        width = (hi - lo) / len(hist)
        before = float(cdf[i - 1]) if i else 0.0
        inside = (q - before) / max(float(cdf[i]) - before, 1e-12)  # linear within the bin
        return lo + width * (i + min(max(inside, 0.0), 1.0))

    def calculate_qparams(self, choice: str | None = None):
        choice = choice or self.chosen
        if self._frozen is not None:
            scale, zero_point = self._frozen["qparams"][choice]
            return scale.clone(), zero_point.clone()
        if choice == "minmax":
            return super().calculate_qparams()
        if choice == "moving-average":
            return self.moving.calculate_qparams()
        if choice == "histogram":
            return self.hist.calculate_qparams()
        found = self.range_of(choice)
        if found is None:
            return super().calculate_qparams()
        return self._calculate_qparams(torch.tensor(found[0]), torch.tensor(found[1]))

    def extra_repr(self) -> str:
        return f"chosen={self.chosen}, {super().extra_repr()}"


def _clamp_bounds(node, modules) -> tuple[float, float] | None:
    """(lo, hi) when FX node `node` only clamps its input to constant bounds (ReLU6, Hardtanh, clamp)."""
    import torch.nn as nn
    import torch.nn.functional as F

    if node.op == "call_module":
        m = modules.get(node.target)
        if isinstance(m, nn.ReLU6):
            return 0.0, 6.0
        if type(m) is nn.Hardtanh:
            return float(m.min_val), float(m.max_val)
        return None
    if node.op == "call_function" and node.target in (F.relu6, F.hardtanh, torch.clamp, torch.clip):
        if node.target is F.relu6:
            return 0.0, 6.0
        args = list(node.args[1:]) + [None] * 3
        if node.target is F.hardtanh:
            lo, hi = node.kwargs.get("min_val", args[0] if args[0] is not None else -1.0), \
                node.kwargs.get("max_val", args[1] if args[1] is not None else 1.0)
        else:
            lo, hi = node.kwargs.get("min", args[0]), node.kwargs.get("max", args[1])
        if isinstance(lo, (int, float)) and isinstance(hi, (int, float)) and lo < hi:
            return float(lo), float(hi)
    return None


# Ops whose output stays within their input's bounds (torch.ao shares one range between them and their
# input): a value clamped before them is still clamped after them.
_WITHIN_INPUT_BOUNDS = frozenset({
    "mean", "avg_pool1d", "avg_pool2d", "avg_pool3d", "adaptive_avg_pool1d", "adaptive_avg_pool2d",
    "adaptive_avg_pool3d", "max_pool1d", "max_pool2d", "max_pool3d", "adaptive_max_pool1d",
    "adaptive_max_pool2d", "flatten", "reshape", "view", "permute", "transpose", "squeeze", "unsqueeze",
    "contiguous", "dropout", "identity", "AvgPool1d", "AvgPool2d", "AvgPool3d", "AdaptiveAvgPool1d",
    "AdaptiveAvgPool2d", "AdaptiveAvgPool3d", "MaxPool1d", "MaxPool2d", "MaxPool3d", "AdaptiveMaxPool1d",
    "AdaptiveMaxPool2d", "Flatten", "Dropout", "Identity"})


def _op_name(node, modules) -> str:
    if node.op == "call_module":
        return type(modules.get(node.target)).__name__
    if node.op in ("call_function", "call_method"):
        return getattr(node.target, "__name__", str(node.target))
    return ""


def bound_clamped_observers(prepared) -> dict[str, tuple[float, float]]:
    """Make each MultiObserver of an FX-prepared model watch clamped values (MultiObserver.clamp) when
    every value it serves is bounded by the same clamp: either every reader clamps to those bounds (a conv
    before a ReLU6: the int8 conv saturates at the range it is given, and the ReLU6 clamps the rest), or
    the value was clamped already (the ReLU6's output, and a mean or pool of it, watched by the same
    instance, as torch.ao shares one between them). Returns {observer path: (lo, hi)}."""
    modules = dict(prepared.named_modules(remove_duplicate=False))
    observers = {n: modules[n.target] for n in prepared.graph.nodes
                 if n.op == "call_module" and isinstance(modules.get(n.target), MultiObserver)}

    def bounded_value(node, depth=0):
        """The bounds `node`'s value is known to lie in (clamped upstream), else None."""
        if depth > 64 or not hasattr(node, "op"):
            return None
        if node in observers:
            return bounded_value(node.args[0], depth + 1) if node.args else None
        own = _clamp_bounds(node, modules)
        if own is not None:
            return own
        if _op_name(node, modules) in _WITHIN_INPUT_BOUNDS and node.args:
            return bounded_value(node.args[0], depth + 1)
        return None

    by_instance: dict[int, list] = {}
    for node, obs in observers.items():
        by_instance.setdefault(id(obs), []).append(node)
    bounded = {}
    for nodes in by_instance.values():
        bounds = set()
        for node in nodes:
            already = bounded_value(node.args[0]) if node.args else None
            if already is not None:
                bounds.add(already)
                continue
            bounds.update(_clamp_bounds(user, modules) for user in node.users)
            if not node.users:
                bounds.add(None)
        if len(bounds) == 1 and None not in bounds:
            obs = observers[nodes[0]]
            obs.clamp = bounds.pop()
            bounded[nodes[0].target] = obs.clamp
    return bounded


def freeze_all(model) -> None:
    for obs in multi_observers(model).values():
        obs.freeze()


def multi_observers(model):
    """{path: MultiObserver} of a prepared model (FX: the graph's observer modules; eager: each
    module's activation_post_process)."""
    return {name: m for name, m in model.named_modules(remove_duplicate=False) if isinstance(m, MultiObserver)}


def choose(model, points, default: str, overrides: dict) -> None:
    """Set each MultiObserver of `model` to the range its point's override asks for, else `default`."""
    by_observer = {}
    for p in points:
        if p.observer is None:
            continue
        override = overrides.get(p.name)
        by_observer[p.observer] = override.observer if override is not None and override.observer else default
    for path, obs in multi_observers(model).items():
        key = path.removesuffix(".activation_post_process")  # eager: the module carrying it
        obs.chosen = by_observer.get(path, by_observer.get(key, default))


class SlopeObserver(MinMaxObserver):
    """PReLU's weight (its slopes), with a range that always holds 0 and 1.

    torch's int8 PReLU (quantized::prelu, torch 2.14, fbgemm/x86/qnnpack) multiplies positive inputs by
    1.0 quantized with the WEIGHT's parameters. A min-max range over the slopes alone stops at the
    largest slope: when every slope is below 1 (PReLU's default 0.25, MTCNN's trained ones), 1.0
    saturates there and every positive activation shrinks (a conv -> PReLU -> conv model: 5.9 dB). With
    0 and 1 in the range, 1.0 is representable (to half a step) and the slopes keep 8 bits over [0, 1].
    quint8, per tensor: what the kernel takes."""

    def __init__(self, dtype=torch.quint8, qscheme=torch.per_tensor_affine, **kwargs) -> None:
        super().__init__(dtype=dtype, qscheme=qscheme, **kwargs)

    def forward(self, x_orig):
        super().forward(torch.tensor([0.0, 1.0], dtype=x_orig.dtype))
        return super().forward(x_orig)


class NonZeroZeroPointObserver(MinMaxObserver):
    """A ConvTranspose's int8 weights, per tensor affine, with a zero point that is never 0.

    torch's x86 engine (torch 2.14) packs a conv for oneDNN instead of FBGEMM when the CPU has AVX512-VNNI
    (Linux), the weight is symmetric (zero point 0), output_padding is 0 and groups <= 100; oneDNN's int8
    transposed conv is wrong whenever a group's in and out channels differ (a conv -> ConvTranspose2d ->
    conv model: 2.1 dB). A .pt file is repacked under the engine of the process that loads it, so a file
    made on fbgemm or qnnpack is hit in any x86 process too. With a zero point other than 0, every engine
    takes FBGEMM's (or QNNPACK's) kernel, also after reloading. A min-max range lands on zero point 0 only
    when it is (nearly) symmetric: then the zero point moves to -1 and the scale widens by 128/127, so the
    range still holds every weight (at most one level of the 256 lost)."""

    def __init__(self, dtype=torch.qint8, qscheme=torch.per_tensor_affine, **kwargs) -> None:
        super().__init__(dtype=dtype, qscheme=qscheme, **kwargs)

    @torch.jit.export
    def calculate_qparams(self):
        scale, zero_point = self._calculate_qparams(self.min_val, self.max_val)
        if int(zero_point) == 0:
            scale, zero_point = scale * 128.0 / 127.0, zero_point - 1
        return scale, zero_point
