"""Per-point SQNR bars in model order, local or accumulated; clicking a bar selects its point."""

from __future__ import annotations

import pyqtgraph as pg
from PySide6.QtCore import QPointF, Qt, Signal
from PySide6.QtGui import QColor, QFont
from PySide6.QtWidgets import QComboBox, QHBoxLayout, QLabel, QWidget

from ..core.report.render import SQNR_FAIR_DB, SQNR_GOOD_DB, SQNR_POOR_DB
from .plots import (
    BAR_WIDTH,
    KEPT_FLOAT_COLOR,
    TEXT_COLOR,
    PlotPanel,
    has_height,
    plot_widget,
    short_name,
    sqnr_color,
    swatch,
    thin_ticks,
)

METRICS = {
    "local": ("Local: each point alone in int8",
              "Local SQNR per point (higher is better)",
              "Local: each bar is this point alone in int8 (its weights and its output rounded to its range) on the float "
              "model's values, in dB; the first broken point stands out even when everything after it is bad. "
              "Grey: kept float (what it would cost in int8)."),
    "accumulated": ("Accumulated: the int8 model at that point",
                    "Accumulated SQNR per point (higher is better)",
                    "Accumulated: each bar is the quantized model's tensor at that point against the float model's, in dB; the "
                    "error accumulates along the model, so a point kept float (grey) still shows what reaches it."),
}
COLOURS_TIP = " Red at or below 15 dB, amber at 25 dB, green at or above 35 dB. Click a bar to select its point."


class LayerErrorPlot(PlotPanel):
    """Per-point SQNR in model order, local or accumulated; clicking a bar emits the point's name."""

    layer_clicked = Signal(str)
    EMPTY = "Run calibration to see the error at every quantization point"
    VALUE_LABELS_UP_TO = 24  # bars; beyond that the numbers collide

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._view = plot_widget("quantization point (model order)", "SQNR (dB)")
        self._plot = self._view.getPlotItem()
        self._plot.setMouseEnabled(x=True, y=False)
        self._add_views([self._view], [1])
        self.metric_box = QComboBox()
        for key, (label, _title, tip) in METRICS.items():
            self.metric_box.addItem(label, key)
            self.metric_box.setItemData(self.metric_box.count() - 1, tip, Qt.ItemDataRole.ToolTipRole)
        self.metric_box.currentIndexChanged.connect(self._on_metric_box_changed)
        header = QWidget()
        row = QHBoxLayout(header)
        row.setContentsMargins(6, 2, 6, 0)
        row.addWidget(QLabel("Show"))
        row.addWidget(self.metric_box)
        row.addStretch(1)
        self._content.layout().insertWidget(0, header)
        self._metric = "local"
        self._stale = False
        self._points: list = []
        self._names, self._short, self._heights, self._quantized = [], [], [], []
        self._value_labels: list = []
        self._highlighted: str | None = None
        self._outline: pg.BarGraphItem | None = None
        self._pick_items(self._view, self._name_at, self.layer_clicked.emit, self.tooltip_for)
        self._plot.vb.sigXRangeChanged.connect(self._update_ticks)
        self._plot.vb.sigResized.connect(self._update_ticks)
        self.set_results([])

    # -- read-only facts ---------------------------------------------------------------------------
    def shown_metric(self) -> str:
        """"local" or "accumulated": which SQNR the bars show."""
        return self._metric

    def is_stale(self) -> bool:
        """Whether the bars are from before the latest changes (the title says so)."""
        return self._stale

    def bar_names(self) -> list[str]:
        return list(self._names)

    def bar_heights(self) -> list[float | None]:
        return list(self._heights)

    def highlighted(self) -> str | None:
        return self._highlighted

    def bar_colors(self) -> list[QColor | None]:
        """The fill of each bar; None for a layer drawn as a marker (no SQNR to draw)."""
        return [None if not has_height(h) else sqnr_color(h) if q else QColor(KEPT_FLOAT_COLOR)
                for h, q in zip(self._heights, self._quantized)]

    def bar_center(self, name: str) -> QPointF:
        """The scene position of the middle of `name`'s bar (a stub when it has no height)."""
        i = self._names.index(name)
        h = self._heights[i]
        y = h / 2 if has_height(h) else 0.0
        return self._plot.vb.mapViewToScene(QPointF(i, y))

    # -- data ----------------------------------------------------------------------------------------
    def set_low_bit(self, low_bit: bool) -> None:
        """Word the Show box for the run's kind: int8 points, or torchao's layers at their own bits."""
        for i, (label, _title, tip) in enumerate(METRICS.values()):
            if low_bit:
                label = label.replace("alone in int8", "alone in its bits").replace("int8 model", "quantized model")
                tip = tip.replace("alone in int8", "alone in its bits").replace("int8 model", "quantized model")
            self.metric_box.setItemText(i, label)
            self.metric_box.setItemData(i, tip, Qt.ItemDataRole.ToolTipRole)

    def set_metric(self, metric: str) -> None:
        if metric not in METRICS:
            raise ValueError(f"unknown metric {metric!r}: {', '.join(METRICS)}")
        self._metric = metric
        self.metric_box.setCurrentIndex(list(METRICS).index(metric))
        self.set_results(self._points, self._stale)

    def _on_metric_box_changed(self, index: int) -> None:
        metric = self.metric_box.itemData(index)
        if metric != self._metric:
            self.set_metric(metric)

    def set_results(self, layers, stale: bool = False) -> None:
        """Show core PointResults (or anything with name, quantized, sqnr_db and local_sqnr_db); `stale`:
        from before the latest changes (said in the title)."""
        self._stale = stale
        self._plot.clear()
        self._outline = None
        self._points = list(layers)
        self._names = [layer.name for layer in layers]
        self._heights = [layer.local_sqnr_db if self._metric == "local" else layer.sqnr_db for layer in layers]
        self._quantized = [layer.quantized for layer in layers]
        self._short = [short_name(n) for n in self._names]
        if not layers:
            self._highlighted = None
            self._show_message(self.EMPTY)
            return
        drawn = [i for i, h in enumerate(self._heights) if has_height(h)]
        colors = [c for c in self.bar_colors() if c is not None]
        if drawn:
            self._plot.addItem(pg.BarGraphItem(x=drawn, height=[self._heights[i] for i in drawn], width=BAR_WIDTH,
                                               brushes=colors, pens=[pg.mkPen(c.darker(130)) for c in colors]))
        missing = sorted(set(range(len(layers))) - set(drawn))
        if missing:  # no number to draw, but the layer keeps its slot and stays clickable
            self._plot.addItem(pg.ScatterPlotItem(x=missing, y=[0] * len(missing), symbol="x", size=9,
                                                  pen=pg.mkPen("#7a7a7a", width=1.5), brush=None))
        self._value_labels = []
        for i in drawn if len(layers) <= self.VALUE_LABELS_UP_TO else []:
            label = pg.TextItem(f"{self._heights[i]:.1f}", color=TEXT_COLOR, anchor=(0.5, 1.0))
            label.setFont(QFont(self.font().family(), 8))
            label.setPos(i, max(self._heights[i], 0.0))  # a negative bar's number sits on the baseline, not the axis
            self._plot.addItem(label)
            self._value_labels.append(label)
        key = " ".join(swatch(sqnr_color(db), text) for db, text in (
            (SQNR_POOR_DB, f"≤{SQNR_POOR_DB:.0f}"), (SQNR_FAIR_DB, f"{SQNR_FAIR_DB:.0f}"),
            (SQNR_GOOD_DB, f"≥{SQNR_GOOD_DB:.0f} dB")))
        if not all(self._quantized):
            key += f" &nbsp; {swatch(KEPT_FLOAT_COLOR, 'kept in float')}"
        title = METRICS[self._metric][1]
        if self._stale:
            title = f"<span style='color:#a04000'>{title}: the last run's, before your changes</span>"
        self._plot.setTitle(f"{title}<br>{key}", color=TEXT_COLOR, size="10pt")
        finite = [self._heights[i] for i in drawn] or [0.0]
        lo, hi = min(0.0, min(finite)), max(0.0, max(finite))
        span = max(hi - lo, 1.0)
        self._plot.setLimits(xMin=-1.0, xMax=len(layers), minXRange=min(4, len(layers)))
        self._plot.setXRange(-0.6, len(layers) - 0.4, padding=0)
        self._plot.setYRange(lo - (0.05 * span if lo < 0 else 0), hi + 0.12 * span, padding=0)
        self._stack.setCurrentWidget(self._content)
        self.highlight(self._highlighted)
        self._update_ticks()

    def highlight(self, name: str | None) -> None:
        if self._outline is not None:
            self._plot.removeItem(self._outline)
            self._outline = None
        self._highlighted = name if name in self._names else None
        if self._highlighted is None:
            return
        i = self._names.index(self._highlighted)
        h = self._heights[i] if has_height(self._heights[i]) else 0.04 * (self._plot.vb.viewRange()[1][1] or 1.0)
        self._outline = pg.BarGraphItem(x=[i], height=[h], width=BAR_WIDTH + 0.08, brush=pg.mkBrush(None),
                                        pen=pg.mkPen("k", width=2.5))
        self._outline.setZValue(10)
        self._plot.addItem(self._outline)

    # -- interaction ---------------------------------------------------------------------------------
    def _name_at(self, scene_pos: QPointF) -> str | None:
        vb = self._plot.vb
        if not self._names or self.is_empty() or not vb.sceneBoundingRect().contains(scene_pos):
            return None
        x = vb.mapSceneToView(scene_pos).x()
        i = int(round(x))
        return self._names[i] if 0 <= i < len(self._names) and abs(x - i) <= BAR_WIDTH / 2 + 0.04 else None

    def tooltip_for(self, name: str) -> str:
        i = self._names.index(name)
        h = self._heights[i]
        text = f"{name}: no measurable error" if h is None else f"{name}: {h:.1f} dB"
        text = text if self._quantized[i] else f"{text} (kept in float)"
        point = self._points[i]
        diagnosis = "".join(f"<br>⚠ {f.text}" for f in getattr(point, "diagnosis", ()))
        return f"<b>{text}</b>{diagnosis}<br>{METRICS[self._metric][2]}{COLOURS_TIP}"

    def _update_ticks(self, *_args) -> None:
        # The numbers over the bars need about 34 pixels each: shown only while the bars are that wide.
        lo_x, hi_x = self._plot.vb.viewRange()[0]
        room = self._plot.vb.width() / max(hi_x - lo_x, 1e-9)
        for label in self._value_labels:
            label.setVisible(room >= 34)
        self._labelled = thin_ticks(self._plot, self._short, self.font())

    def labelled_ticks(self) -> list[tuple[int, str]]:
        """The (bar index, label) pairs the x axis shows now (the rest are unlabelled minor ticks)."""
        return list(getattr(self, "_labelled", []))
