"""The Tune panel: a target, a budget and a metric, read by the core's own parsers; Tune and Sensitivity
buttons. It holds no state of its own beyond the text the user typed."""

from __future__ import annotations

from PySide6.QtCore import Signal
from PySide6.QtWidgets import (
    QComboBox,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QVBoxLayout,
)

from ..core.analysis.metrics import Target
from ..core.base.errors import UsageError
from ..core.config.metric_names import BUILTIN, check_metric_name
from ..core.tune.search import Budget

METRIC_TIPS = {
    "sqnr": "Output SQNR of int8 against float, in dB",
    "cosine": "Mean cosine similarity of each sample's int8 output to its float one",
    "top1": "Top-1 accuracy: a classifier's outputs, with labels that are its class ids",
    "retrieval@1": "Embeddings: the share of samples whose int8 embedding's nearest float one is their own",
}


class TunePanel(QGroupBox):
    """Emits `tune_requested(Target, Budget)` and `sensitivity_requested()`; `metric_changed(name)`
    when the metric the report, sensitivity and tune score is changed (None: the default, sqnr)."""

    tune_requested = Signal(object, object)
    sensitivity_requested = Signal()
    metric_changed = Signal(object)

    def __init__(self, parent=None) -> None:
        super().__init__("Tune", parent)
        self.target_edit = QLineEdit("sqnr>=30")
        self.target_edit.setToolTip("What the search must reach: sqnr>=30 (output SQNR, dB), cosine>=0.999, "
                                    "drop<=1 (top-1 points lost; needs labels) or metric>=X (with the metric below)")
        self.budget_edit = QLineEdit()
        self.budget_edit.setPlaceholderText("no limit (e.g. float<=3, size<=5MB)")
        self.budget_edit.setToolTip("What the search may give up at most: float<=3 (points kept float), float<=10% "
                                    "(a share of them), size<=5MB or latency<=8ms (estimates), bits<=4.5 (weight "
                                    "bits per value on average: torchao's mix of 4 and 8)")
        self.metric_box = QComboBox()
        self.metric_box.setEditable(True)
        self.metric_box.addItem("sqnr (default)", None)
        for name in BUILTIN[1:]:
            self.metric_box.addItem(name, name)
            self.metric_box.setItemData(self.metric_box.count() - 1, METRIC_TIPS[name], 3)  # ToolTipRole
        self.metric_box.setToolTip("What the report, sensitivity and tune score. Type package.module:function or "
                                   "file.py:function for your own: fn(float_outputs, quantized_outputs, labels) -> "
                                   "number, higher is better (typing it runs that code)")
        self.metric_box.lineEdit().editingFinished.connect(self._on_metric_edited)
        self.metric_box.activated.connect(lambda _i: self._on_metric_edited())
        self.tune_button = QPushButton("Tune")
        self.tune_button.setToolTip("Search for the configuration that reaches the target with the fewest points "
                                    "kept float, from one calibration; the result is applied to the tree")
        self.tune_button.clicked.connect(self._on_tune)
        self.sensitivity_button = QPushButton("Sensitivity")
        self.sensitivity_button.setToolTip("Measure every toggleable point both ways: only it float, only it int8")
        self.sensitivity_button.clicked.connect(self.sensitivity_requested)
        self.error_label = QLabel()
        self.error_label.setWordWrap(True)
        self.error_label.setStyleSheet("color: #b03000;")
        self.error_label.hide()
        form = QFormLayout()
        form.addRow("Target", self.target_edit)
        form.addRow("Budget", self.budget_edit)
        form.addRow("Metric", self.metric_box)
        buttons = QHBoxLayout()
        buttons.addWidget(self.tune_button, 1)
        buttons.addWidget(self.sensitivity_button, 1)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addLayout(buttons)
        layout.addWidget(self.error_label)
        self._metric: str | None = None

    # -- state -------------------------------------------------------------------------------------
    def show_metric(self, name: str | None) -> None:
        """Show the recipe's metric without emitting a change."""
        self._metric = name
        self.metric_box.blockSignals(True)
        i = self.metric_box.findData(name)
        if i >= 0:
            self.metric_box.setCurrentIndex(i)
        else:
            self.metric_box.setEditText(name or "")
        self.metric_box.blockSignals(False)

    def chosen_metric(self) -> str | None:
        return self._metric

    def error_text(self) -> str:
        return self.error_label.text() if not self.error_label.isHidden() else ""

    def _say(self, text: str) -> None:
        self.error_label.setText(text)
        self.error_label.setVisible(bool(text))

    # -- actions -----------------------------------------------------------------------------------
    def _on_metric_edited(self) -> None:
        text = self.metric_box.currentText().strip()
        data = self.metric_box.currentData()
        name = data if self.metric_box.findText(text) >= 0 else (text or None)
        if name == "sqnr (default)":
            name = None
        if name == self._metric:
            return
        try:
            if name is not None:
                check_metric_name(name)
        except UsageError as exc:
            self._say(str(exc))
            return
        self._say("")
        self._metric = name
        self.metric_changed.emit(name)

    def _on_tune(self) -> None:
        try:
            target = Target.parse(self.target_edit.text())
            budget = Budget.parse(self.budget_edit.text().strip() or None)
        except UsageError as exc:
            self._say(str(exc))
            return
        self._say("")
        self.tune_requested.emit(target, budget)
