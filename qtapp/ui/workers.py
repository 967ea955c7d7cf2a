"""The one place that starts threads: core jobs (generators) run on one long-lived QThread.

The worker never touches widgets. It queues each progress record, then the job's result (or its
error with the traceback, or its cancellation), then "finished", and announces each with a bare
signal; the runner lives on the GUI thread, drains the queue there, and calls its callbacks there.
No Python object travels inside a cross-thread signal, and no QObject is created or destroyed
per job: one executor lives on the worker thread until shutdown (deleting a QObject that lives
on a running thread from the GUI thread, e.g. by garbage collection, crashes Qt).

All jobs share ONE thread: torch's OpenMP pool belongs to the thread that calls into it, so a
fresh thread per job would build (and leave spinning) a new pool every time.
"""

from __future__ import annotations

import logging
import queue
import time
import traceback
from typing import Callable

from PySide6.QtCore import QCoreApplication, QObject, QThread, Signal, Slot

from ..core.base.errors import Cancelled, CodeConsentRequired, ProgramFileRefused, QtappError
from ..core.base.progress import CancelToken, Job
from ..core.model.safe_pickle import PickleRefused

log = logging.getLogger("qtapp.ui")
CONSENT_ERRORS = (PickleRefused, CodeConsentRequired, ProgramFileRefused)


class _Executor(QObject):
    """Lives on the worker thread; runs the jobs put in its inbox, one per `run_next`."""

    posted = Signal()

    def __init__(self) -> None:
        super().__init__()
        self.inbox: queue.SimpleQueue = queue.SimpleQueue()
        self.outbox: queue.SimpleQueue = queue.SimpleQueue()

    def _post(self, kind: str, *payload) -> None:
        self.outbox.put((kind, payload))
        self.posted.emit()

    @Slot()
    def run_next(self) -> None:
        make_job, cancel = self.inbox.get()
        try:
            job = make_job(cancel)
            while True:
                try:
                    p = next(job)
                except StopIteration as stop:
                    self._post("result", stop.value)
                    break
                self._post("progress", p)
        except Cancelled as exc:  # what the job finished before it stopped, if it says (a calibration)
            self._post("cancel", getattr(exc, "partial", None))
        except BaseException as exc:  # noqa: BLE001 - every failure is reported to the GUI thread
            self._post("error", exc, traceback.format_exc())
        finally:
            self._post("finished")


class JobRunner(QObject):
    """Runs one job at a time on its worker thread; `start()` refuses a second job while one runs."""

    busy_changed = Signal(bool)
    _run_requested = Signal()

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._thread: QThread | None = None
        self._executor: _Executor | None = None
        self._cancel: CancelToken | None = None
        self._callbacks: dict = {}
        self._closed = False
        self.name = ""
        self.ended = ""  # how the last job ended: finished, cancelled or failed
        self._started = 0.0
        self.seconds = 0.0  # how long the last job ran

    @property
    def busy(self) -> bool:
        return self._cancel is not None

    @property
    def thread_running(self) -> bool:
        """Whether the worker thread exists (it is stopped and released by shutdown())."""
        return self._thread is not None

    def _ensure_thread(self) -> _Executor:
        if self._thread is None:
            self._thread = QThread()
            self._thread.setObjectName("qtapp-worker")
            self._executor = _Executor()
            self._executor.moveToThread(self._thread)
            self._executor.posted.connect(self._on_posted)
            self._run_requested.connect(self._executor.run_next)  # queued: executor is on the thread
            self._thread.start()
        return self._executor

    def start(self, name: str, make_job: Callable[[CancelToken], Job], *, on_progress=None, on_result=None,
              on_error=None, on_cancel=None, on_finished=None) -> bool:
        if self.busy or self._closed:
            log.warning("refused to start %s while %s", name, f"{self.name} runs" if self.busy else "closing")
            return False
        self.name = name
        self._callbacks = {"progress": on_progress, "result": on_result, "error": on_error,
                           "cancel": on_cancel, "finished": on_finished}
        self._cancel = CancelToken()
        self._ensure_thread().inbox.put((make_job, self._cancel))
        log.info("started %s", name)
        self.ended, self._started = "", time.perf_counter()
        self.busy_changed.emit(True)
        self._run_requested.emit()
        return True

    def cancel(self) -> None:
        if self._cancel is not None:
            log.info("cancelling %s", self.name)
            self._cancel.cancel()

    def shutdown(self, ms: int = 60000) -> bool:
        """Cancel the running job and stop the worker thread (on close). True if it stopped in time."""
        self._closed = True
        self.cancel()
        if self._thread is None:
            return True
        self._thread.quit()  # runs after the current job returns to the thread's event loop
        stopped = self._thread.wait(ms)
        self._on_posted()  # deliver the job's last records now
        QCoreApplication.sendPostedEvents(self)
        if stopped:  # the thread has ended: its objects can be released from here
            self._executor = None
            self._thread = None
        return stopped

    def _call(self, key: str, *args) -> None:
        callback = self._callbacks.get(key)
        if callback is not None:
            callback(*args)

    @Slot()
    def _on_posted(self) -> None:
        executor = self._executor
        while executor is not None and self._cancel is not None:
            try:
                kind, payload = executor.outbox.get_nowait()
            except queue.Empty:
                return
            if kind == "progress":
                self._call("progress", *payload)
                continue
            self.ended = {"error": "failed", "cancel": "cancelled", "result": "finished"}.get(kind, self.ended)
            if kind == "error":
                if isinstance(payload[0], CONSENT_ERRORS):  # expected: the window asks, nothing failed
                    self.ended = "stopped to ask for consent"
                    log.info("%s waits for consent: %s", self.name, payload[0])
                elif isinstance(payload[0], QtappError):  # the user's to act on: the dialog says it
                    log.warning("%s failed: %s", self.name, payload[0])
                else:
                    log.error("%s failed: %s\n%s", self.name, payload[0], payload[1])
                self._call("error", *payload)
            elif kind == "cancel":
                log.info("%s cancelled", self.name)
                self._call("cancel", *payload)
            elif kind == "result":
                self._call("result", *payload)
            else:
                self._on_finished()
                return

    def _on_finished(self) -> None:
        self._cancel = None
        self.seconds = time.perf_counter() - self._started
        log.info("finished %s", self.name)
        callbacks, self._callbacks = self._callbacks, {}
        self.busy_changed.emit(False)
        if callbacks.get("finished") is not None:
            callbacks["finished"]()
