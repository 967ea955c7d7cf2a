"""Shared plot helpers, and two result plots: one layer's weight histogram and float-vs-quantized output.
The per-point bars live in point_plot.py, the activation range in range_plot.py.

Each plot only shows core data (`PointResult`, `WeightData`, `OutputMetrics`) handed to it; it keeps no
state of its own beyond what it draws, and exposes read-only facts about what it drew for tests.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import Qt
from PySide6.QtGui import QColor
from PySide6.QtWidgets import QFileDialog, QHBoxLayout, QLabel, QStackedLayout, QToolTip, QVBoxLayout, QWidget

from ..core.report.render import sqnr_colour

if TYPE_CHECKING:  # the core module pulls nothing heavy, but the plots need only its shapes
    from ..core.analysis.compare import OutputMetrics, WeightData

# Before any PlotWidget exists: printed-figure look, whatever the desktop theme.
pg.setConfigOptions(antialias=True)
pg.setConfigOption("background", "w")
pg.setConfigOption("foreground", "k")

FLOAT_COLOR = QColor("#1f77b4")
QUANT_COLOR = QColor("#e8710a")
KEPT_FLOAT_COLOR = QColor("#b4b4b4")
TEXT_COLOR = "#444444"
STALE_COLOR = "#a04000"  # figures of a run made before the settings changed
BAR_WIDTH = 0.72


def sqnr_color(db: float | None) -> QColor:
    """render.sqnr_colour as a QColor: the one scale the tree, the plots and report.html share."""
    return QColor(sqnr_colour(db))


def short_name(name: str, limit: int = 18) -> str:
    """The tail of a dotted module name that fits in `limit` characters, '…'-prefixed when cut."""
    if len(name) <= limit:
        return name
    parts = name.split(".")
    out = parts[-1][-(limit - 1):]
    for part in reversed(parts[:-1]):
        if len(part) + len(out) + 2 > limit:
            break
        out = f"{part}.{out}"
    return f"…{out}"


def int_dtype_name(qmin: int, qmax: int) -> str:
    for bits in (8, 16, 32):
        if (qmin, qmax) == (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1):
            return f"int{bits}"
        if (qmin, qmax) == (0, 2 ** bits - 1):
            return f"uint{bits}"
    return f"[{qmin}, {qmax}]"


def _elastic_title(item) -> None:
    """pyqtgraph makes a plot at least as wide as its title; a long title then pushes the plot's right
    side out of view in a narrow window. Keep only the title's height as a minimum."""
    label = item.titleLabel

    def update_min() -> None:
        bounds = label.itemRect()
        label.setMinimumWidth(0)
        label.setMinimumHeight(bounds.height())

    label.updateMin = update_min


def plot_widget(bottom: str, left: str) -> pg.PlotWidget:
    view = pg.PlotWidget()
    view.setMinimumWidth(200)
    item = view.getPlotItem()
    _elastic_title(item)
    for side, text in (("bottom", bottom), ("left", left)):
        item.setLabel(side, text, color=TEXT_COLOR)
        item.getAxis(side).enableAutoSIPrefix(False)
    item.showGrid(x=False, y=True, alpha=0.25)
    item.hideButtons()
    return view


def legend(item: pg.PlotItem, offset: tuple[int, int] = (-8, 8)) -> None:
    item.addLegend(offset=offset, labelTextColor=TEXT_COLOR, labelTextSize="8pt",
                   brush=pg.mkBrush(255, 255, 255, 215), pen=pg.mkPen(200, 200, 200))


def finite(values) -> np.ndarray:
    flat = np.asarray(values, dtype=np.float64).ravel()
    return flat[np.isfinite(flat)]


def thin_ticks(plot: pg.PlotItem, labels: list[str], font) -> list[tuple[int, str]]:
    """Label every k-th category on the bottom axis so that the labels in view do not collide (the
    others get unlabelled minor ticks); the (index, label) pairs labelled."""
    import math

    from PySide6.QtGui import QFontMetrics

    axis = plot.getAxis("bottom")
    if not labels:
        axis.setTicks(None)
        return []
    lo, hi = plot.vb.viewRange()[0]
    visible = max(1, min(len(labels) - 1, math.floor(hi)) - max(0, math.ceil(lo)) + 1)
    metrics = QFontMetrics(axis.style.get("tickFont") or font)
    label_px = max(metrics.horizontalAdvance(s) for s in labels) + 14
    every = max(1, math.ceil(visible * label_px / max(plot.vb.width(), 1.0)))
    major = [(i, s) for i, s in enumerate(labels) if i % every == 0]
    minor = [(i, "") for i in range(len(labels)) if i % every]
    axis.setTicks([major, minor])
    return major


def has_height(db: float | None) -> bool:
    return db is not None and math.isfinite(db)


def even_edges(lo: float, hi: float, bins: int) -> np.ndarray:
    if hi <= lo:  # all values equal: a bin around them
        lo, hi = lo - max(abs(lo), 1e-3) * 0.5, hi + max(abs(hi), 1e-3) * 0.5
    return np.linspace(lo, hi, bins + 1)


def swatch(color: QColor, text: str) -> str:
    """A coloured square and its meaning, as title HTML: the plots' keys live in their titles, where a
    legend box cannot cover the data."""
    return f'<span style="color:{color.name()}">&#9632;</span> {text}'


def translucent(color: QColor, alpha: int) -> QColor:
    return QColor(color.red(), color.green(), color.blue(), alpha)


class PlotPanel(QWidget):
    """A plot area that switches to a centred message while there is nothing to show."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._stack = QStackedLayout(self)
        self._message = QLabel(alignment=Qt.AlignmentFlag.AlignCenter, wordWrap=True)
        self._message.setObjectName("plotEmptyState")
        self._message.setStyleSheet("QLabel#plotEmptyState { background: white; color: #6b6b6b;"
                                    " border: 1px solid #d4d4d4; padding: 24px; }")
        self._content = QWidget()
        self._stack.addWidget(self._message)
        self._stack.addWidget(self._content)

    def _show_message(self, text: str) -> None:
        self._message.setText(text)
        self._stack.setCurrentWidget(self._message)

    def is_empty(self) -> bool:
        return self._stack.currentWidget() is self._message

    def message(self) -> str:
        """The empty-state text ('' while a plot is shown)."""
        return self._message.text() if self.is_empty() else ""

    def export_png(self, path: str) -> None:
        if not self.grab().save(str(path), "PNG"):
            raise OSError(f"could not write a PNG to {path}")

    def _add_views(self, views: list[pg.PlotWidget], stretches: list[int], layout_type=QVBoxLayout) -> None:
        layout = layout_type(self._content)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.setSpacing(0)
        for view, stretch in zip(views, stretches):
            view.getPlotItem().vb.menu.addAction("Export as PNG…", self._on_menu_export)
            layout.addWidget(view, stretch)

    def _pick_items(self, view, item_at, on_pick, tooltip_for) -> None:
        """A left click on an item of `view` (`item_at(scene position)`, None off every item) calls
        `on_pick(item)`; hovering one shows `tooltip_for(item)`."""

        def clicked(event) -> None:
            if event.button() == Qt.MouseButton.LeftButton:
                item = item_at(event.scenePos())
                if item is not None:
                    on_pick(item)

        def moved(scene_pos) -> None:
            item = item_at(scene_pos)
            if item is None:
                QToolTip.hideText()
            else:
                QToolTip.showText(view.mapToGlobal(view.mapFromScene(scene_pos)), tooltip_for(item), view)

        view.scene().sigMouseClicked.connect(clicked)
        view.scene().sigMouseMoved.connect(moved)

    def _on_menu_export(self) -> None:
        path, _ = QFileDialog.getSaveFileName(self, "Export plot as PNG", "plot.png", "PNG (*.png)")
        if path:
            self.export_png(path if path.lower().endswith(".png") else f"{path}.png")


class WeightHistogramPlot(PlotPanel):
    """One layer's float and dequantized weights, the representable range, and per-channel ranges."""

    EMPTY = "Select a quantized layer with weights to see its histogram"
    MAX_GRID_LEVELS = 64  # more quantization levels than this across the data are just a grey smear

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._hist_view, self._chan_view = plot_widget("weight value", "count"), plot_widget("output channel", "weight value")
        self._hist, self._chan = self._hist_view.getPlotItem(), self._chan_view.getPlotItem()
        self._add_views([self._hist_view, self._chan_view], [3, 2])
        self._note = pg.TextItem("", color="#8a4b00", anchor=(0, 0))
        self._note.setParentItem(self._hist.vb)
        self._note.setPos(8, 6)
        self._name, self._range, self._channels = None, None, 0
        self.set_layer(None, None)

    def layer_name(self) -> str | None:
        return self._name

    def range_lines(self) -> tuple[float, float] | None:
        """The per-tensor representable range drawn as two lines, or None."""
        return self._range

    def curve_names(self) -> list[str]:
        """The legend names of the histogram curves, e.g. ['float', 'int8 dequantized']."""
        return [item.name() for item in self._hist.listDataItems() if item.name()]

    def channel_count(self) -> int:
        """How many per-channel ranges are drawn (0 unless the layer is quantized per channel)."""
        return self._channels

    def set_layer(self, name: str | None, weight: WeightData | None) -> None:
        self._name, self._range, self._channels = name, None, 0
        self._hist.clear()
        self._chan.clear()
        self._note.setText("")
        fw = None if weight is None or weight.float_weight is None else finite(weight.float_weight)
        dq = None if weight is None or weight.dequantized is None else finite(weight.dequantized)
        if name is None or fw is None or fw.size == 0:
            self._show_message(self.EMPTY if name is None else f"{name} has no weights to show\n"
                               "(it has no weight tensor, or has not been quantized yet)")
            return
        values = fw if dq is None else np.concatenate([fw, dq])
        lo, hi = float(values.min()), float(values.max())
        n_scales = 0 if dq is None or weight.scales is None or weight.qscheme == "float16" else np.size(weight.scales)
        dtype = "float16" if weight.qscheme == "float16" else int_dtype_name(weight.qmin, weight.qmax)
        edges = self._edges(weight, lo, hi, fw.size, n_scales == 1)
        self._hist.plot(edges, np.histogram(fw, edges)[0], stepMode="center", fillLevel=0, name="float",
                        fillBrush=translucent(FLOAT_COLOR, 70), pen=pg.mkPen(FLOAT_COLOR, width=1.5))
        if dq is None:
            scheme = "kept in float"
            self._note.setText("kept in float")
        else:
            self._hist.plot(edges, np.histogram(dq, edges)[0], stepMode="center", pen=pg.mkPen(QUANT_COLOR, width=2),
                            name="float16" if dtype == "float16" else f"{dtype} dequantized")
            axis = f", axis {weight.axis}" if weight.axis is not None and n_scales > 1 else ""
            scheme = dtype if dtype == "float16" else f"{weight.qscheme} ({dtype}{axis})"
        names = [item.name() for item in self._hist.listDataItems() if item.name()]
        key = " &nbsp; ".join(swatch(c, n) for c, n in zip((FLOAT_COLOR, QUANT_COLOR), names))
        self._hist.setTitle(f"<b>{name}</b> — {scheme}<br>{key}", color=TEXT_COLOR, size="10pt")
        if n_scales == 1:
            lo, hi = self._draw_per_tensor(weight, dtype, lo, hi)
        self._hist.setXRange(lo, hi, padding=0.04)
        self._hist.enableAutoRange(axis="y")
        if n_scales > 1:
            self._draw_channels(weight, dtype)
        self._chan_view.setVisible(n_scales > 1)
        self._stack.setCurrentWidget(self._content)

    @staticmethod
    def _edges(weight: WeightData, lo: float, hi: float, count: int, per_tensor: bool) -> np.ndarray:
        bins = int(np.clip(1.5 * math.sqrt(count), 24, 120))
        scale = float(np.ravel(weight.scales)[0]) if per_tensor else 0.0
        if scale > 0:  # bins on the quantization grid, so the dequantized histogram does not alias
            zp = float(np.ravel(weight.zero_points)[0])
            q_lo, q_hi = math.floor(lo / scale + zp), math.ceil(hi / scale + zp)
            step = max(1, math.ceil((q_hi - q_lo + 1) / bins))
            return (np.arange(q_lo, q_hi + step + 1, step) - 0.5 - zp) * scale
        return even_edges(lo, hi, bins)

    def _draw_per_tensor(self, weight: WeightData, dtype: str, lo: float, hi: float) -> tuple[float, float]:
        """Lines at the ends of the representable range, and the levels when few enough to tell apart;
        returns the x extent that shows both the data and the range."""
        scale, zp = float(np.ravel(weight.scales)[0]), float(np.ravel(weight.zero_points)[0])
        self._range = (scale * (weight.qmin - zp), scale * (weight.qmax - zp))
        pen = pg.mkPen("#5a5a5a", width=1.3, style=Qt.PenStyle.DashLine)
        # Labels half-way up and on the inner side of each line: clear of the legend and of the tails.
        for value, end, anchor in ((self._range[0], "min", (0, 0.5)), (self._range[1], "max", (1, 0.5))):
            self._hist.addItem(pg.InfiniteLine(value, pen=pen, label=f" {dtype} {end} ", labelOpts={
                "position": 0.55, "color": TEXT_COLOR, "anchors": [anchor, anchor], "fill": (255, 255, 255, 210),
                "movable": False}), ignoreBounds=True)
        if scale > 0 and (hi - lo) / scale <= self.MAX_GRID_LEVELS:
            grid_pen = pg.mkPen(0, 0, 0, 28, width=1)
            q_lo = max(weight.qmin, math.floor(lo / scale + zp))  # only levels that exist
            for q in range(q_lo, min(weight.qmax, math.ceil(hi / scale + zp)) + 1):
                self._hist.addItem(pg.InfiniteLine(scale * (q - zp), pen=grid_pen), ignoreBounds=True)
        return min(lo, self._range[0]), max(hi, self._range[1])

    def _draw_channels(self, weight: WeightData, dtype: str) -> None:
        axis = weight.axis or 0
        w = np.asarray(weight.float_weight, dtype=np.float64)
        rows = np.moveaxis(w, axis, 0).reshape(w.shape[axis], -1)
        scales = np.asarray(weight.scales, dtype=np.float64).ravel()
        zps = np.asarray(weight.zero_points, dtype=np.float64).ravel()
        x = np.arange(len(scales))
        self._channels = len(scales)
        rep = translucent(QUANT_COLOR, 80)
        # A pen of the fill colour keeps bars at least a pixel wide when there are hundreds of channels.
        self._chan.addItem(pg.BarGraphItem(x=x, y0=scales * (weight.qmin - zps), y1=scales * (weight.qmax - zps),
                                           width=0.9, brush=rep, pen=pg.mkPen(rep)))
        self._chan.addItem(pg.BarGraphItem(x=x, y0=rows.min(axis=1), y1=rows.max(axis=1), width=0.45,
                                           brush=FLOAT_COLOR, pen=pg.mkPen(FLOAT_COLOR)))
        key = f"{swatch(FLOAT_COLOR, 'float min–max')} &nbsp; {swatch(QUANT_COLOR.lighter(150), f'{dtype} range')}"
        self._chan.setTitle(f"Per-channel ranges, {self._channels} output channels<br>{key}",
                            color=TEXT_COLOR, size="9pt")
        self._chan.setXRange(-0.6, self._channels - 0.4, padding=0)
        self._chan.enableAutoRange(axis="y")


class OutputErrorPlot(PlotPanel):
    """Float versus quantized model outputs as a scatter, and the distribution of their difference."""

    EMPTY = "Run calibration to see output error"

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._scatter_view = plot_widget("float output", "quantized output")
        self._error_view = plot_widget("error (quantized − float)", "count")
        self._scatter, self._error = self._scatter_view.getPlotItem(), self._error_view.getPlotItem()
        self._scatter.showGrid(x=True, y=True, alpha=0.25)
        self._add_views([self._scatter_view, self._error_view], [1, 1], QHBoxLayout)
        self._points = 0
        self.set_metrics(None)

    def point_count(self) -> int:
        return self._points

    def set_metrics(self, metrics: OutputMetrics | None, stale: bool = False) -> None:
        """Show a run's outputs; `stale`: that run was made with other settings than those in force now,
        so its figures are greyed and their title says so."""
        self._scatter.clear()
        self._error.clear()
        self._points = 0
        ref = None if metrics is None or metrics.ref_values is None else np.asarray(metrics.ref_values, np.float64).ravel()
        q = None if metrics is None or metrics.q_values is None else np.asarray(metrics.q_values, np.float64).ravel()
        if ref is None or q is None or ref.size == 0 or ref.size != q.size:
            self._show_message(self.EMPTY)
            return
        self._points = int(ref.size)
        legend(self._scatter, offset=(8, 8))  # top left: the points lie along the diagonal
        lo, hi = float(min(ref.min(), q.min())), float(max(ref.max(), q.max()))
        self._scatter.plot([lo, hi], [lo, hi], pen=pg.mkPen("#5a5a5a", width=1.2, style=Qt.PenStyle.DashLine),
                           name="y = x (no error)")
        self._scatter.addItem(pg.ScatterPlotItem(ref, q, size=4, pen=None, brush=translucent(FLOAT_COLOR, 90),
                                                 name=f"{self._points} output values"))
        sqnr = "" if metrics.sqnr_db is None else f", SQNR {metrics.sqnr_db:.1f} dB"
        # stale: said on a second line, short enough for the narrow plot (on one line it was cut at both ends)
        self._scatter.setTitle(f"Outputs{sqnr}<br>(before your changes)" if stale else f"Outputs{sqnr}",
                               color=STALE_COLOR if stale else TEXT_COLOR, size="10pt")
        err = q - ref
        # Bin the central 99.8%: a few outliers would otherwise squeeze the whole distribution into
        # one bar. How many fell outside is said in the title.
        lo_e, hi_e = (float(v) for v in np.percentile(err, [0.1, 99.9]))
        if hi_e <= lo_e:
            lo_e, hi_e = float(err.min()), float(err.max())
        outside = int(((err < lo_e) | (err > hi_e)).sum())
        edges = even_edges(lo_e, hi_e, int(np.clip(math.sqrt(err.size), 20, 80)))
        self._error.plot(edges, np.histogram(err, edges)[0], stepMode="center", fillLevel=0,
                         fillBrush=translucent(QUANT_COLOR, 90), pen=pg.mkPen(QUANT_COLOR, width=1.5))
        self._error.addItem(pg.InfiniteLine(0.0, pen=pg.mkPen("#5a5a5a", width=1, style=Qt.PenStyle.DashLine)),
                            ignoreBounds=True)
        title = f"Error: std {err.std():.2g}, max {np.abs(err).max():.2g}"  # short: it must fit a narrow plot
        self._error.setTitle(title + (f", {outside} off-scale" if outside else ""),
                             color=TEXT_COLOR, size="10pt")
        self.error_range = (lo_e, hi_e, outside)
        self._scatter.autoRange()
        self._error.autoRange()
        self._stack.setCurrentWidget(self._content)

    def error_title(self) -> str:
        """The error histogram's title as drawn (its text, without markup)."""
        return self._error.titleLabel.text

    def outputs_title(self) -> str:
        """The scatter's title as drawn (its text, without markup)."""
        return self._scatter.titleLabel.text
