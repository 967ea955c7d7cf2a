"""What a search found and what each point is worth: the trade-off of every configuration a tune tried
(clicking one applies it), and the per-point sensitivity, both ways, as ranked bars."""

from __future__ import annotations

import math
from html import escape

import pyqtgraph as pg
from PySide6.QtCore import QPointF, Qt, Signal
from PySide6.QtGui import QColor
from PySide6.QtWidgets import QLabel, QWidget

from .plots import FLOAT_COLOR, QUANT_COLOR, TEXT_COLOR, PlotPanel, plot_widget, short_name, swatch, thin_ticks

TRIED_COLOR = QColor("#9a9a9a")
FRONT_COLOR = FLOAT_COLOR
PATH_COLOR = QUANT_COLOR
TARGET_COLOR = QColor("#2ca02c")
WIDE_COLOR = QColor("#8c564b")  # sensitivity: only this layer at the second width (torchao's 8 bits)
PICK_PX = 12  # how near a click must fall to a configuration's dot


def _axis_label(target) -> str:
    kind = target.kind
    return {"sqnr": "output SQNR (dB)", "cosine": "output cosine", "drop": "accuracy drop (lower is better)"}.get(
        kind, "metric")


def _caption(label: QLabel) -> QLabel:
    label.setWordWrap(True)
    label.setTextFormat(Qt.TextFormat.RichText)
    label.setStyleSheet(f"color: {TEXT_COLOR}; background: white; padding: 4px 6px;")
    return label


class TradeoffPlot(PlotPanel):
    """Every configuration a tune tried: its score against the size of its file, the trade-off front,
    the path the search took and the one it chose. Clicking a configuration emits its step index."""

    step_clicked = Signal(int)
    EMPTY = ("Run Tune to search for the configuration that reaches your target with the fewest points kept "
             "float: every configuration it tries appears here, score against size")

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._view = plot_widget("size of the shipped file (MB)", "score")
        self._plot = self._view.getPlotItem()
        self._add_views([self._view], [1])
        self._caption = _caption(QLabel())
        self._content.layout().insertWidget(0, self._caption)
        self._tune = None
        self._xy: list[tuple[int, float, float]] = []  # (step, x, y) of each distinct configuration drawn
        self._selected: int | None = None
        self._marker = None
        self._pick_items(self._view, self._step_at, self.select_step, self.tooltip_for)
        self.set_tune(None)

    # -- read-only facts ---------------------------------------------------------------------------
    def tune(self):
        """The core TuneResult shown (None when empty)."""
        return self._tune

    def configurations(self) -> list[tuple[int, float, float]]:
        """(step index, size MB, score) of every configuration drawn, one per distinct configuration."""
        return list(self._xy)

    def chosen_step(self) -> int | None:
        return self._tune.path[-1] if self._tune is not None else None

    def selected_step(self) -> int | None:
        """The configuration last clicked (outlined), if any."""
        return self._selected

    def caption_text(self) -> str:
        return self._caption.text()

    def front_steps(self) -> list[int]:
        return self._tune.front() if self._tune is not None else []

    def point_of(self, step: int) -> QPointF:
        """The scene position of a configuration's dot."""
        _i, x, y = next(c for c in self._xy if c[0] == step)
        return self._plot.vb.mapViewToScene(QPointF(x, y))

    # -- data ----------------------------------------------------------------------------------------
    def set_tune(self, tune) -> None:
        """Show a core TuneResult (None: the empty state)."""
        self._plot.clear()
        self._tune, self._xy, self._selected, self._marker = tune, [], None, None
        if tune is None or not tune.steps:
            self._show_message(self.EMPTY)
            return
        seen, xy = set(), []
        for i, step in enumerate(tune.steps):
            if step.scored.config in seen:
                continue
            seen.add(step.scored.config)
            if math.isfinite(step.scored.score):  # an exact output (SQNR inf) has no place on the axis
                xy.append((i, step.scored.size_bytes / 1e6, step.scored.score))
        self._xy = xy
        # Every configuration tried, hollow where it exceeds the budget.
        inside = [(x, y) for i, x, y in xy if tune.steps[i].within_budget]
        outside = [(x, y) for i, x, y in xy if not tune.steps[i].within_budget]
        if inside:
            self._plot.addItem(pg.ScatterPlotItem([p[0] for p in inside], [p[1] for p in inside], size=7,
                                                  brush=pg.mkBrush(TRIED_COLOR), pen=pg.mkPen(None)))
        if outside:
            self._plot.addItem(pg.ScatterPlotItem([p[0] for p in outside], [p[1] for p in outside], size=7,
                                                  brush=pg.mkBrush(None), pen=pg.mkPen(TRIED_COLOR, width=1.2)))
        front = [i for i in tune.front() if math.isfinite(tune.steps[i].scored.score)]
        if len(front) > 1:
            self._plot.addItem(pg.PlotDataItem([tune.steps[i].scored.size_bytes / 1e6 for i in front],
                                               [tune.steps[i].scored.score for i in front],
                                               pen=pg.mkPen(FRONT_COLOR, width=1.5, style=Qt.PenStyle.DashLine)))
        path = [i for i in tune.path if math.isfinite(tune.steps[i].scored.score)]
        self._plot.addItem(pg.PlotDataItem([tune.steps[i].scored.size_bytes / 1e6 for i in path],
                                           [tune.steps[i].scored.score for i in path],
                                           pen=pg.mkPen(PATH_COLOR, width=2), symbol="o", symbolSize=8,
                                           symbolBrush=pg.mkBrush(PATH_COLOR), symbolPen=pg.mkPen(None)))
        best = tune.best
        if math.isfinite(best.score):
            self._plot.addItem(pg.ScatterPlotItem([best.size_bytes / 1e6], [best.score], symbol="star", size=18,
                                                  brush=pg.mkBrush(PATH_COLOR), pen=pg.mkPen("k", width=1)))
        target = pg.InfiniteLine(pos=tune.target.value, angle=0,
                                 pen=pg.mkPen(TARGET_COLOR, width=1.5, style=Qt.PenStyle.DotLine),
                                 label=f"target {tune.target}",
                                 labelOpts={"position": 0.02, "color": TARGET_COLOR, "anchors": [(0, 1), (0, 1)]})
        self._plot.addItem(target)
        self._plot.setLabel("left", _axis_label(tune.target))
        ys = [y for _i, _x, y in xy] + [tune.target.value]
        xs = [x for _i, x, _y in xy] or [best.size_bytes / 1e6]
        span_y = max(max(ys) - min(ys), 1e-6)
        span_x = max(max(xs) - min(xs), max(xs) * 0.05, 1e-6)
        self._plot.setXRange(min(xs) - 0.06 * span_x, max(xs) + 0.06 * span_x, padding=0)
        self._plot.setYRange(min(ys) - 0.08 * span_y, max(ys) + 0.12 * span_y, padding=0)
        self._caption.setText(self._caption_html(tune))
        self._stack.setCurrentWidget(self._content)

    def _caption_html(self, tune) -> str:
        best = tune.best
        floats = sorted(best.config.float_points)
        if getattr(tune, "cancelled", False):
            verdict = "<span style='color:#b03000'>search cancelled</span>: best so far"
        else:
            verdict = "reached" if tune.reached else "<span style='color:#b03000'>not reached</span>"
        kept = f"{len(floats)} point(s) kept float" + (f" ({escape(', '.join(floats[:6]))}"
                                                        f"{', …' if len(floats) > 6 else ''})" if floats else "")
        eight = len(best.config.eight_bit)
        others = len(best.config.overrides) - eight
        overrides = (f", {eight} layer(s) at 8 bits" if eight else "") + (
            f", {others} per-point setting(s)" if others else "")
        if best.bits is not None and (eight or tune.budget.kind == "bits"):
            overrides += f" ({best.bits:.2f} weight bits per value on average)"
        key = " ".join((swatch(PATH_COLOR, "the search's path (★ chosen)"), swatch(FRONT_COLOR, "trade-off front"),
                        swatch(TRIED_COLOR, "tried (hollow: over budget)")))
        return (f"<b>{escape(str(tune.target))}</b> (budget {escape(str(tune.budget))}): {verdict} at "
                f"{best.score:.4g} with {kept}{overrides}; from {tune.start.score:.4g}. {len(tune.steps)} "
                f"configurations, {tune.conversions} conversions of {tune.calibrations} calibration(s), {tune.seconds:.1f} s. "
                f"{'Nothing was applied. ' if getattr(tune, 'cancelled', False) else ''}"
                f"Click a configuration to apply it to the tree.<br>{key}")

    def select_step(self, step: int) -> None:
        """What a click on a configuration does: outline it and emit its step index."""
        if self._tune is None or not 0 <= step < len(self._tune.steps):
            raise ValueError(f"no configuration {step} in this tune")
        self._selected = step
        if self._marker is not None:
            self._plot.removeItem(self._marker)
        s = self._tune.steps[step].scored
        self._marker = pg.ScatterPlotItem([s.size_bytes / 1e6], [s.score], size=16, brush=pg.mkBrush(None),
                                          pen=pg.mkPen("k", width=2))
        self._marker.setZValue(10)
        self._plot.addItem(self._marker)
        self.step_clicked.emit(step)

    def tooltip_for(self, step: int) -> str:
        s = self._tune.steps[step]
        floats = sorted(s.scored.config.float_points)
        settings = "; ".join(f"{n}: " + ", ".join(f"{k} {v}" for k, v in o.to_dict().items())
                             for n, o in s.scored.config.overrides)
        lat = ""
        if s.scored.latency_ms is not None:
            lat = (f", {s.scored.latency_ms:.3g} ms (timed)" if s.scored.measured
                   else f", ~{s.scored.latency_ms:.3g} ms (estimated)")
        return (f"<b>{escape(s.move)}</b><br>score {s.scored.score:.4g}, {s.scored.size_bytes / 1e6:.3f} MB file"
                f"{lat}<br>float: {escape(', '.join(floats)) or 'none'}"
                + (f"<br>{escape(settings)}" if settings else "")
                + ("" if s.within_budget else "<br>over the budget") + "<br>Click to apply it to the tree")

    # -- interaction ---------------------------------------------------------------------------------
    def _step_at(self, scene_pos: QPointF) -> int | None:
        vb = self._plot.vb
        if not self._xy or self.is_empty() or not vb.sceneBoundingRect().contains(scene_pos):
            return None
        best, best_d = None, PICK_PX
        for i, x, y in self._xy:
            p = vb.mapViewToScene(QPointF(x, y))
            d = ((p.x() - scene_pos.x()) ** 2 + (p.y() - scene_pos.y()) ** 2) ** 0.5
            if d < best_d or (best is None and d <= best_d):  # overlapping dots: the first tried
                best, best_d = i, d
        return best


class SensitivityPlot(PlotPanel):
    """Per point, ranked: what keeping only it float gains (blue), and what quantizing only it costs
    against everything float (orange; torchao: orange at 4 bits, brown at 8), in the metric's units.
    Clicking a point's bars selects it."""

    layer_clicked = Signal(str)
    EMPTY = ("Run Sensitivity to measure every toggleable point both ways from one calibration: the metric "
             "with only it kept float, and with only it quantized")

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._view = plot_widget("point (most to gain by keeping it float first)", "metric")
        self._plot = self._view.getPlotItem()
        self._plot.setMouseEnabled(x=True, y=False)
        self._add_views([self._view], [1])
        self._caption = _caption(QLabel())
        self._content.layout().insertWidget(0, self._caption)
        self._names: list[str] = []
        self._gains: list[float | None] = []
        self._costs: list[float | None] = []
        self._width_costs: dict[str, list] = {}
        self._sens = None
        self._pick_items(self._view, self._name_at, self.layer_clicked.emit, self.tooltip_for)
        self._plot.vb.sigXRangeChanged.connect(self._update_ticks)
        self._plot.vb.sigResized.connect(self._update_ticks)
        self.set_sensitivity(None)

    def names(self) -> list[str]:
        return list(self._names)

    def gains(self) -> list[float | None]:
        return list(self._gains)

    def costs(self) -> list[float | None]:
        return list(self._costs)

    def width_costs(self) -> dict[str, list]:
        """{width: what quantizing only each point at it costs} (torchao's 4-bit and 8-bit; empty for int8)."""
        return {label: list(v) for label, v in self._width_costs.items()}

    def caption_text(self) -> str:
        return self._caption.text()

    def bar_center(self, name: str) -> QPointF:
        i = self._names.index(name)
        return self._plot.vb.mapViewToScene(QPointF(i, 0.0))

    def set_sensitivity(self, sens) -> None:
        """Show a core SensitivityResult (None: the empty state)."""
        self._plot.clear()
        self._sens = sens
        if sens is None or not sens.points:
            self._names, self._gains, self._costs, self._width_costs = [], [], [], {}
            self._show_message(self.EMPTY if sens is None else
                               "No point of this model can be kept float: there is nothing to rank")
            return
        self._names = [p.name for p in sens.points]
        self._gains = [sens.gain(p) for p in sens.points]
        self._costs = [sens.cost(p) for p in sens.points]
        # torchao: a cost per width (4-bit, 8-bit) where torch.ao has one (int8)
        labels = sens.width_labels
        self._width_costs = {label: [sens.cost_at(p, label) for p in sens.points] for label in labels}
        series = [(self._gains, FRONT_COLOR)] + ([(self._width_costs[label], color) for label, color in
                                                  zip(labels, (PATH_COLOR, WIDE_COLOR))] if labels else
                                                 [(self._costs, PATH_COLOR)])
        width = 0.8 / len(series)
        for k, (values, color) in enumerate(series):
            offset = (k - (len(series) - 1) / 2) * width
            drawn = [i for i, v in enumerate(values) if v is not None and math.isfinite(v)]
            if drawn:
                self._plot.addItem(pg.BarGraphItem(x=[i + offset for i in drawn], height=[values[i] for i in drawn],
                                                   width=width, brush=pg.mkBrush(color), pen=pg.mkPen(color.darker(130))))
        refused = [i for i, p in enumerate(sens.points) if p.refused]
        if refused:
            self._plot.addItem(pg.ScatterPlotItem(x=refused, y=[0] * len(refused), symbol="x", size=9,
                                                  pen=pg.mkPen("#7a7a7a", width=1.5), brush=None))
        self._plot.setLabel("left", {"sqnr": "SQNR change (dB)", "cosine": "cosine change"}.get(sens.metric,
                                                                                            f"{sens.metric} change"))
        every = self._gains + self._costs + [v for costs in self._width_costs.values() for v in costs]
        values = [v for v in every if v is not None and math.isfinite(v)] or [0.0]
        lo, hi = min(0.0, min(values)), max(0.0, max(values))
        span = max(hi - lo, 1e-6)
        self._plot.setLimits(xMin=-1.0, xMax=len(self._names), minXRange=min(4, len(self._names)))
        self._plot.setXRange(-0.6, len(self._names) - 0.4, padding=0)
        self._plot.setYRange(lo - 0.05 * span, hi + 0.1 * span, padding=0)
        exact = not math.isfinite(sens.all_float)  # no reference to cost against: no cost bars
        key = " ".join([swatch(FRONT_COLOR, "gain: only this point float")]
                       + ([] if exact else [swatch(color, f"cost: only this point {label}") for label, color in
                                            zip(labels or ["int8"], (PATH_COLOR, WIDE_COLOR))]))
        alone = " and ".join(labels) if labels else "int8"
        every_float = f"{sens.all_float:.4g}" if not exact else (
            f"exactly the float outputs (so no cost bars: each point's figure alone in {alone} is in its tooltip)")
        self._caption.setText(
            f"<b>Sensitivity ({escape(sens.metric)})</b>, from one calibration ({sens.conversions} conversions, "
            f"{sens.seconds:.1f} s): every toggleable point {escape(sens.quantized)} {sens.all_int8:.4g}, every one float "
            f"{every_float}. Click a point to select it.<br>{key}")
        self._stack.setCurrentWidget(self._content)
        self._update_ticks()

    def tooltip_for(self, name: str) -> str:
        i = self._names.index(name)
        p = self._sens.points[i]
        if p.refused:
            return f"<b>{escape(name)}</b>: torch cannot keep it float ({escape(p.refused)})"
        gain = "" if self._gains[i] is None else f" (gain {self._gains[i]:+.3g})"
        rows = [f"<b>{escape(name)}</b>", f"only it float: {p.only_float:.4g}{gain}"]
        for label, value in p.widths or (("int8", p.only_int8),):
            cost = self._width_costs[label][i] if p.widths else self._costs[i]
            rows.append(f"only it {escape(label)}: {value:.4g}" + ("" if cost is None else f" (cost {cost:.3g})"))
        return "<br>".join(rows)

    def _name_at(self, scene_pos: QPointF) -> str | None:
        vb = self._plot.vb
        if not self._names or self.is_empty() or not vb.sceneBoundingRect().contains(scene_pos):
            return None
        i = int(round(vb.mapSceneToView(scene_pos).x()))
        return self._names[i] if 0 <= i < len(self._names) else None

    def _update_ticks(self, *_args) -> None:
        thin_ticks(self._plot, [short_name(n) for n in self._names], self.font())
