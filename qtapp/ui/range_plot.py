"""One activation point's values against its int8 range: the histogram, the calibrated range, the grid."""

from __future__ import annotations

from html import escape

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import Qt
from PySide6.QtGui import QColor
from PySide6.QtWidgets import QLabel, QWidget

from .plots import FLOAT_COLOR, TEXT_COLOR, PlotPanel, plot_widget, swatch, translucent

CLIP_COLOR = QColor("#d62728")
MAX_GRID_LEVELS = 64  # more levels than this in view are a grey smear


def _pct(x: float) -> str:
    if x == 0:
        return "0%"
    if x < 0.0001:
        return "<0.01%"
    return f"{x:.2%}" if x < 0.1 else f"{x:.0%}"


class ActivationRangePlot(PlotPanel):
    """The selected point's values (over the calibration batches, or each call's for dynamic
    quantization) with its representable range and, when few enough to see, its int8 levels."""

    EMPTY = "Select a quantization point to see its values against its int8 range"

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._view = plot_widget("value", "values per bin + 1 (log scale)")
        self._plot = self._view.getPlotItem()
        self._plot.setLogMode(x=False, y=True)

        self._add_views([self._view], [1])
        # The figures go in a wrapping label: a plot title is one line, cut at the plot's width.
        self._caption = QLabel(wordWrap=True)
        self._caption.setTextFormat(Qt.TextFormat.RichText)
        self._caption.setStyleSheet(f"color: {TEXT_COLOR}; background: white; padding: 4px 6px;")
        self._content.layout().insertWidget(0, self._caption)
        self._name, self._range, self._calibrated, self._title = None, None, None, ""
        self.set_point(None, None)

    # -- read-only facts ---------------------------------------------------------------------------
    def point_name(self) -> str | None:
        return self._name

    def range_lines(self) -> tuple[float, float] | None:
        """The ends of the int8 grid's representable range, as drawn."""
        return self._range

    def calibrated_lines(self) -> tuple[float, float] | None:
        """The ends of the calibrated range (its top drawn) where it is only part of the int8 grid, else None."""
        return self._calibrated

    def title_text(self) -> str:
        """The title as drawn (without markup)."""
        return self._title

    # -- data ----------------------------------------------------------------------------------------
    def set_point(self, name: str | None, point, is_point: bool = True, ran: bool = True) -> None:
        """`point`: a core PointResult (its `range` is drawn), or None; `is_point`: whether `name` is a
        quantization point at all; `ran`: whether there is a result to take figures from."""
        self._plot.clear()
        self._name, self._range, self._calibrated, self._title = name, None, None, ""
        r = getattr(point, "range", None)
        if name is None:
            self._show_message(self.EMPTY)
            return
        if not is_point:
            self._show_message(f"{name or 'The model'} is not a quantization point (a container, or a module fused "
                               "into its group's head): select one of its points")
            return
        if point is None:
            self._show_message(f"{name}: run calibration to see its values" if not ran else
                               f"{name} was not measured in this result")
            return
        if r is None or r.hist_counts is None:
            why = "it is kept in float" if point.kept_float else \
                "its output is not rounded to int8" if not point.quantized else \
                "none was measured in this result (a PT2E run measures each point's error, not its range: the " \
                "torch.ao backend shows ranges)"
            self._show_message(f"{name} has no activation range to show: {why}")
            return
        edges, counts = np.asarray(r.hist_edges, dtype=np.float64), np.asarray(r.hist_counts, dtype=np.float64)
        self._plot.plot(edges, counts + 1, stepMode="center", fillLevel=0, fillBrush=translucent(FLOAT_COLOR, 80),
                        pen=pg.mkPen(FLOAT_COLOR, width=1.5))
        # Decades (the view is in log10 units): pyqtgraph's own minor labels crowd a short axis; 2 and 5
        # as well when the counts span little more than one decade.
        top = int(np.ceil(np.log10(counts.max() + 1)))
        ticks = [10 ** k * m for k in range(0, top + 1) for m in ((1, 2, 5) if top <= 1 else (1,))]
        self._plot.getAxis("left").setTicks([[(np.log10(t), f"{t:,}") for t in ticks], []])
        lo, hi = float(r.lo), float(r.hi)
        self._range = (lo, hi)
        # The int8 grid's ends (where values clip) and, where the calibrated range is only part of the grid,
        # the calibrated range's top: each line named for what it is.
        grid_pen = pg.mkPen("#5a5a5a", width=1.4, style=Qt.PenStyle.DashLine)
        grid_end = "median call's int8 grid" if r.per_call else "int8 grid"
        lines = [(lo, f"{grid_end} min", (0, 0.5), grid_pen, 0.85), (hi, f"{grid_end} max", (1, 0.5), grid_pen, 0.85)]
        self._calibrated = None
        if r.grid_levels > r.levels_total:
            self._calibrated = (float(r.calibrated_lo), float(r.calibrated_hi))
            top = "median call's range max" if r.per_call else "calibrated max"
            lines.append((self._calibrated[1], top, (1, 0.5), pg.mkPen(TEXT_COLOR, width=1.4), 0.65))
        for value, label, anchor, pen, position in lines:
            self._plot.addItem(pg.InfiniteLine(value, pen=pen, label=f" {label} ", labelOpts={
                "position": position, "color": TEXT_COLOR, "anchors": [anchor, anchor], "fill": (255, 255, 255, 210),
                "movable": False}), ignoreBounds=True)
        x_lo, x_hi = min(float(edges[0]), lo), max(float(edges[-1]), hi)
        shade = translucent(CLIP_COLOR, 40)
        # Shaded only where values were clipped: from the range's end to the furthest value beyond it
        # (one range per call clips nothing: its lines are the median call's).
        if not r.per_call and r.clipped_low > 0 and r.data_min < lo:
            self._plot.addItem(pg.LinearRegionItem((r.data_min, lo), movable=False, brush=shade, pen=pg.mkPen(None)))
        if not r.per_call and r.clipped_high > 0 and r.data_max > hi:
            self._plot.addItem(pg.LinearRegionItem((hi, r.data_max), movable=False, brush=shade, pen=pg.mkPen(None)))
        if r.scale > 0 and (x_hi - x_lo) / r.scale <= MAX_GRID_LEVELS:
            grid = pg.mkPen(0, 0, 0, 40, width=1)
            for q in range(r.qmin, r.qmax + 1):
                value = r.scale * (q - r.zero_point)
                if x_lo <= value <= x_hi:
                    self._plot.addItem(pg.InfiniteLine(value, pen=grid), ignoreBounds=True)
        first = f"{name}: {r.range_text()}"
        second = (f"{r.values:,} values ({r.source}) from {r.data_min:.4g} to {r.data_max:.4g}: {r.levels_text()} "
                  f"used; clipped {_pct(r.clipped_low)} below, {_pct(r.clipped_high)} above; "
                  f"{_pct(r.rounds_to_zero)} round to zero")
        self._title = f"{first}\n{second}"
        key = swatch(FLOAT_COLOR, "values") + ("" if r.per_call else f" &nbsp; {swatch(CLIP_COLOR, 'clipped')}")
        findings = "".join(f"<br><span style='color:#b03000'>⚠ {escape(f.text)}</span>" for f in point.diagnosis[:1])
        if len(point.diagnosis) > 1:
            findings += f" <span style='color:#777'>(+{len(point.diagnosis) - 1} more in the tree's tooltip)</span>"
        self._caption.setText(f"<b>{escape(first)}</b><br>{escape(second)}{findings}<br>{key}")
        self._plot.setXRange(x_lo, x_hi, padding=0.02)
        self._plot.enableAutoRange(axis="y")
        self._stack.setCurrentWidget(self._content)
