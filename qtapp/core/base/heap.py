"""Giving the C heap's free pages back to the system: between the conversions of a sensitivity run or a
tune (tune.scoring.Scorer.convert), and when the owner adopts a job's outcome (QuantSession.adopt).

Those jobs convert one configuration after another (the next on a second thread, in that thread's own
malloc arena, while this one is scored) and drop each once scored. glibc keeps what is freed for reuse;
with copies of the calibrated model, int8 weights and activations of many sizes and lifetimes interleaved,
the free space lies scattered between live blocks and it cannot give it back on its own: resnet18's heap
held 1.0 GB free (resident) after a sensitivity run and 1.6 GB after a tune, beside 0.4 GB in use, and the
process stayed 0.7-1.1 GB larger than it needed (benchmarks/bench_memory.py). `malloc_trim(0)` returns every
free page of every arena (about 15 ms on that heap). Other C libraries have no such call: nothing is done there.
"""

from __future__ import annotations

import ctypes
import functools
import sys


def release_free_heap() -> None:
    """Return the C heap's free pages to the system (glibc); anywhere else, nothing."""
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


@functools.cache
def _malloc_trim():
    if not sys.platform.startswith("linux"):
        return None
    try:
        trim = ctypes.CDLL(None).malloc_trim  # the process's own C library: glibc has it, musl not
    except (OSError, AttributeError):
        return None
    trim.argtypes, trim.restype = [ctypes.c_size_t], ctypes.c_int
    return trim
