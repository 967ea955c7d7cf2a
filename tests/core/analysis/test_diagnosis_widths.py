"""Issue 20: torchao's 4-bit layers are read against 4-bit layers, in 4-bit words. A 4-bit layer at
19 dB is healthy (int8 would be bad there); in a mix of widths the 8-bit layers' median does not make
every 4-bit layer look bad; and a poor 4-bit layer is said to lose in its 4-bit rounding, not int8's."""

from __future__ import annotations

import numpy as np

from qtapp.core.analysis.compare import WeightData
from qtapp.core.analysis.diagnosis import bad_points, diagnose
from qtapp.core.analysis.point_result import PointResult


def point(name: str, local: float, scheme: str) -> PointResult:
    w = np.ones((4, 32), dtype=np.float32)
    return PointResult(name, "module", "linear", "", "Linear", True, "int8", local - 1, local,
                       None, weight=WeightData(w, w, scheme))


FOUR, EIGHT = "int4 groups of 32, each row's widest group shown", "int8 per channel"


def test_a_4_bit_layer_at_19_db_is_not_bad_but_an_int8_one_is():
    assert [p.name for p in bad_points([point("a", 19.0, FOUR), point("b", 21.0, FOUR)])] == []
    assert [p.name for p in bad_points([point("a", 19.0, EIGHT), point("b", 21.0, EIGHT)])] == ["a"]


def test_in_a_mix_of_widths_each_layer_is_read_against_its_own_width():
    mix = [point(f"q{i}", 20.0 + i, FOUR) for i in range(4)] + [point(f"e{i}", 40.0 + i, EIGHT) for i in range(4)]
    assert bad_points(mix) == []  # 4-bit layers 20 dB under the 8-bit median: their width, not a fault
    worse = mix + [point("poor", 9.0, FOUR)]
    found = diagnose(worse)
    assert list(found) == ["poor"]
    text = found["poor"][0].text
    assert "4-bit" in text and "int8" not in text
