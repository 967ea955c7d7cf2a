"""How much each point matters, both ways, from one calibration (reconversions, no recalibration):
the metric with only this point quantized (every other toggle float), and with only this point float
(everything else int8). Points torch cannot keep float stay int8 in every configuration, and say so.
Where a point can be quantized more than one way (torchao's 4- or 8-bit weights), "only this point
quantized" is measured at each width: the sensitivity of every layer at each bit width.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, replace

from ..base.progress import CancelToken, Job, Stage
from .scoring import Config, Scorer


@dataclass(frozen=True)
class PointSensitivity:
    name: str
    only_int8: float | None  # the metric with only this point quantized
    only_float: float | None  # the metric with only this point kept float
    refused: str = ""  # why torch would not keep it float
    # ((width, the metric with only this point quantized at that width), ...), the point's own width
    # (only_int8's) among them, narrowest first; () where a point is quantized one way only
    widths: tuple = ()

    def to_json(self) -> dict:
        return {"name": self.name, "only_int8": self.only_int8, "only_float": self.only_float,
                "refused": self.refused or None,
                **({"only_at": dict(self.widths)} if self.widths else {})}


@dataclass(frozen=True)
class SensitivityResult:
    metric: str
    all_int8: float  # the metric with every candidate in int8 (where each only-float figure starts from)
    all_float: float  # every candidate float: what only-int8 figures are read against
    points: tuple  # PointSensitivity, ranked: the most to gain by keeping it float first
    conversions: int
    seconds: float
    quantized: str = "int8"  # what "quantized" means for every point at once: int8, or torchao's "4-bit"

    @property
    def width_labels(self) -> list[str]:
        """The widths the points were measured at alone ("4-bit", "8-bit"), in order; [] for int8 only."""
        return list(dict.fromkeys(w for p in self.points for w, _v in p.widths))

    def cost_at(self, p: PointSensitivity, width: str) -> float | None:
        """What quantizing only this point at `width` (a label of `p.widths`) costs against every candidate
        float (None where that reference is exact, as for `cost`)."""
        value = dict(p.widths).get(width)
        return None if value is None or not math.isfinite(self.all_float) else self.all_float - value

    def gain(self, p: PointSensitivity) -> float | None:
        """What keeping only this point float gains over every candidate int8, in the metric's units
        (inf: its output is then exactly the float model's, as in a one-layer model)."""
        return None if p.only_float is None or not math.isfinite(self.all_int8) else p.only_float - self.all_int8

    def cost(self, p: PointSensitivity) -> float | None:
        """What quantizing only this point costs against every candidate float; None where that
        reference is exact (every candidate float runs no int8 op: an SQNR of infinity), where the
        only-int8 figure itself is the cost."""
        if p.only_int8 is None or not math.isfinite(self.all_float):
            return None
        return self.all_float - p.only_int8

    def to_json(self) -> dict:
        return {"metric": self.metric, "all_int8": self.all_int8, "all_float": self.all_float,
                "quantized": self.quantized, "conversions": self.conversions, "seconds": round(self.seconds, 2),
                "points": [{**p.to_json(), "gain": self.gain(p), "cost": self.cost(p),
                            **({"cost_at": {w: self.cost_at(p, w) for w, _v in p.widths}} if p.widths else {})}
                           for p in self.points]}


def sensitivity(scorer: Scorer, candidates, cancel: CancelToken | None = None, start: Config | None = None,
                both: bool = True, widths=None, quantized: str = "int8") -> Job[SensitivityResult]:
    """`candidates`: the toggle targets to measure; `both`: also the only-int8 direction (the search
    needs only the only-float one). `widths(name)`: ((label, override fields), ...) of every width the
    point can be quantized at, in the order shown, its own with fields None (only-int8's figure), measured
    too with `both`; None: one way only."""
    t0 = time.perf_counter()
    start = start or Config.of(scorer.snap.recipe)
    candidates = list(candidates)
    others = {name: widths(name) for name in candidates} if both and widths else {}
    n = len(candidates) * (2 if both else 1) + (2 if both else 1) + sum(
        sum(1 for _label, fields in o if fields) for o in others.values())
    stage = Stage("sensitivity", n, cancel)
    done = 0
    yield stage.step(0, (f"{len(candidates)} points, both ways" + (", at each width" if others else ""))
                     if both else f"{len(candidates)} points")
    base = scorer.score(start, cancel)
    done += 1
    everything = scorer.score(start.with_float(candidates), cancel) if both else None
    done += 1 if both else 0
    yield stage.step(done, "the start and all-float configurations")
    configs = []  # in the order they are scored: this point float, then (both) only this point int8,
    for name in candidates:  # then only this point at each other width
        configs.append(start.with_float([name]))
        if both:
            alone = start.with_float([c for c in candidates if c != name])
            configs.append(alone)
            configs += [alone.with_override(name, **fields) for _label, fields in others.get(name, ()) if fields]
    scored = scorer.score_all(configs, cancel)
    out = []
    try:
        yield from _collect(scored, candidates, both, others, out, stage, done)
    finally:
        scored.close()  # a cancel: the conversion running ahead is waited for, then dropped
    result = SensitivityResult(scorer.metric[0], base.metric.quantized,
                               everything.metric.quantized if everything else base.metric.quantized,
                               (), scorer.conversions, time.perf_counter() - t0, quantized)
    ranked = sorted(out, key=lambda p: -(result.gain(p) if result.gain(p) is not None else float("-inf")))
    return replace(result, points=tuple(ranked), conversions=scorer.conversions)


def _collect(scored, candidates, both: bool, others: dict, out: list, stage, done: int) -> Job[None]:
    for name in candidates:
        only_float = next(scored)
        done += 1
        only_int8, widths = None, ()
        if both:
            only_int8 = next(scored)
            done += 1
            if name in others:  # in the order given: the point's own is only-int8's, the others scored after it
                alternatives = {label: next(scored).metric.quantized for label, fields in others[name] if fields}
                done += len(alternatives)
                widths = tuple((label, alternatives[label] if fields else only_int8.metric.quantized)
                               for label, fields in others[name])
        refused = only_float.refused.get(name, "")
        out.append(PointSensitivity(name, only_int8.metric.quantized if only_int8 else None,
                                    None if refused else only_float.metric.quantized, refused, widths))
        yield stage.step(done, f"{name}")
