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
        logger = logging.getLogger("qtapp")
        logger.addHandler(self.handler)
        logger.setLevel(logging.INFO)
        self.destroyed.connect(lambda: logger.removeHandler(self.handler))
