"""The search: on models built to break one way each, it reaches the target with the fewest points kept
float, by the move that fixes that way of breaking; budgets, refusals, and what tune.json records."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest

from qtapp.core.analysis.metrics import Target
from qtapp.core.base.errors import UsageError
from qtapp.core.base.progress import CancelToken, drive
from qtapp.core.config.recipe import QuantRecipe
from qtapp.core.run import jobs
from qtapp.core.run.session import QuantSession
from qtapp.core.tune.search import Budget

KINDS_SPEC = f"{Path(__file__).resolve().parents[2] / 'fixtures' / 'point_kinds.py'}:build"


def tuned(kind, target, budget=None, **changes):
    recipe = QuantRecipe(model=KINDS_SPEC, kwargs={"kind": kind}, **changes)
    session = drive(QuantSession.open(recipe))
    outcome = drive(jobs.tune(session.snapshot(), Target.parse(target), Budget.parse(budget), measure=False))
    return session, outcome


def test_an_outlier_activation_is_kept_float_with_the_layer_that_reads_it():
    """fc2's outputs hold one feature at 30x the others. No range fits both (percentile clipping cuts
    the feature that carries the signal), and fc2 float alone does not help: fc3 rounds the same values
    to int8 on its input. Keeping the value float means fc2 and its reader fc3."""
    session, outcome = tuned("outlier", "sqnr>=40", "size<=1MB")  # fc2, fc3 hold nearly every weight: allowed
    t = outcome.tune
    assert t.start.score < 25 and t.reached
    assert t.best.config.float_points == {"fc2", "fc3"}
    moves = [t.steps[i].move for i in t.path]
    assert any(m.startswith("fc2's value (with fc3) float") for m in moves)
    ranking = {s.move: s.scored.score for s in t.steps if s.move.endswith("(ranking)")}
    assert ranking["only fc2 float (ranking)"] < 40 and ranking["only fc3 float (ranking)"] < 40  # neither alone
    assert outcome.quantized.result.output.sqnr_db >= 40  # the configuration written reaches it too


def test_cross_layer_equalisation_reaches_a_lower_target_with_nothing_float():
    """The same outlier feature, equalised into fc3's input weights (fc2's row 7 scaled down, fc3's
    column 7 up): one more calibration, no point kept float."""
    session, outcome = tuned("outlier", "sqnr>=30")
    t = outcome.tune
    assert t.reached and t.best.config.equalize and t.best.config.float_points == frozenset()
    assert t.calibrations == 2
    assert any(t.steps[i].phase == "equalize" for i in t.path)
    assert outcome.quantized.result.recipe.equalize
    assert "cross-layer equalisation of 2 pair(s)" in " ".join(outcome.quantized.result.model_notes +
                                                             (outcome.quantized.result.calib_stats["equalized"],))


def test_a_layer_no_int8_choice_saves_is_the_one_kept_float():
    session, outcome = tuned("must_stay_float", "sqnr>=30")
    t = outcome.tune
    assert t.start.score < 10 and t.reached
    assert t.best.config.float_points == {"fc2"} and t.best.config.overrides == ()
    tried = {s.phase for s in t.steps}
    assert "ranges" in tried  # the cheap moves were tried first, and did not help
    assert all(not s.accepted for s in t.steps if s.phase == "ranges")


def test_dynamic_inputs_that_round_to_zero_get_float16_weights_not_float():
    session, outcome = tuned("tiny_inputs", "sqnr>=30", method="dynamic")
    t = outcome.tune
    assert t.start.score < 5 and t.reached
    assert t.best.config.float_points == frozenset()
    assert {n: o.dtype for n, o in t.best.config.overrides} == {"fc2": "float16"}
    result = outcome.quantized.result
    import torch

    fc2 = result.quantized_model.fc2  # float16 dynamic, not float; fc1 stays int8
    assert "dtype=torch.float16" in repr(fc2) and "dtype=torch.qint8" in repr(result.quantized_model.fc1)
    w = fc2.weight()
    assert torch.equal(w, w.half().float()) and not torch.equal(w, session.loaded.module.fc2.weight)
    assert result.output.sqnr_db >= 30


def test_a_budget_keeps_the_best_configuration_within_it_and_says_the_target_was_missed():
    session, outcome = tuned("outlier", "sqnr>=40", "float<=1")
    t = outcome.tune
    assert not t.reached and len(t.best.config.float_points) <= 1
    assert t.best.score >= t.start.score  # never worse than where it started
    assert any(not s.within_budget for s in t.steps)  # it saw the configuration that would reach it
    assert "target sqnr>=40 not reached within budget float<=1" in t.notes[0]


def test_a_configuration_no_smaller_than_float_is_not_reported_as_reached():
    """Keeping fc2 and fc3 float reaches sqnr>=40, but they hold 99% of the weights: the file would be
    97% of float's. Without a size budget that accepts it, that is no result: exit 3, the best
    configuration that compresses kept, and what the other would cost said."""
    session, outcome = tuned("outlier", "sqnr>=40")
    t = outcome.tune
    assert not t.reached and t.best.config.float_points != {"fc2", "fc3"}
    assert any("do not compress the model" in n and "size<=" in n for n in t.notes), t.notes


def test_a_target_already_met_changes_nothing():
    session, outcome = tuned("outlier", "sqnr>=10")
    t = outcome.tune
    assert t.reached and len(t.steps) == 1 and t.best is t.start
    assert t.best.config.float_points == frozenset() and t.best.config.overrides == ()


def test_adopting_a_tune_makes_its_configuration_the_sessions_recipe():
    session, outcome = tuned("outlier", "sqnr>=40", "size<=1MB")
    result = session.adopt_tuned(outcome)
    assert set(session.recipe.float_layers) == {"fc2", "fc3"}
    assert session.recipe.overrides == outcome.tune.best.config.override_map
    assert session.result is result and set(result.float_layers) == {"fc2", "fc3"}


@pytest.mark.parametrize("target", ["sqnr>=30", "sqnr>=40"])  # equalised and recalibrated; points kept float
def test_the_tuned_recipe_reproduces_the_figures_from_a_new_session(target):
    session, outcome = tuned("outlier", target, "size<=1MB")
    session.adopt_tuned(outcome)
    again = drive(QuantSession.open(copy.deepcopy(session.recipe)))
    result = drive(jobs.quantize(again.snapshot(), measure=False))
    assert result.result.output.sqnr_db == pytest.approx(outcome.quantized.result.output.sqnr_db, abs=0.05)
    assert result.result.output.sqnr_db == pytest.approx(outcome.tune.best.score, abs=0.05)


def test_tune_json_lists_every_step_its_path_curve_and_counts():
    session, outcome = tuned("must_stay_float", "sqnr>=30")
    doc = outcome.tune.to_json()
    assert doc["reached"] and doc["target"] == "sqnr>=30"
    assert doc["calibrations"] == 2  # equalisation was tried (and did not help): one more calibration
    assert len(doc["steps"]) == doc["naive_calibrations"] >= doc["conversions"] > 1
    assert doc["path"][0] == 0 and doc["steps"][doc["path"][-1]]["float_layers"] == ["fc2"]
    assert [c["step"] for c in doc["curve"]] == doc["path"]
    for step in doc["steps"]:
        assert {"move", "phase", "accepted", "metric", "size_bytes", "latency_ms", "float_layers"} <= set(step)
    chosen = doc["steps"][doc["path"][-1]]
    assert doc["front"] and all(doc["steps"][i]["size_bytes"] <= chosen["size_bytes"] or
                                doc["steps"][i]["score"] >= chosen["score"] for i in doc["front"])


def test_a_cancelled_tune_leaves_the_session_as_it_was():
    recipe = QuantRecipe(model=KINDS_SPEC, kwargs={"kind": "outlier"})
    session = drive(QuantSession.open(recipe))
    before = copy.deepcopy(session.recipe)
    cancel = CancelToken()
    job = jobs.tune(session.snapshot(), Target.parse("sqnr>=30"), Budget(), cancel, measure=False)
    seen = []
    from qtapp.core.base.errors import Cancelled

    with pytest.raises(Cancelled) as info:
        for p in job:
            seen.append(p.stage)
            if p.stage == "tune" and p.done >= 1:  # once the start is scored
                cancel.cancel()
    assert "tune" in seen and session.result is None
    assert session.recipe == before
    tried = info.value.partial  # what the search tried before the cancel, for the window to show
    assert tried.cancelled and not tried.reached and len(tried.steps) >= 1 and tried.path == (0,)
    assert tried.notes[0].startswith("cancelled after")


@pytest.mark.parametrize("text, kind, value, share", [
    ("float<=3", "float", 3, False), ("float <= 10%", "float", 10, True), ("size<=5MB", "size", 5, False),
    ("latency<=8ms", "latency", 8, False), ("size<=0.5", "size", 0.5, False)])
def test_budgets_are_read(text, kind, value, share):
    assert Budget.parse(text) == Budget(kind, value, share)


@pytest.mark.parametrize("text", ["float>=3", "size<=5%", "latency<=3MB", "speed<=2", "float<=", "5"])
def test_a_budget_that_means_nothing_is_refused(text):
    with pytest.raises(UsageError, match="budget"):
        Budget.parse(text)


def test_a_recurrent_model_is_repaired_with_per_channel_weights_before_anything_that_grows_it():
    """Dynamic LSTM/GRU/Linear with one weight scale per tensor (--no-per-channel): one scale per channel
    is a move that keeps the file int8 (float16 would not shrink it: torch.ao stores it as float32)."""
    spec = f"{Path(__file__).resolve().parents[2] / 'fixtures' / 'seqmodels.py'}:build"
    session = drive(QuantSession.open(QuantRecipe(model=spec, method="dynamic", per_channel=False,
                                                  kwargs={"hidden": 128})))
    outcome = drive(jobs.tune(session.snapshot(), Target.parse("sqnr>=40.8"), Budget.parse(None), measure=False))
    t = outcome.tune
    assert t.start.score < 40.8 <= t.best.score and t.reached
    assert not t.best.config.float_points and not t.best.config.float16
    assert all(o.per_channel for _n, o in t.best.config.overrides)
    assert any(t.steps[i].phase == "weights" for i in t.path)
