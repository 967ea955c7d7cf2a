"""The one place that starts threads: core jobs (generators) run on one long-lived QThread.

The worker never touches widgets: it emits `progress` per yielded record and `returned` with the
job's result, or `errored` with the exception and its traceback, then `finished`. The runner's slots
live on the GUI thread, so those signals arrive there (queued) and callbacks run on the GUI thread.
Cancellation goes through the core's CancelToken; the job stops at its next yield.

All jobs share ONE thread: torch's OpenMP pool belongs to the thread that calls into it, so a
fresh thread per job would build (and leave spinning) a new pool every time.
"""

from __future__ import annotations

import logging
import traceback
from typing import Callable

from PySide6.QtCore import QCoreApplication, QMetaObject, QObject, Qt, QThread, Signal, Slot

from ..core.errors import Cancelled
from ..core.progress import CancelToken, Job

log = logging.getLogger("qtapp.ui")


class JobWorker(QObject):
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
    """Runs one job at a time on its worker thread; `start()` refuses a second job while one runs."""

    busy_changed = Signal(bool)
    progressed = Signal(object)

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._thread: QThread | None = None
        self._worker: JobWorker | None = None
        self._callbacks: dict = {}
        self._closed = False
        self.name = ""

    @property
    def busy(self) -> bool:
        return self._worker is not None

    def _ensure_thread(self) -> QThread:
        if self._thread is None:
            self._thread = QThread()
            self._thread.setObjectName("qtapp-worker")
            self._thread.start()
        return self._thread

    def start(self, name: str, make_job: Callable[[CancelToken], Job], *, on_progress=None, on_result=None,
              on_error=None, on_cancel=None, on_finished=None) -> bool:
        if self.busy or self._closed:
            log.warning("refused to start %s while %s", name, f"{self.name} runs" if self.busy else "closing")
            return False
        self.name = name
        self._callbacks = {"progress": on_progress, "result": on_result, "error": on_error,
                           "cancel": on_cancel, "finished": on_finished}
        worker = JobWorker(make_job, CancelToken())
        worker.moveToThread(self._ensure_thread())
        worker.progress.connect(self._on_progress)
        worker.returned.connect(self._on_returned)
        worker.errored.connect(self._on_errored)
        worker.cancelled.connect(self._on_cancelled)
        worker.finished.connect(self._on_finished)
        self._worker = worker
        log.info("started %s", name)
        self.busy_changed.emit(True)
        QMetaObject.invokeMethod(worker, "run", Qt.ConnectionType.QueuedConnection)
        return True

    def cancel(self) -> None:
        if self._worker is not None:
            log.info("cancelling %s", self.name)
            self._worker.cancel_token.cancel()

    def shutdown(self, ms: int = 60000) -> bool:
        """Cancel the running job and stop the worker thread (on close). True if it stopped in time."""
        self._closed = True
        self.cancel()
        if self._thread is None:
            return True
        self._thread.quit()  # runs after the current job returns to the thread's event loop
        stopped = self._thread.wait(ms)
        self._thread = None
        QCoreApplication.sendPostedEvents(self)  # deliver the job's last (queued) signals now
        return stopped

    def _call(self, key: str, *args) -> None:
        callback = self._callbacks.get(key)
        if callback is not None:
            callback(*args)

    @Slot(object)
    def _on_progress(self, p) -> None:
        self._call("progress", p)
        self.progressed.emit(p)

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

    @Slot()
    def _on_finished(self) -> None:
        worker, self._worker = self._worker, None
        if worker is not None:
            worker.deleteLater()
        log.info("finished %s", self.name)
        callbacks, self._callbacks = self._callbacks, {}
        self.busy_changed.emit(False)
        if callbacks.get("finished") is not None:
            callbacks["finished"]()
