"""One verdict per run: is the int8 model usable, degraded or broken, why, and the one step most likely to help.

Judged on the task metric where one is known (labels that are the classifier's class ids, or the recipe's
--metric), else on the output's SQNR. The thresholds (README, "The verdict"):
  accuracy (top-1)     usable: at most 1 point lost; degraded: at most 5; broken: more, or at chance
  a metric of yours    usable: at most 1% of the float model's value lost; degraded: at most 5%; broken: more
  retrieval@1          usable: at least 0.98; degraded: at least 0.90; broken: below
  output SQNR          usable: at least 20 dB; degraded: at least 12 dB; broken: below
A classifier whose int8 model answers one class for every sample (float: several) is broken, whatever the
rest says. A file no smaller than float and no faster is not compression: at best degraded.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..analysis.diagnosis import worst_points

USABLE_DB, DEGRADED_DB = 20.0, 12.0
USABLE_DROP_PTS, DEGRADED_DROP_PTS = 1.0, 5.0
USABLE_REL, DEGRADED_REL = 0.01, 0.05
USABLE_RETRIEVAL, DEGRADED_RETRIEVAL = 0.98, 0.90
NOT_SMALLER = 0.95  # an int8 file at 95% of float or more has not compressed the model
REPAIR_SHARE = 0.25  # what a repair may keep float: a quarter of the toggleable points (one at least)

LEVELS = ("usable", "degraded", "broken")
# (background, text) of each level, the same in the window's banner and report.html
COLOURS = {"usable": ("#e6f4ea", "#1e6b34"), "degraded": ("#fff4e0", "#8a5300"), "broken": ("#fde8e6", "#a3261a")}


@dataclass(frozen=True)
class Verdict:
    level: str  # usable | degraded | broken
    reason: str
    next: str | None  # the one step most likely to help (None when usable)
    target: str | None = None  # the tune target a repair aims at (the window's Repair button)
    budget: str | None = None

    def to_json(self) -> dict:
        return {"level": self.level, "reason": self.reason, "next": self.next, "repair_target": self.target,
                "repair_budget": self.budget}

    def line(self) -> str:
        """The one line a run ends with."""
        text = f"verdict: {self.level.upper()}: {self.reason}"
        return text + (f". Next: {self.next}" if self.next else "")


def _worse(a: str, b: str) -> str:
    return a if LEVELS.index(a) >= LEVELS.index(b) else b


def _grade(value: float, usable: float, degraded: float, higher_is_better: bool = True) -> str:
    if not higher_is_better:
        value, usable, degraded = -value, -usable, -degraded
    return "usable" if value >= usable else "degraded" if value >= degraded else "broken"


def judge(result) -> Verdict:
    """The verdict on `result` (a RunResult)."""
    o = result.output
    if o is None:
        return Verdict("broken", "nothing was measured", None)
    level, reasons, target = _on_task(result)
    if o.classes_float is not None and o.classes_float > 1 and o.classes_quantized == 1:
        level = "broken"
        reasons.insert(0, f"the int8 model gives the same class for every sample (float: {o.classes_float} "
                          "classes): its outputs have collapsed")
    not_compressed = False
    if result.size_float and result.size_quantized and result.size_quantized >= NOT_SMALLER * result.size_float:
        lat = result.latency
        if lat is None or lat.quantized_ms >= lat.float_ms / 1.05:
            level, not_compressed = _worse(level, "degraded"), True
            reasons.append(f"the file is {result.size_quantized / result.size_float:.0%} of float's size and no "
                           "faster: this configuration does not compress the model")
    if o.float_rms < 1e-4:
        reasons.append("the float outputs are almost zero (random weights?), so these figures mean little")
    if level == "usable":
        return Verdict(level, "; ".join(reasons), None)
    budget = repair_budget(result)
    recurrent = _recurrent_left_float(result) if not_compressed else []
    if recurrent:
        return Verdict(level, "; ".join(reasons), _dynamic_step(result, recurrent), target, budget)
    return Verdict(level, "; ".join(reasons), _next_step(result, target, budget), target, budget)


def _recurrent_left_float(result) -> list[tuple[str, int]]:
    """(name, float bytes) of the LSTM/GRU/RNN layers a static or QAT run left float: torch.ao has no
    static int8 recurrent layer; dynamic quantization has one."""
    import torch.nn as nn

    model = getattr(result, "quantized_model", None)
    if model is None or result.method == "dynamic":
        return []
    return [(name, sum(p.numel() * p.element_size() for p in m.parameters()))
            for name, m in model.named_modules() if type(m) in (nn.LSTM, nn.GRU, nn.RNN)]


def _dynamic_step(result, recurrent) -> str:
    held = sum(b for _, b in recurrent)
    names = ", ".join(n for n, _ in recurrent[:3]) + (" ..." if len(recurrent) > 3 else "")
    share = f" ({held / result.size_float:.0%} of the float file)" if result.size_float else ""
    return (f"qtapp-cli quantize {result.model} --method dynamic: static int8 leaves the recurrent layers "
            f"{names} float{share}, as torch.ao has no static int8 LSTM/GRU; dynamic quantization makes them int8")


def repair_budget(result) -> str:
    """A quarter of the points the user could keep float (one at least)."""
    toggles = sum(1 for p in result.layers if p.toggle)
    return f"float<={max(1, round(REPAIR_SHARE * toggles))}"


def _on_task(result) -> tuple[str, list[str], str]:
    """(level, reasons, the tune target a repair would aim at) from the task metric, else the output."""
    o = result.output
    m = o.metric
    if o.accuracy_float is not None:
        drop = (o.accuracy_float - o.accuracy_quantized) * 100
        level = _grade(drop, USABLE_DROP_PTS, DEGRADED_DROP_PTS, higher_is_better=False)
        return level, [f"top-1 {o.accuracy_float:.1%} -> {o.accuracy_quantized:.1%} ({drop:.1f} points lost) on "
                       f"{o.samples} labelled samples"], f"drop<={USABLE_DROP_PTS:g}"
    if m is not None and m.name == "retrieval@1":
        level = _grade(m.quantized, USABLE_RETRIEVAL, DEGRADED_RETRIEVAL)
        return level, [f"retrieval@1 {m.quantized:.1%} (each int8 embedding's nearest float one is its own)"], \
            f"metric>={USABLE_RETRIEVAL:g}"
    if m is not None and m.float_value is not None and m.name not in ("sqnr", "cosine"):
        scale = max(abs(m.float_value), 1e-12)
        rel = (m.float_value - m.quantized) / scale
        level = _grade(rel, USABLE_REL, DEGRADED_REL, higher_is_better=False)
        return level, [f"{m.name} {m.float_value:.4g} -> {m.quantized:.4g} ({rel:.1%} of float lost)"], \
            f"drop<={USABLE_REL * scale:.3g}"
    if o.sqnr_db is None:  # identical outputs
        return "usable", ["the int8 outputs equal the float ones"], f"sqnr>={USABLE_DB:g}"
    level = _grade(o.sqnr_db, USABLE_DB, DEGRADED_DB)
    how = "no task metric (no class-id labels, no --metric): judged on the output"
    return level, [f"output SQNR {o.sqnr_db:.1f} dB, cosine {o.cosine:.4f} ({how})"], f"sqnr>={USABLE_DB:g}"


def _next_step(result, target: str, budget: str) -> str:
    """The move most likely to help, in the words of the command that takes it."""
    tune = f"qtapp-cli tune {result.model} --target {target} --budget {budget}"
    if result.method == "dynamic" and result.dtype == "float16":
        return ("use int8 weights (--dtype qint8): torch.ao stores dynamic float16 weights as float32, so this file "
                f"cannot be smaller; then, if it loses too much, {tune}")
    bad = [p for p in worst_points(result.layers, len(result.layers)) if p.diagnosis and not p.kept_float]
    kernel = [p for p in bad if p.diagnosis[0].code == "kernel-mismatch"]
    if kernel:
        names = ", ".join(p.name for p in kernel[:3])
        return f"keep {names} float (its int8 kernel computes something else): {tune} tries it first"
    if bad:
        first = bad[0]
        return f"{tune} (it starts from {first.name}: {first.diagnosis[0].text})"
    return tune
