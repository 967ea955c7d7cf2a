"""The window's one controller of long work: a user action is one core workflow job.

`submit()` runs a job on the JobRunner's worker thread. When a job is already running, the new action
cancels it and runs as soon as it has stopped (the newest action wins: an older waiting one is
dropped). Results reach `on_result` on the GUI thread, where the window adopts them. Nothing here
knows what a job does, so no per-job flag is needed to sequence work.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from PySide6.QtCore import QObject

from .workers import JobRunner


@dataclass
class _Action:
    name: str
    make_job: Callable
    on_result: Callable
    on_error: Callable | None
    on_cancel: Callable | None
    on_finished: Callable | None


class RunController(QObject):
    def __init__(self, runner: JobRunner, on_progress: Callable, on_error: Callable, parent=None) -> None:
        super().__init__(parent)
        self.runner = runner
        self._on_progress, self._default_error = on_progress, on_error
        self._waiting: _Action | None = None

    @property
    def busy(self) -> bool:
        return self.runner.busy

    @property
    def waiting(self) -> str | None:
        """The name of the action that will run once the current job has stopped."""
        return self._waiting.name if self._waiting else None

    def submit(self, name: str, make_job: Callable, on_result: Callable, on_error: Callable | None = None,
               on_cancel: Callable | None = None, on_finished: Callable | None = None) -> None:
        action = _Action(name, make_job, on_result, on_error, on_cancel, on_finished)
        if self.runner.busy:
            self._waiting = action  # replaces an older waiting action: the newest wins
            self.runner.cancel()
            return
        self._start(action)

    def cancel(self) -> None:
        """The user's cancel: stop the running job and drop anything waiting."""
        self._waiting = None
        self.runner.cancel()

    def _start(self, action: _Action) -> None:
        def finished() -> None:
            if action.on_finished is not None:
                action.on_finished()
            waiting, self._waiting = self._waiting, None
            if waiting is not None:
                self._start(waiting)

        self.runner.start(action.name, action.make_job, on_progress=self._on_progress, on_result=action.on_result,
                          on_error=action.on_error or (lambda exc, details: self._default_error(action.name, exc, details)),
                          on_cancel=action.on_cancel, on_finished=finished)
