"""A log panel fed by the `qtapp` logger, safe to log into from any thread."""

from __future__ import annotations

import logging

from PySide6.QtCore import QObject, Signal
from PySide6.QtWidgets import QPlainTextEdit


class _Bridge(QObject):
    line = Signal(str)


class LogPanel(QPlainTextEdit):
    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self.setReadOnly(True)
        self.setMaximumBlockCount(5000)
        self._bridge = _Bridge()
        self._bridge.line.connect(self.appendPlainText)  # queued when logged from a worker thread
        self.handler = logging.Handler()
        self.handler.emit = lambda record: self._bridge.line.emit(self.handler.format(record))
        self.handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%H:%M:%S"))
        logging.getLogger("qtapp").addHandler(self.handler)
        logging.getLogger("qtapp").setLevel(logging.INFO)

    def detach(self) -> None:
        """Stop receiving log records (the window calls this when it closes)."""
        logging.getLogger("qtapp").removeHandler(self.handler)
