"""The verdict on the shown result, above the summary: usable, degraded or broken, why, the next step,
and a Repair button that runs tune with the verdict's target and budget."""

from __future__ import annotations

import re
from html import escape

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import QFrame, QHBoxLayout, QLabel, QPushButton

from ..core.analysis.metrics import Target
from ..core.report.verdict import COLOURS, judge
from ..core.tune.search import Budget


class VerdictBanner(QFrame):
    """Shows `core.verdict.judge(result)`; emits `repair_requested(Target, Budget)` from its Repair button."""

    repair_requested = Signal(object, object)

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self.setObjectName("verdictBanner")
        self.label = QLabel()
        self.label.setWordWrap(True)
        self.label.setTextFormat(Qt.TextFormat.RichText)
        self.label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.repair_button = QPushButton("Repair")
        self.repair_button.clicked.connect(self._on_repair)
        layout = QHBoxLayout(self)
        layout.setContentsMargins(8, 6, 8, 6)
        layout.addWidget(self.label, 1)
        layout.addWidget(self.repair_button, 0, Qt.AlignmentFlag.AlignTop)
        self.verdict = None
        self.show_result(None)

    def show_result(self, result, stale: bool = False) -> None:
        self.verdict = judge(result) if result is not None else None
        v = self.verdict
        if v is None:
            self.hide()
            return
        back, fore = COLOURS[v.level]
        self.setStyleSheet(f"#verdictBanner {{ background: {back}; border: 1px solid {fore}; border-radius: 4px; }}")
        text = f"<b style='color:{fore}'>{v.level.upper()}</b>: {escape(v.reason)}"
        if v.next:  # the CLI's command, said as the button that runs it here
            step = re.sub(r"qtapp-cli tune \S+ --target (\S+) --budget (\S+)", r"Repair (tune to \1, \2)", v.next)
            text += f"<br><span style='color:#333'>Next: {escape(step)}</span>"
        if stale:
            text += "<br><i style='color:#666'>(of the last run: settings changed since)</i>"
        self.label.setText(text)
        self.repair_button.setVisible(v.target is not None)
        self.repair_button.setToolTip(f"Run Tune with target {v.target} and budget {v.budget}" if v.target else "")
        self.show()

    def set_busy(self, busy: bool) -> None:
        self.repair_button.setEnabled(not busy)

    def _on_repair(self) -> None:
        v = self.verdict
        if v is not None and v.target is not None:
            self.repair_requested.emit(Target.parse(v.target), Budget.parse(v.budget))
