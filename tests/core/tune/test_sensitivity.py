"""Sensitivity, both ways, from one calibration: each figure is what a run with that configuration
gives, and the ranking puts first what keeping float gains most."""

from __future__ import annotations

from pathlib import Path

import pytest

from qtapp.core.base.progress import drive
from qtapp.core.config.recipe import QuantRecipe
from qtapp.core.run import jobs
from qtapp.core.run.session import QuantSession

KINDS_SPEC = f"{Path(__file__).resolve().parents[2] / 'fixtures' / 'point_kinds.py'}:build"


@pytest.fixture(scope="module")
def demo():
    session = drive(QuantSession.open(QuantRecipe(model="demo")))
    result = session.adopt(drive(jobs.sensitivity(session.snapshot())))
    return session, result


def sqnr_of(recipe) -> float:
    session = drive(QuantSession.open(recipe))
    return drive(jobs.quantize(session.snapshot(), measure=False)).result.output.sqnr_db


def test_every_toggleable_point_is_measured_both_ways_with_two_conversions_each(demo):
    session, result = demo
    sens = result.sensitivity
    names = [p.name for p in sens.points]
    assert sorted(names) == sorted(session.inventory.heads)
    assert all(p.only_float is not None and p.only_int8 is not None for p in sens.points)
    assert sens.conversions == 2 * len(names) + 2  # no recalibration: conversions only
    assert sens.metric == "sqnr" and sens.all_int8 == pytest.approx(result.output.sqnr_db, abs=1e-6)


def test_the_figures_are_what_a_run_of_that_configuration_gives(demo):
    session, result = demo
    p = {p.name: p for p in result.sensitivity.points}["fc2"]
    assert p.only_float == pytest.approx(sqnr_of(QuantRecipe(model="demo", float_layers=["fc2"])), abs=0.01)
    others = [h for h in session.inventory.heads if h != "fc2"]
    assert p.only_int8 == pytest.approx(sqnr_of(QuantRecipe(model="demo", float_layers=others)), abs=0.01)


def test_ranked_by_what_keeping_the_point_float_gains(demo):
    sens = demo[1].sensitivity
    gains = [sens.gain(p) for p in sens.points]
    assert gains == sorted(gains, reverse=True)
    costs = {p.name: sens.cost(p) for p in sens.points}
    assert all(c >= -0.5 for c in costs.values())  # quantizing one point alone never helps by much


def test_the_broken_point_ranks_first_when_it_can_be_kept_float():
    session = drive(QuantSession.open(QuantRecipe(model=KINDS_SPEC, kwargs={"kind": "must_stay_float"})))
    sens = session.adopt(drive(jobs.sensitivity(session.snapshot()))).sensitivity
    first = sens.points[0]
    assert first.name == "fc2" and sens.gain(first) > 20
    assert sens.cost(first) > 20  # and alone in int8 it costs as much: it is the point that breaks


def test_the_report_has_the_sensitivity_block(demo):
    from qtapp.core.report.render import report_dict

    block = report_dict(demo[1])["sensitivity"]
    assert block["metric"] == "sqnr" and len(block["points"]) == len(demo[1].sensitivity.points)
    first = block["points"][0]
    assert {"name", "only_float", "only_int8", "gain", "cost"} <= set(first)


def test_a_cancel_stops_it_and_leaves_no_conversion_running():
    import threading

    from qtapp.core.base.errors import Cancelled
    from qtapp.core.base.progress import CancelToken

    session = drive(QuantSession.open(QuantRecipe(model="demo")))
    cancel = CancelToken()
    steps = 0
    with pytest.raises(Cancelled):
        for p in jobs.sensitivity(session.snapshot(), cancel):
            if p.stage == "sensitivity":
                steps += 1
                if steps == 3:
                    cancel.cancel()
    assert session.result is None
    assert not [t for t in threading.enumerate() if t.name.startswith("qtapp-convert")]
