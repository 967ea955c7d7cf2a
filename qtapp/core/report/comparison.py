"""Two runs side by side: what differs in their settings, their output figures, size and latency, and each
point's local and accumulated SQNR. A function of two report.json dicts (`render.report_dict`), so a
comparison reads exactly the figures each run's report holds, and a record of a run keeps no model."""

from __future__ import annotations

from dataclasses import dataclass

# The recipe fields a run's settings are told by (the model, the data and the files are the session's).
SETTINGS = ("method", "backend", "static_mode", "engine", "observer", "per_channel", "equalize",
            "equalize_depthwise", "dtype", "onnx_quantizer", "calibration", "qat", "metric")


@dataclass(frozen=True)
class FigureRow:
    label: str
    a: float | None
    b: float | None
    unit: str  # "dB", "MB", "ms", "%", "" (a number as it is)
    higher_is_better: bool

    def text(self, side: str) -> str:
        return _fmt(self.a if side == "a" else self.b, self.unit)

    @property
    def change(self) -> str:
        """b against a, in the figure's unit, with the better direction named."""
        if self.a is None or self.b is None:
            return ""
        diff = self.b - self.a
        if abs(diff) < 1e-12:
            return "same"
        better = (diff > 0) == self.higher_is_better
        if self.unit in ("MB", "ms") and self.a:
            amount = f"{self.b / self.a:.2f}x"
        elif self.unit == "%":
            amount = f"{diff * 100:+.2f} points"
        else:
            amount = f"{diff:+.4g}{(' ' + self.unit) if self.unit else ''}"
        return f"{amount} ({'better' if better else 'worse'})"


@dataclass(frozen=True)
class PointPair:
    name: str
    local_a: float | None
    local_b: float | None
    accumulated_a: float | None
    accumulated_b: float | None
    float_a: bool  # kept float in run a (no figure of its own there)
    float_b: bool


@dataclass(frozen=True)
class Comparison:
    settings: tuple  # (field, a's value, b's value) for each setting that differs
    float_only_a: tuple  # points kept float in a and not in b
    float_only_b: tuple
    figures: tuple  # FigureRow
    points: tuple  # PointPair, in a's model order then b's own
    verdicts: tuple  # (a's level, b's level)

    def text(self, a_name: str = "a", b_name: str = "b") -> str:
        """The comparison as plain text (the window's copy, a log line)."""
        lines = [f"{'':28}{a_name:>16}{b_name:>16}  change"]
        lines += [f"{r.label:28}{r.text('a'):>16}{r.text('b'):>16}  {r.change}" for r in self.figures]
        lines.append(f"{'verdict':28}{self.verdicts[0]:>16}{self.verdicts[1]:>16}")
        if self.settings:
            lines.append("settings: " + "; ".join(f"{k} {_value(x)} -> {_value(y)}" for k, x, y in self.settings))
        for side, names in ((a_name, self.float_only_a), (b_name, self.float_only_b)):
            if names:
                lines.append(f"float only in {side}: {', '.join(names)}")
        lines.append(f"{'point':28}{'local ' + a_name:>16}{'local ' + b_name:>16}{'accum. ' + a_name:>16}"
                     f"{'accum. ' + b_name:>16}")
        for p in self.points:
            lines.append(f"{p.name:28}{_point(p.local_a, p.float_a):>16}{_point(p.local_b, p.float_b):>16}"
                         f"{_point(p.accumulated_a, p.float_a):>16}{_point(p.accumulated_b, p.float_b):>16}")
        return "\n".join(lines)


def compare(a: dict, b: dict, recipe_a: dict | None = None, recipe_b: dict | None = None) -> Comparison:
    """`a`, `b`: two runs' report.json dicts; `recipe_a`, `recipe_b`: their recipes' dicts (for the
    settings that differ; without them, the report's method, engine and dtype are compared)."""
    ra = recipe_a if recipe_a is not None else {k: a.get(k) for k in ("method", "engine", "dtype")}
    rb = recipe_b if recipe_b is not None else {k: b.get(k) for k in ("method", "engine", "dtype")}
    settings = ()
    for k in SETTINGS:
        x, y = ra.get(k), rb.get(k)
        if isinstance(x, dict) and isinstance(y, dict):  # calibration, qat: the sub-settings that differ
            settings += tuple((f"{k}.{s}", x.get(s), y.get(s)) for s in dict.fromkeys([*x, *y]) if x.get(s) != y.get(s))
        elif x != y:
            settings += ((k, x, y),)
    if (ra.get("overrides") or {}) != (rb.get("overrides") or {}):
        settings += (("per-point overrides", _overrides(ra), _overrides(rb)),)
    fa, fb = set(a.get("float_layers") or ()), set(b.get("float_layers") or ())
    return Comparison(settings, tuple(sorted(fa - fb)), tuple(sorted(fb - fa)), _figures(a, b), _points(a, b),
                      (a["verdict"]["level"], b["verdict"]["level"]))


def _figures(a: dict, b: dict) -> tuple:
    oa, ob = a.get("output") or {}, b.get("output") or {}
    rows = [FigureRow("output SQNR", oa.get("sqnr_db"), ob.get("sqnr_db"), "dB", True),
            FigureRow("cosine", oa.get("cosine"), ob.get("cosine"), "", True)]
    if oa.get("accuracy_quantized") is not None or ob.get("accuracy_quantized") is not None:
        rows.append(FigureRow("top-1 (quantized)", oa.get("accuracy_quantized"), ob.get("accuracy_quantized"),
                              "%", True))
    if oa.get("top1_agreement") is not None or ob.get("top1_agreement") is not None:
        rows.append(FigureRow("top-1 agreement", oa.get("top1_agreement"), ob.get("top1_agreement"), "%", True))
    ma, mb = oa.get("metric") or {}, ob.get("metric") or {}
    if (ma or mb) and ma.get("name") == mb.get("name") and ma.get("name") not in (None, "sqnr"):
        rows.append(FigureRow(f"metric {ma['name']}", ma.get("quantized"), mb.get("quantized"), "",
                              ma.get("higher_is_better", True)))
    sa, sb = a.get("size_bytes") or {}, b.get("size_bytes") or {}
    rows.append(FigureRow("size (quantized)", _mb(sa.get("quantized")), _mb(sb.get("quantized")), "MB", False))
    la, lb = a.get("latency_ms") or {}, b.get("latency_ms") or {}
    rows.append(FigureRow("latency (quantized)", la.get("quantized"), lb.get("quantized"), "ms", False))
    return tuple(rows)


def _points(a: dict, b: dict) -> tuple:
    la = {p["name"]: p for p in a.get("layers") or ()}
    lb = {p["name"]: p for p in b.get("layers") or ()}
    names = list(la) + [n for n in lb if n not in la]
    out = []
    for n in names:
        pa, pb = la.get(n) or {}, lb.get(n) or {}
        out.append(PointPair(n, pa.get("local_sqnr_db"), pb.get("local_sqnr_db"), pa.get("accumulated_sqnr_db"),
                             pb.get("accumulated_sqnr_db"), bool(pa.get("kept_float")), bool(pb.get("kept_float"))))
    return tuple(out)


def _mb(n) -> float | None:
    return None if n is None else n / 1e6


def _fmt(x, unit: str) -> str:
    if x is None:
        return "–"
    if unit == "%":
        return f"{x:.2%}"
    if unit == "dB":
        return f"{x:.1f} dB"
    if unit == "MB":
        return f"{x:.2f} MB"
    if unit == "ms":
        return f"{x:.2f} ms"
    return f"{x:.5g}"


def _point(x, kept_float: bool) -> str:
    return "float" if kept_float else "–" if x is None else f"{x:.1f}"


def _value(v) -> str:
    return "default" if v is None else str(v)


def _overrides(recipe: dict) -> str:
    o = recipe.get("overrides") or {}
    return f"{len(o)} point(s)" if o else "none"
