"""The Runs panel: every run of the session in a list; two of them side by side (settings that differ,
output figures, size, latency) and each point's local or accumulated SQNR as paired bars. It shows the
core's comparison (`report.comparison.compare`) of the runs' report.json dicts and computes nothing."""

from __future__ import annotations

import pyqtgraph as pg
from PySide6.QtCore import Qt
from PySide6.QtGui import QColor, QFont
from PySide6.QtWidgets import (
    QApplication,
    QComboBox,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QSplitter,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from ..core.report.comparison import Comparison
from .plots import KEPT_FLOAT_COLOR, TEXT_COLOR, has_height, plot_widget, short_name, swatch, thin_ticks

A_COLOR, B_COLOR = QColor("#7f8fa6"), QColor("#2e7dd7")
FIGURE_COLUMNS = ("", "A", "B", "B against A")


class RunsPanel(QWidget):
    """`show_runs(history)` after each run; pick A and B in the combos (B: the newest by default)."""

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self._history = None
        self.comparison: Comparison | None = None
        self.a_box, self.b_box = QComboBox(), QComboBox()
        for box in (self.a_box, self.b_box):
            box.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToContents)
            box.currentIndexChanged.connect(self._on_choice_changed)
        self.metric_box = QComboBox()
        self.metric_box.addItem("local SQNR", "local")
        self.metric_box.addItem("accumulated SQNR", "accumulated")
        self.metric_box.currentIndexChanged.connect(lambda _i: self._draw_points())
        self.copy_button = QPushButton("Copy")
        self.copy_button.setToolTip("Copy the comparison as text")
        self.copy_button.clicked.connect(self._on_copy_clicked)
        top = QHBoxLayout()
        top.addWidget(QLabel("Compare A"))
        top.addWidget(self.a_box, 1)
        top.addWidget(QLabel("with B"))
        top.addWidget(self.b_box, 1)
        top.addWidget(self.metric_box)
        top.addWidget(self.copy_button)
        self.empty = QLabel("Each run of this session is kept here. Run twice (another engine, a point kept "
                            "float, QAT) to compare two runs side by side.")
        self.empty.setWordWrap(True)
        self.empty.setStyleSheet("color: #666; padding: 6px;")
        self.settings_label = QLabel()
        self.settings_label.setWordWrap(True)
        self.settings_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.table = QTableWidget(0, len(FIGURE_COLUMNS))
        self.table.setHorizontalHeaderLabels(list(FIGURE_COLUMNS))
        self.table.verticalHeader().setVisible(False)
        self.table.horizontalHeader().setStretchLastSection(True)
        self.table.setEditTriggers(QTableWidget.EditTrigger.NoEditTriggers)
        left = QWidget()
        lv = QVBoxLayout(left)
        lv.setContentsMargins(0, 0, 0, 0)
        lv.addWidget(self.settings_label)
        lv.addWidget(self.table, 1)
        self._view = plot_widget("quantization point (model order)", "SQNR (dB)")
        self._plot = self._view.getPlotItem()
        self._plot.setMouseEnabled(x=True, y=False)
        self._plot.vb.sigXRangeChanged.connect(self._update_ticks)
        self._plot.vb.sigResized.connect(self._update_ticks)
        self.body = QSplitter(Qt.Orientation.Horizontal)
        self.body.addWidget(left)
        self.body.addWidget(self._view)
        self.body.setStretchFactor(0, 2)
        self.body.setStretchFactor(1, 3)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(4, 4, 4, 4)
        layout.addLayout(top)
        layout.addWidget(self.empty)
        layout.addWidget(self.body, 1)
        self._short: list[str] = []
        self._pairs: list[tuple] = []
        self.show_runs(None)

    # -- read-only facts (tests, the driving script) -----------------------------------------------
    def run_numbers(self) -> list[int]:
        return [self.a_box.itemData(i) for i in range(self.a_box.count())]

    def chosen(self) -> tuple[int | None, int | None]:
        return self.a_box.currentData(), self.b_box.currentData()

    def figure_rows(self) -> list[tuple[str, str, str, str]]:
        return [tuple(self.table.item(r, c).text() for c in range(len(FIGURE_COLUMNS)))
                for r in range(self.table.rowCount())]

    def bar_pairs(self) -> list[tuple[str, float | None, float | None]]:
        """(point, A's bar, B's bar) for the SQNR shown."""
        return list(self._pairs)

    # -- data ----------------------------------------------------------------------------------------
    def show_runs(self, history) -> None:
        """The session's runs; A and B stay where they were, else the two newest."""
        self._history = history
        records = list(history.records) if history is not None else []
        a, b = self.chosen()
        numbers = [r.number for r in records]
        for box in (self.a_box, self.b_box):
            box.blockSignals(True)
            box.clear()
            for r in records:
                box.addItem(r.label, r.number)
            box.blockSignals(False)
        if len(records) >= 2:
            if a not in numbers or b not in numbers or a == b:
                a, b = numbers[-2], numbers[-1]
            self.select(a, b)
        else:
            self._show(None)

    def select(self, a: int, b: int) -> None:
        for box, n in ((self.a_box, a), (self.b_box, b)):
            box.blockSignals(True)
            box.setCurrentIndex(box.findData(n))
            box.blockSignals(False)
        self._show(self._history.compare(a, b) if self._history is not None else None)

    def _on_choice_changed(self, _index: int) -> None:
        a, b = self.chosen()
        if a is not None and b is not None:
            self.select(a, b)

    def _show(self, comparison: Comparison | None) -> None:
        self.comparison = comparison
        self.empty.setVisible(comparison is None)
        self.body.setVisible(comparison is not None)
        self.copy_button.setEnabled(comparison is not None)
        if comparison is None:
            self.table.setRowCount(0)
            self._pairs = []
            return
        c = comparison
        self.table.setRowCount(len(c.figures) + 1)
        rows = [(r.label, r.text("a"), r.text("b"), r.change) for r in c.figures]
        rows.append(("verdict", c.verdicts[0].upper(), c.verdicts[1].upper(), ""))
        for i, cells in enumerate(rows):
            for j, text in enumerate(cells):
                item = QTableWidgetItem(text)
                if j in (1, 2):
                    item.setTextAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
                if j == 3 and text.endswith("(worse)"):
                    item.setForeground(QColor("#a04000"))
                self.table.setItem(i, j, item)
        self.table.resizeColumnsToContents()
        needed = self.table.horizontalHeader().length() + self.table.verticalScrollBar().sizeHint().width() + 8
        total = sum(self.body.sizes()) or self.body.width()
        if total > 0:  # the figures whole beside the bars, up to half the panel
            left = min(needed, total // 2)
            self.body.setSizes([left, total - left])
        differ = [f"{k}: {_v(x)} → {_v(y)}" for k, x, y in c.settings]
        differ += [f"float only in A: {', '.join(c.float_only_a)}"] if c.float_only_a else []
        differ += [f"float only in B: {', '.join(c.float_only_b)}"] if c.float_only_b else []
        self.settings_label.setText("<b>Settings that differ:</b> " + ("; ".join(differ) if differ else
                                                                     "none (the same configuration run twice)"))
        self._draw_points()

    def _draw_points(self) -> None:
        c = self.comparison
        self._plot.clear()
        if c is None:
            return
        local = self.metric_box.currentData() == "local"
        self._pairs = [(p.name, p.local_a if local else p.accumulated_a, p.local_b if local else p.accumulated_b)
                       for p in c.points]
        kept = [(p.float_a, p.float_b) for p in c.points]
        self._short = [short_name(n) for n, _a, _b in self._pairs]
        for offset, side, color in ((-0.2, 1, A_COLOR), (0.2, 2, B_COLOR)):
            drawn = [i for i, pair in enumerate(self._pairs) if has_height(pair[side])]
            if drawn:  # a point kept float in that run: grey, as in the per-point chart (its figure is "if int8")
                brushes = [QColor(KEPT_FLOAT_COLOR) if kept[i][side - 1] else color for i in drawn]
                self._plot.addItem(pg.BarGraphItem(x=[i + offset for i in drawn],
                                                   height=[self._pairs[i][side] for i in drawn], width=0.38,
                                                   brushes=brushes, pens=[b.darker(130) for b in brushes]))
        key = f"{swatch(A_COLOR, 'A')} {swatch(B_COLOR, 'B')}"
        if any(a or b for a, b in kept):
            key += f" {swatch(QColor(KEPT_FLOAT_COLOR), 'kept in float (its figure if int8)')}"
        self._plot.setTitle(f"{'Local' if local else 'Accumulated'} SQNR per point, A and B<br>{key}",
                            color=TEXT_COLOR, size="10pt")
        values = [v for _n, a, b in self._pairs for v in (a, b) if has_height(v)] or [0.0]
        lo, hi = min(0.0, min(values)), max(0.0, max(values))
        n = max(len(self._pairs), 1)
        self._plot.setLimits(xMin=-1.0, xMax=n, minXRange=min(4, n))
        self._plot.setXRange(-0.6, n - 0.4, padding=0)
        self._plot.setYRange(lo, hi + 0.1 * max(hi - lo, 1.0), padding=0)
        self._update_ticks()

    def _update_ticks(self, *_args) -> None:
        if self._short:
            thin_ticks(self._plot, self._short, QFont(self.font()))

    def _on_copy_clicked(self) -> None:
        if self.comparison is not None:
            a, b = self.chosen()
            QApplication.clipboard().setText(self.comparison.text(f"#{a}", f"#{b}"))


def _v(x) -> str:
    return "default" if x is None else str(x)
