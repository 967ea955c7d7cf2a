"""Progress records and cancellation for long jobs.

Every long operation in core is a generator that yields a `Progress` per unit of work (a batch, an
epoch step, an exported file) and returns its result. The caller cancels by calling
`CancelToken.cancel()`; the job checks it at its next yield point and raises `Cancelled`.
`drive()` runs such a generator to completion for callers that only want the result.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Generator, TypeVar

from .errors import Cancelled

T = TypeVar("T")


@dataclass(frozen=True)
class Progress:
    """One step of a long job: `done` of `total` units of `stage` (total 0 means unknown)."""

    stage: str
    done: int
    total: int
    message: str = ""
    elapsed_s: float = 0.0
    paced_from: int = 0  # the units done when the pace started to be timed (`elapsed_s` counts from there)

    @property
    def fraction(self) -> float | None:
        return self.done / self.total if self.total else None

    @property
    def eta_s(self) -> float | None:
        """Seconds left, extrapolated from the pace so far (None until one unit is timed)."""
        if not self.total or self.done <= self.paced_from:
            return None
        return self.elapsed_s / (self.done - self.paced_from) * (self.total - self.done)


@dataclass
class CancelToken:
    """Thread-safe cancellation flag shared between the job and whoever runs it."""

    _event: threading.Event = field(default_factory=threading.Event)

    def cancel(self) -> None:
        self._event.set()

    @property
    def cancelled(self) -> bool:
        return self._event.is_set()

    def check(self) -> None:
        if self._event.is_set():
            raise Cancelled()


class Stage:
    """Builds `Progress` records for one stage, timing from construction."""

    def __init__(self, name: str, total: int, cancel: CancelToken | None = None, paced_from: int = 0) -> None:
        """`paced_from`: the units already done when this timing starts (a stage re-timed mid-way)."""
        self.name, self.total, self.cancel, self.paced_from = name, total, cancel, paced_from
        self._t0 = time.perf_counter()

    def step(self, done: int, message: str = "") -> Progress:
        if self.cancel is not None:
            self.cancel.check()
        return Progress(self.name, done, self.total, message, time.perf_counter() - self._t0, self.paced_from)


Job = Generator[Progress, None, T]


def drive(job: Job[T], on_progress: Callable[[Progress], None] | None = None) -> T:
    """Run a job generator to the end, passing each progress record on; return its result."""
    while True:
        try:
            p = next(job)
        except StopIteration as stop:
            return stop.value
        if on_progress is not None:
            on_progress(p)
