"""The run summary beside the output plot: size, latency, accuracy and error, float vs quantized."""

from __future__ import annotations

from html import escape

from PySide6.QtCore import Qt
from PySide6.QtWidgets import QLabel

from ..core.deploy.measure import RUNTIMES
from ..core.report import notes as report_notes


def _mb(n) -> str:
    return "–" if n is None else f"{n / 1e6:.2f} MB"


def _ms(x) -> str:
    return "–" if x is None else f"{x:.2f} ms"


def _pct(x) -> str:
    return "–" if x is None else f"{x:.2%}"


def _quantized_dtype(result) -> str:
    """What the quantized column holds: int8, float16 (a dynamic float16 run), or both (float16 for some
    layers only), or torchao's bits, from the weights the run really made."""
    if result.mode == "torchao":  # the widths its layers have: "4-bit", "8-bit", "4 + 8-bit"
        widths = sorted({p.weight.qscheme.split(" ", 1)[0].removeprefix("int") for p in result.layers
                         if p.quantized and not p.kept_float and p.weight is not None and p.weight.qscheme})
        return " + ".join(widths) + "-bit" if widths else f"{result.recipe.weight_bits}-bit"
    kinds = set(report_notes.weight_dtypes(result).values())
    if not kinds:
        return "float16" if result.dtype == "float16" else "int8"
    return " + ".join(k for k in ("int8", "float16") if k in kinds)


class SummaryView(QLabel):
    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self.setTextFormat(Qt.TextFormat.RichText)
        self.setWordWrap(True)
        self.setAlignment(Qt.AlignmentFlag.AlignTop | Qt.AlignmentFlag.AlignLeft)
        self.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.setMinimumWidth(260)
        self.figures: dict = {}
        self.show_result(None)

    def show_result(self, session, measuring: bool = False) -> None:
        result = session.result if session is not None else None
        if result is None:
            self.figures = {}
            self.setText("<p style='color:#666'>Run calibration to see size, latency and accuracy.</p>")
            return
        o, lat = result.output, result.latency
        self.figures = {
            "size_float": result.size_float, "size_quantized": result.size_quantized,
            "latency_float": lat.float_ms if lat else None, "latency_quantized": lat.quantized_ms if lat else None,
            "accuracy_float": o.accuracy_float, "accuracy_quantized": o.accuracy_quantized,
            "sqnr_db": o.sqnr_db,
        }
        pending = "measuring…" if measuring else "–"
        size_ratio = (f"{result.size_quantized / result.size_float:.0%} of float"
                      if result.size_float else pending)
        speed = pending if not lat else (f"{lat.speedup:.2f}× faster" if lat.speedup >= 1
                                         else f"{1 / lat.speedup:.2f}× slower")
        shipped = "ExecuTorch .pte" if (lat is not None and lat.format == "pte") or result.mode in ("pt2e", "torchao") \
            else "TorchScript"  # (PT2E and torchao runs are measured on their .pte, when measured)
        rows = [
            (f"Size ({shipped})", _mb(result.size_float) if result.size_float else pending,
             _mb(result.size_quantized) if result.size_quantized else pending, size_ratio),
            (f"Latency (batch 1, {lat.threads} threads)" if lat else "Latency (batch 1)",
             _ms(lat.float_ms) if lat else pending, _ms(lat.quantized_ms) if lat else pending, speed),
        ]
        for e in result.exports:  # after an export: each file against float in its own runtime
            if e.latency is not None:
                rows.append((f"model.{e.format} ({RUNTIMES.get(e.format, e.format)})", _ms(e.latency.float_ms),
                             _ms(e.latency.quantized_ms), f"{e.latency.speedup:.2f}× faster" if e.latency.speedup >= 1
                             else f"{1 / e.latency.speedup:.2f}× slower"))
        if o.accuracy_float is not None:
            rows.append(("Accuracy", _pct(o.accuracy_float), _pct(o.accuracy_quantized),
                         f"{(o.accuracy_quantized - o.accuracy_float) * 100:+.2f} points"))
        m = o.metric
        if m is not None and not (m.name == "top1" and o.accuracy_float is not None):
            fmt = (lambda v: f"{v:.1f} dB") if m.name == "sqnr" else (lambda v: f"{v:.2%}") \
                if m.name in ("top1", "retrieval@1") else (lambda v: f"{v:.5g}")
            rows.append((f"Metric {m.name}", fmt(m.float_value) if m.float_value is not None else "–",
                         fmt(m.quantized), ""))
        table = "".join(f"<tr><td>{escape(a)}</td><td align=right>{b}</td><td align=right>{c}</td>"
                        f"<td style='color:#555'>{d}</td></tr>" for a, b, c, d in rows)
        error = [f"SQNR {o.sqnr_db:.1f} dB" if o.sqnr_db is not None else "outputs identical",
                 f"cosine {o.cosine:.5f}", f"max |error| {o.max_abs_error:.4g}"]
        if o.top1_agreement is not None:
            error.append(f"top-1 agreement {o.top1_agreement:.1%}")
        notes = [] if session.calibrated is not None else [
            ("warning", "Settings changed since this result: run again to recalibrate.")]
        notes += [(n.level, n.text) for n in report_notes.notes(result)]
        if result.float_layers:
            notes.append(("info", f"{len(result.float_layers)} layer(s) kept in float."))
        evaluated = result.evaluation.description if result.evaluation else ""
        quantized = _quantized_dtype(result)
        self.figures["dtype"] = quantized
        self.setText(
            "<table cellspacing=6><tr><th></th><th align=right>float</th>"
            f"<th align=right>{quantized}</th><th></th></tr>"
            f"{table}</table>"
            f"<p><b>Output error</b> over {o.samples} samples ({escape(evaluated)}):<br>{', '.join(error)}</p>"
            + "".join(f"<p style='color:{'#a04000' if level == 'warning' else '#555'}'>{escape(text)}</p>"
                      for level, text in notes))
