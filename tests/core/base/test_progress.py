"""Progress records: time left is extrapolated from the units timed, never from none."""

from __future__ import annotations

from qtapp.core.base.progress import Progress


def test_time_left_comes_from_the_units_timed():
    assert Progress("s", 0, 10, elapsed_s=5.0).eta_s is None
    assert Progress("s", 2, 10, elapsed_s=4.0).eta_s == 16.0
    # a stage re-timed after 3 units: its elapsed time covers the units after them only
    assert Progress("s", 3, 10, elapsed_s=0.0, paced_from=3).eta_s is None
    assert Progress("s", 5, 10, elapsed_s=2.0, paced_from=3).eta_s == 5.0
    assert Progress("s", 4, 0, elapsed_s=2.0).eta_s is None  # unknown total
