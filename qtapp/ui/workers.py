"""The one place that starts threads: a core job (generator) run on a QThread.

The worker never touches widgets: it emits `progress` per yielded record and `returned` with the
job's result, or `errored` with the exception and its traceback, and `finished` last in every case.
Those signals are delivered on the GUI thread (queued connections), where results are applied.
Cancellation goes through the core's CancelToken; the job stops at its next yield.
"""

from __future__ import annotations

import logging
import traceback
from typing import Callable

from PySide6.QtCore import QObject, QThread, Signal, Slot

from ..core.errors import Cancelled
from ..core.progress import CancelToken, Job

log = logging.getLogger("qtapp.ui")


class JobWorker(QObject):
    started = Signal()
    progress = Signal(object)  # qtapp.core.progress.Progress
    returned = Signal(object)
    errored = Signal(object, str)  # exception, formatted traceback
    cancelled = Signal()
    finished = Signal()

    def __init__(self, make_job: Callable[[CancelToken], Job], cancel: CancelToken) -> None:
        super().__init__()
        self._make_job, self.cancel_token = make_job, cancel

    @Slot()
    def run(self) -> None:
        self.started.emit()
        try:
            job = self._make_job(self.cancel_token)
            while True:
                try:
                    p = next(job)
                except StopIteration as stop:
                    self.returned.emit(stop.value)
                    break
                self.progress.emit(p)
        except Cancelled:
            self.cancelled.emit()
        except BaseException as exc:  # noqa: BLE001 - every failure is reported to the GUI thread
            self.errored.emit(exc, traceback.format_exc())
        finally:
            self.finished.emit()


class JobRunner(QObject):
    """Runs one job at a time. `start()` refuses a second job while one runs."""

    busy_changed = Signal(bool)

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._thread: QThread | None = None
        self._worker: JobWorker | None = None
        self._callbacks: dict = {}
        self.name = ""

    @property
    def busy(self) -> bool:
        return self._thread is not None

    def start(self, name: str, make_job: Callable[[CancelToken], Job], *, on_progress=None, on_result=None,
              on_error=None, on_cancel=None, on_finished=None) -> JobWorker | None:
        if self.busy:
            log.warning("refused to start %s while %s runs", name, self.name)
            return None
        self.name = name
        self._callbacks = {"progress": on_progress, "result": on_result, "error": on_error,
                           "cancel": on_cancel, "finished": on_finished}
        thread = QThread()
        thread.setObjectName(f"qtapp-{name}")
        worker = JobWorker(make_job, CancelToken())
        worker.moveToThread(thread)
        # The runner's slots live on the GUI thread, so these connections are queued: callbacks
        # always run on the GUI thread, never on the worker's.
        worker.progress.connect(self._on_progress)
        worker.returned.connect(self._on_returned)
        worker.errored.connect(self._on_errored)
        worker.cancelled.connect(self._on_cancelled)
        worker.finished.connect(thread.quit)
        thread.finished.connect(self._on_thread_finished)
        thread.started.connect(worker.run)
        self._thread, self._worker = thread, worker
        log.info("started %s", name)
        thread.start()
        self.busy_changed.emit(True)
        return worker

    def _call(self, key: str, *args) -> None:
        callback = self._callbacks.get(key)
        if callback is not None:
            callback(*args)

    @Slot(object)
    def _on_progress(self, p) -> None:
        self._call("progress", p)

    @Slot(object)
    def _on_returned(self, value) -> None:
        self._call("result", value)

    @Slot(object, str)
    def _on_errored(self, exc, details: str) -> None:
        log.error("%s failed: %s\n%s", self.name, exc, details)
        self._call("error", exc, details)

    @Slot()
    def _on_cancelled(self) -> None:
        log.info("%s cancelled", self.name)
        self._call("cancel")

    def cancel(self) -> None:
        if self._worker is not None:
            log.info("cancelling %s", self.name)
            self._worker.cancel_token.cancel()

    def wait(self, ms: int = 30000) -> bool:
        """Block until the job's thread ends (used on close, after cancel())."""
        return self._thread.wait(ms) if self._thread is not None else True

    @Slot()
    def _on_thread_finished(self) -> None:
        thread, self._thread, self._worker = self._thread, None, None
        if thread is not None:
            thread.deleteLater()
        log.info("finished %s", self.name)
        callbacks, self._callbacks = self._callbacks, {}
        self.busy_changed.emit(False)
        if callbacks.get("finished") is not None:
            callbacks["finished"]()
