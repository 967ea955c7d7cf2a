"""Every activation range qtapp offers, from one calibration pass, chosen per point at conversion.

`MultiObserver` watches the data once with each way of choosing a range: min-max, a moving average of
per-batch min-max, torch's histogram observer (the range minimising the L2 rounding error), and
percentile clipping at 99.9% and 99.99% (read off that same histogram). `calculate_qparams()` answers
for the one chosen; choosing another later needs no new calibration, only a reconversion.
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
        super().forward(x_orig)  # the true min and max
        self.moving(x_orig)
        self.hist(x_orig)
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
