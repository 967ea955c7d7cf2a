"""MultiObserver: every range from one pass; its answers worked out once when calibration is over."""

from __future__ import annotations

import pytest
import torch

from qtapp.core.quantize.observers import RANGES, MultiObserver


def observed() -> MultiObserver:
    obs = MultiObserver()
    g = torch.Generator().manual_seed(0)
    for _ in range(4):
        x = torch.randn(256, generator=g)
        x[0] = 40.0  # an outlier: the choices answer differently
        obs(x)
    return obs


def test_a_frozen_observer_answers_as_it_did_before_freezing():
    obs = observed()
    before = {c: tuple(float(t) for t in obs.calculate_qparams(c)) for c in RANGES}
    ranges = {c: obs.range_of(c) for c in RANGES}
    obs.freeze()
    assert {c: tuple(float(t) for t in obs.calculate_qparams(c)) for c in RANGES} == before
    assert {c: obs.range_of(c) for c in RANGES} == ranges
    assert len({before[c][0] for c in RANGES}) >= 3  # the choices really differ here


def test_new_data_thaws_it():
    obs = observed()
    obs.freeze()
    frozen = float(obs.calculate_qparams("minmax")[0])
    obs(torch.tensor([100.0]))
    lo = float(obs.min_val)  # the new maximum, 100, sets the min-max range now
    assert float(obs.calculate_qparams("minmax")[0]) == pytest.approx((100.0 - lo) / 127, rel=1e-4)
    assert float(obs.calculate_qparams("minmax")[0]) > 2 * frozen


def test_freezing_before_any_data_changes_nothing():
    obs = MultiObserver()
    obs.freeze()
    assert obs.range_of("histogram") is None
