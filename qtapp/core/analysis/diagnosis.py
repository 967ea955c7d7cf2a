"""One diagnosis per bad quantization point, from its figures: written once, rendered everywhere.

A point is *bad* when its local SQNR (its own error, see analysis/static.py) is well below the model's
typical point, or low outright. Each detector is a small function of one point's figures that returns
a `Finding` (a stable code, one sentence, the figures behind it) or None; the first that fires is the
point's diagnosis. The CLI's `analyze`, report.json, report.html and the window all show these.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field

BAD_BELOW_MEDIAN_DB = 10.0  # local SQNR this far under the median point's is bad
BAD_LOCAL_DB = 20.0  # and below this, bad whatever the others do
# torchao's 4-bit weights measure about 20 dB on a healthy layer where int8 ones measure about 40: a 4-bit
# point is bad outright below this, and is compared with the other 4-bit points only (a mix of widths)
BAD_LOCAL_DB_4BIT = 12.0
CLIP_SHARE = 0.005  # 0.5% of values clipped at one end
ZERO_SHARE = 0.5  # half the non-zero values rounding to zero
ZERO_BAD_SHARE = 0.9  # nine in ten: bad whatever the SQNR, which the few large values rule
OUTLIER_CENTRAL_SHARE = 0.1  # 99.9% of values within 10% of the range
ERROR_STARTS_DROP_DB = 10.0
FIXED_RANGE_OPS = frozenset({"Sigmoid", "sigmoid", "Softmax", "softmax", "Tanh", "tanh", "Hardsigmoid", "hardsigmoid"})


@dataclass(frozen=True)
class Finding:
    code: str
    text: str
    figures: dict = field(default_factory=dict)

    def to_json(self) -> dict:
        return {"code": self.code, "text": self.text, "figures": self.figures}


def _pct(x: float) -> str:
    if x >= 0.1:
        return f"{x:.0%}"
    if x >= 0.001:
        return f"{x:.1%}"
    return f"{x:.2%}"


def _num(x: float) -> str:
    return f"{x:.3g}"


def _range_of(r) -> str:
    """The range a point's levels are counted in, named as the range text names it (ranges.RangeStats)."""
    return "the median call's range" if r.per_call else "its fixed range" if r.fixed else "its calibrated range"


def clipping(p, ctx) -> Finding | None:
    r = p.range
    if r is None or r.per_call:
        return None
    end, share = ("top", r.clipped_high) if r.clipped_high >= r.clipped_low else ("bottom", r.clipped_low)
    if share < CLIP_SHARE:
        return None
    edge, reach = (r.hi, r.data_max) if end == "top" else (r.lo, r.data_min)
    text = f"clips {_pct(share)} of values at the {end}: its range ends at {_num(edge)}"
    if r.fixed:
        feeds = [q.name for q in ctx["by_name"].values() if p.name in q.inputs and q.range is not None and q.range.fixed]
        if p.op in FIXED_RANGE_OPS or not feeds:
            text += " (a range torch fixes for this op)"
        else:  # torch.ao gives a fixed-range op's input that op's output range
            text = (f"clips {_pct(share)} of values at the {end}: torch gives it the fixed {_num(r.lo)} to "
                    f"{_num(r.hi)} range of {feeds[0]}, the op it feeds")
    return Finding("clipping", f"{text}; values reach {_num(reach)}", {"share": share, "end": end, "range_end": edge,
                                                                    "data_end": reach, "fixed": r.fixed})


def rounds_to_zero(p, ctx) -> Finding | None:
    r = p.range
    if r is None:
        return None
    share = _zero_share(p)
    if share < ZERO_SHARE:
        return None
    what = "inputs" if r.per_call else "values"
    per = "; each call's range is set by its largest value" if r.per_call else ""
    return Finding("rounds-to-zero", f"{what} round to zero: {_pct(share)} of the non-zero values are smaller than "
                                     f"half a step (step {_num(r.scale)}{per})", {"share": share, "scale": r.scale})


def outlier_range(p, ctx) -> Finding | None:
    r = p.range
    owner = ctx["points"].get(p.name)
    if r is None or r.fixed or r.central_share > OUTLIER_CENTRAL_SHARE or (owner is not None and owner.shares_range):
        return None
    sharers = [q.name for q in ctx["points"].values() if q.shares_range == p.name]
    whose = f", a range it shares with {', '.join(sharers)} (one observer for all)" if sharers else ""
    return Finding("outlier-range", f"outliers set the range{whose}: 0.1% of values use {1 - r.central_share:.0%} of "
                                    f"it, the other 99.9% span {r.central_levels} of the {r.levels_total} levels of "
                                    f"{_range_of(r)}",
                   {"central_levels": r.central_levels, "levels_total": r.levels_total,
                    "central_share": r.central_share})


def shared_range(p, ctx) -> Finding | None:
    r, owner = p.range, ctx["points"].get(p.name)
    if r is None or owner is None or not owner.shares_range or r.central_share > 0.25:
        return None
    return Finding("shared-range", f"shares the range of {owner.shares_range} (one observer for both), but the "
                                   f"central 99.9% of its values span only {r.central_levels} of the {r.levels_total} "
                                   f"levels of {_range_of(r)}",
                   {"shares": owner.shares_range, "central_levels": r.central_levels})


def other_range(p, ctx) -> Finding | None:
    if not getattr(p, "other_range", None):
        return None
    real, own = p.other_range
    module = p.name.split("@", 1)[0]
    calls = [q for q in ctx["by_name"] if q == module or q.startswith(f"{module}@")]
    why = (f"{module} runs {len(calls)} times and torch.ao's int8 module keeps one output range for all its "
           "calls; give each call a module of its own") if len(calls) > 1 else \
        "torch gave its int8 module another output range than the one calibrated for it"
    return Finding("other-range", f"its int8 output is rounded to another range than its own (scale {_num(real)} "
                                  f"instead of {_num(own)}): {why}", {"scale": real, "own_scale": own,
                                                                     "calls": len(calls)})


def kernel_mismatch(p, ctx) -> Finding | None:
    if p.kernel_sqnr_db is None or p.kernel_sqnr_db >= BAD_LOCAL_DB:
        return None
    drop = _accumulated_drop(p, ctx)
    grows = (f"; error grows from {_db(drop[0].accumulated_sqnr_db)} dB ({drop[0].name}) to "
             f"{_db(p.accumulated_sqnr_db)} dB here") if drop is not None and drop[1] > 0 else ""
    return Finding("kernel-mismatch", f"the int8 {p.op} does not compute what the float one does: on the same int8 "
                                      f"input they agree to {_db(p.kernel_sqnr_db)} dB{grows}",
                   {"kernel_db": p.kernel_sqnr_db, "db": p.accumulated_sqnr_db})


def amplifies(p, ctx) -> Finding | None:
    drop = _accumulated_drop(p, ctx)
    if drop is None or drop[1] < ERROR_STARTS_DROP_DB:
        return None
    if p.kernel_sqnr_db is not None and p.kernel_sqnr_db < BAD_LOCAL_DB:
        return None  # its int8 kernel computes something else: kernel_mismatch says so
    if p.local_sqnr_db is not None and p.local_sqnr_db < p.accumulated_sqnr_db + ERROR_STARTS_DROP_DB:
        return None  # its own rounding explains the drop
    before = drop[0]
    rounding = f", while its own rounding costs {_db(p.local_sqnr_db)} dB" if p.local_sqnr_db is not None else ""
    return Finding("amplifies-error", f"amplifies the error it is fed: {before.name} reaches it at "
                                      f"{_db(before.accumulated_sqnr_db)} dB, its output is {_db(p.accumulated_sqnr_db)} "
                                      f"dB{rounding}", {"before": before.name, "before_db": before.accumulated_sqnr_db,
                                                        "db": p.accumulated_sqnr_db, "local_db": p.local_sqnr_db})


def _accumulated_drop(p, ctx):
    """(the input point with the worst accumulated SQNR, how many dB worse this point's output is)."""
    if p.accumulated_sqnr_db is None:
        return None
    before = [ctx["by_name"][n] for n in p.inputs if n in ctx["by_name"]]
    before = [b for b in before if b.accumulated_sqnr_db is not None]
    if not before:
        return None
    worst = min(before, key=lambda b: b.accumulated_sqnr_db)
    return worst, worst.accumulated_sqnr_db - p.accumulated_sqnr_db


def weight_outlier_channel(p, ctx) -> Finding | None:
    if not p.outlier_channels:
        return None
    channel, ratio = p.outlier_channels[0]
    w = p.weight
    per_tensor = w is not None and w.scales is not None and len(w.scales) == 1
    if not per_tensor and (p.weight_sqnr_db is None or p.weight_sqnr_db >= BAD_LOCAL_DB):
        return None  # each channel has its own scale: the outlier costs the others nothing
    folded = p.name in ctx.get("bn_folded", ())
    who = "folded BatchNorm makes " if folded else ""
    cost = ""
    if per_tensor:
        cost = ": with one scale for the whole tensor, the other channels get few levels"
        if p.weight_sqnr_db is not None:
            cost += f" (the median channel's weights at {_db(p.weight_sqnr_db)} dB); per-channel scales fix it"
    return Finding("weight-outlier-channel", f"{who}channel {channel}'s weights {ratio:,.0f}x the median{cost}",
                   {"channel": channel, "ratio": ratio, "per_tensor": per_tensor, "bn_folded": folded,
                    "weight_db": p.weight_sqnr_db})


def _db(x: float) -> str:
    """dB as a whole number, without a "-0"."""
    return f"{round(x):d}" if x == x and abs(x) != float("inf") else f"{x}"


def error_starts_here(p, ctx) -> Finding | None:
    before = [ctx["by_name"][n] for n in p.inputs if n in ctx["by_name"]]
    before = [b for b in before if b.accumulated_sqnr_db is not None]
    if p.local_sqnr_db is None or not before:
        return None
    prev = min(before, key=lambda b: b.accumulated_sqnr_db)
    if prev.accumulated_sqnr_db - p.local_sqnr_db < ERROR_STARTS_DROP_DB:
        return None
    return Finding("error-starts-here", f"error starts here: local {_db(p.local_sqnr_db)} dB, while {prev.name} before it is "
                                        f"still at {_db(prev.accumulated_sqnr_db)} dB accumulated",
                   {"local_db": p.local_sqnr_db, "before": prev.name, "before_db": prev.accumulated_sqnr_db})


# A calibrated range: clipping, then outliers (which explain values rounding to zero); one range per call
# (dynamic): values rounding to zero is the finding, whatever set the range.
CALIBRATED = (other_range, kernel_mismatch, weight_outlier_channel, clipping, outlier_range, shared_range, rounds_to_zero,
              amplifies, error_starts_here)
PER_CALL = (rounds_to_zero, kernel_mismatch, outlier_range, weight_outlier_channel, amplifies, error_starts_here)


def severity(p, ctx) -> float:
    """How much this point itself costs, in dB (lower is worse): its local SQNR, or the SQNR it leaves
    when its int8 output falls well below its inputs' (an int8 kernel that computes something else)."""
    drop = _accumulated_drop(p, ctx)
    own = p.local_sqnr_db if p.local_sqnr_db is not None else float("inf")
    if drop is not None and drop[1] >= ERROR_STARTS_DROP_DB:
        own = min(own, p.accumulated_sqnr_db)
    if p.kernel_sqnr_db is not None:
        own = min(own, p.kernel_sqnr_db)
    # int8 weights alone measure about 40 dB per tensor on any healthy layer: they count only when bad
    # outright, never against the other points' local figures (which include their weights' rounding)
    if p.weight_sqnr_db is not None and p.weight_sqnr_db < outright_db(p):
        own = min(own, p.weight_sqnr_db)
    return own


def width(p) -> str:
    """What the point's weights round to: "4-bit" (torchao's int4 weights) or "int8" (everything else)."""
    q = p.weight.qscheme if getattr(p, "weight", None) is not None and p.weight.qscheme else ""
    return "4-bit" if q.startswith("int4") else "int8"


def outright_db(p) -> float:
    """The local SQNR under which a point is bad whatever the others do, for its width."""
    return BAD_LOCAL_DB_4BIT if width(p) == "4-bit" else BAD_LOCAL_DB


def _medians(scored) -> dict[str, float]:
    """{width: the median local SQNR of the points of that width}: a 4-bit point is read against 4-bit ones."""
    by: dict[str, list] = {}
    for p in scored:
        if p.local_sqnr_db is not None:
            by.setdefault(width(p), []).append(p.local_sqnr_db)
    return {w: statistics.median(v) for w, v in by.items()}


def bad_points(points, ctx=None) -> list:
    """The points worse than the rest, worst first: a local SQNR well under the median point's (of the
    same width) or low outright, or an int8 output that loses much more than its inputs had."""
    ctx = ctx or _context(points)
    scored = [p for p in points if p.quantized and not p.kept_float
              and (p.local_sqnr_db is not None or p.accumulated_sqnr_db is not None)]
    if not scored:
        return []
    medians = _medians(scored)

    def limit(p) -> float:
        median = medians.get(width(p), outright_db(p))
        return max(min(median - BAD_BELOW_MEDIAN_DB, outright_db(p)), median - BAD_BELOW_MEDIAN_DB)

    bad = [p for p in scored if severity(p, ctx) <= limit(p) or severity(p, ctx) < outright_db(p)
           or _zero_share(p) >= ZERO_BAD_SHARE or getattr(p, "other_range", None)]
    return sorted(bad, key=lambda p: severity(p, ctx))


def _zero_share(p) -> float:
    """The share of a point's non-zero values that round to zero."""
    r = p.range
    if r is None or r.exact_zero >= 1.0:
        return 0.0
    return r.rounds_to_zero / (1.0 - r.exact_zero)


def _context(points, bn_folded=(), inventory_points=None) -> dict:
    return {"by_name": {p.name: p for p in points}, "bn_folded": set(bn_folded),
            "points": dict(inventory_points or {})}


def diagnose(points, bn_folded=(), inventory_points=None) -> dict[str, list[Finding]]:
    """{point name: findings, the diagnosis first} for every bad point. `inventory_points` ({name:
    QuantPoint}) says which points share a range."""
    ctx = _context(points, bn_folded, inventory_points)
    out = {}
    for p in bad_points(points, ctx):
        detectors = PER_CALL if p.range is not None and p.range.per_call else CALIBRATED
        found = [f for f in (d(p, ctx) for d in detectors) if f is not None]
        if not found:
            w = width(p)
            scored = [q.local_sqnr_db for q in points if q.local_sqnr_db is not None and width(q) == w]
            median = statistics.median(scored) if scored else None
            rounding, others = ("its int8 rounding", "other points") if w == "int8" else \
                ("its 4-bit weights' rounding", "other 4-bit points")
            if p.local_sqnr_db is None:
                text = "its error is far above what reaches it"
            elif median is not None and p.local_sqnr_db <= median - BAD_BELOW_MEDIAN_DB:
                text = (f"{rounding} costs more than at {others}: local {_db(p.local_sqnr_db)} dB, the "
                        f"median {'point' if w == 'int8' else '4-bit point'} {_db(median)} dB")
            elif p.local_sqnr_db < outright_db(p):
                text = f"{rounding} costs much: local {_db(p.local_sqnr_db)} dB (under {_db(outright_db(p))} dB)"
            else:
                text = (f"it costs more than its local {_db(p.local_sqnr_db)} dB shows: {_db(severity(p, ctx))} dB "
                        f"at its worst (its {'int8' if w == 'int8' else '4-bit'} kernel, its weights or the drop from "
                        "its inputs)")
            found = [Finding("poor-rounding", text, {"local_db": p.local_sqnr_db})]
        out[p.name] = found
    return out


def worst_points(points, n: int = 5) -> list:
    """The n points that cost most by themselves: the bad ones first (worst first), then the others by
    local SQNR (or accumulated, where a point has no local figure)."""
    ctx = _context(points)
    bad = sorted((p for p in points if p.diagnosis), key=lambda p: severity(p, ctx))
    rest = [p for p in points if not p.diagnosis and p.quantized and not p.kept_float
            and (p.local_sqnr_db is not None or p.accumulated_sqnr_db is not None)]
    rest.sort(key=lambda p: p.local_sqnr_db if p.local_sqnr_db is not None else p.accumulated_sqnr_db)
    return (bad + rest)[:n]
