"""Scratch folders for a run's temporary files (files being timed, their inputs), which a kill cannot
leave behind for ever: each is named after the process that made it, and making one removes those
whose process is gone (a `kill -9` skips every cleanup; the next run does it)."""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

_OURS = re.compile(r"^qtapp-(latency|measure|float|onnx|ort|scratch)-(\d+)-")


@contextmanager
def scratch_dir(kind: str) -> Iterator[Path]:
    """A new folder `qtapp-KIND-PID-*` in the temporary folder, removed when the block ends."""
    base = Path(tempfile.gettempdir())
    remove_orphans(base)
    path = Path(tempfile.mkdtemp(prefix=f"qtapp-{kind}-{os.getpid()}-", dir=base))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def remove_orphans(base: Path) -> list[Path]:
    """Remove scratch folders of processes that no longer run; the ones removed."""
    removed = []
    try:
        entries = list(os.scandir(base))
    except OSError:
        return removed
    for entry in entries:
        m = _OURS.match(entry.name)
        if m and entry.is_dir(follow_symlinks=False) and not process_alive(int(m.group(2))):
            shutil.rmtree(entry.path, ignore_errors=True)
            removed.append(Path(entry.path))
    return removed


def process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    return True
