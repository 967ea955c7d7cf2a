"""The run layer: jobs read a snapshot and return an immutable outcome; the owner adopts it."""

from __future__ import annotations

import dataclasses
import json
import re

import pytest

from qtapp.core.base.progress import drive
from qtapp.core.config.recipe import DataSpec, QatSpec, QuantRecipe
from qtapp.core.report import notes as report_notes
from qtapp.core.report.render import report_dict, summary_text
from qtapp.core.report.results import RunResult
from qtapp.core.run import jobs
from qtapp.core.run.session import QuantSession


def test_a_job_never_writes_to_the_session(demo_loaded):
    s = QuantSession(demo_loaded, QuantRecipe(model="demo", calibration=DataSpec(batches=2)))
    job = jobs.quantize(s.snapshot(), measure=False)
    s.inventory.set_float("fc1")  # a toggle while the job runs does not reach the running job
    outcome = drive(job)
    assert s.result is None and s.calibrated is None  # nothing adopted yet
    assert outcome.result.float_layers == ()
    s.adopt(outcome)
    assert s.result is outcome.result and s.calibrated is outcome.calibrated
    with pytest.raises(dataclasses.FrozenInstanceError):
        outcome.result.output = None
    # The result keeps its own copy of the recipe: later edits of the session's recipe don't reach it.
    s.update_recipe(engine="x86")
    assert outcome.result.engine == "fbgemm" and outcome.result.recipe.float_layers == []


def test_changing_the_dynamic_dtype_reconverts_with_that_dtype(seq_loaded):
    """The window used to keep qint8 weights after a switch to float16 while the report said float16."""
    s = QuantSession(seq_loaded, QuantRecipe(model=seq_loaded.spec, method="dynamic"))
    first = drive(s.quantize())
    s.update_recipe(dtype="float16")
    second = drive(s.quantize())
    schemes = {l.weight.qscheme for l in second.layers if l.weight is not None and l.quantized}
    assert schemes == {"float16"}
    assert {l.weight.qscheme for l in first.layers if l.weight is not None and l.quantized} != {"float16"}
    assert report_dict(second)["dtype"] == "float16"
    assert second.output.sqnr_db > first.output.sqnr_db + 10


def _other_value(name, value):
    if name in ("weight_bits", "group_size"):  # torchao's: 4 bits, groups of 64
        return {"weight_bits": 4, "group_size": 64}[name]
    if isinstance(value, bool):
        return not value
    if isinstance(value, str):
        return {"static": "qat", "fbgemm": "x86", "qint8": "float16", "histogram": "minmax", "auto": "fx",
                "float32": "int64", "torch.ao": "pt2e", "torch": "ort"}.get(value, value + "x")
    if isinstance(value, (DataSpec, QatSpec)):
        return dataclasses.replace(value, batches=value.batches + 1) if isinstance(value, DataSpec) else \
            dataclasses.replace(value, epochs=value.epochs + 1)
    if isinstance(value, dict):
        return {**value, "extra": 1}
    if isinstance(value, list):
        return [*value, "fc1"]
    if value is None:
        return "int64" if name == "input_dtype" else "1,1,8,8"
    return value + 1


# What a conversion chooses without recalibrating: the layers kept float, the evaluation, the activation
# range (every one is observed in the one pass), the per-point overrides and the metric; and who makes
# the .onnx (an export choice).
CONVERSION_FIELDS = ("version", "evaluation", "float_layers", "observer", "overrides", "metric", "onnx_quantizer")


@pytest.mark.parametrize("name", [f.name for f in dataclasses.fields(QuantRecipe) if f.name not in CONVERSION_FIELDS])
def test_every_recipe_field_but_the_conversion_ones_invalidates_a_calibration(name):
    """Derived from the recipe's fields: a field added later is covered without a hand-kept list."""
    base = QuantRecipe(model="demo", method="qat" if name == "qat" else "static")
    changed = dataclasses.replace(base, **{name: _other_value(name, getattr(base, name))})
    assert changed.calibration_key() != base.calibration_key()


def test_float_layers_and_evaluation_reconvert_without_recalibrating():
    base = QuantRecipe(model="demo")
    for name in CONVERSION_FIELDS[1:]:
        value = {"overrides": {"fc1": {"observer": "minmax"}}, "metric": "cosine"}.get(name)
        changed = dataclasses.replace(base, **{name: value if value is not None else _other_value(name, getattr(base, name))})
        assert changed.calibration_key() == base.calibration_key(), name
    assert dataclasses.replace(base, float_layers=["fc1"]).calibration_key() == base.calibration_key()
    assert dataclasses.replace(base, evaluation=DataSpec(source="random")).calibration_key() == base.calibration_key()
    qat = QuantRecipe(model="demo", method="qat")
    assert dataclasses.replace(qat, float_layers=["fc1"]).calibration_key() != qat.calibration_key()


def test_notes_are_written_once_and_rendered_everywhere(demo_loaded):
    s = QuantSession(demo_loaded, QuantRecipe(model="demo", engine="qnnpack", calibration=DataSpec(source="random", batches=2)))
    unmeasured = drive(s.quantize())
    assert not any("qnnpack" in n.text for n in report_notes.notes(unmeasured))  # a note about latency: none yet
    result = drive(s.measure())
    notes = [n.text for n in report_notes.notes(result)]
    assert any("random tensors" in n for n in notes) and any("qnnpack" in n for n in notes)
    assert report_dict(result)["notes"] == notes
    text = summary_text(result)
    assert [line[len("  note: "):] for line in text.splitlines() if line.startswith("  note: ")] == notes


def test_advice_for_a_broken_dynamic_model_does_not_say_calibrate(seq_loaded):
    s = QuantSession(seq_loaded, QuantRecipe(model=seq_loaded.spec, method="dynamic"))
    result = drive(s.quantize())
    broken = result.evolve(output=dataclasses.replace(result.output, cosine=0.5))
    advice = [n.text for n in report_notes.notes(broken) if n.code == "poor-output"]
    assert advice and "calibrate on more" not in advice[0] and "float16" in advice[0]


def test_report_json_round_trips(demo_loaded):
    s = QuantSession(demo_loaded, QuantRecipe(model="demo", calibration=DataSpec(batches=2)))
    report = report_dict(drive(s.quantize()))
    assert json.loads(json.dumps(report)) == report
    assert isinstance(s.result, RunResult)


def test_kept_float_choices_survive_a_method_that_cannot_keep_them(demo_loaded):
    """Defect 5: choices were dropped silently on static -> dynamic and not restored on the way back."""
    s = QuantSession(demo_loaded, QuantRecipe(model="demo", calibration=DataSpec(batches=2)))
    s.inventory.set_float(["block1.0", "fc1"])
    s.update_recipe(method="dynamic")
    assert s.inventory.float_layers == ["fc1"]  # dynamic can keep fc1 float, not a conv
    assert s.recipe.float_layers == ["block1.0", "fc1"] and s.inapplicable_float_layers == ["block1.0"]
    result = drive(s.quantize())
    assert result.float_layers == ("fc1",)
    assert any("block1.0 do not apply to dynamic" in n.text for n in report_notes.notes(result))
    s.inventory.set_float("fc2")  # a toggle under dynamic keeps the conv choice too
    assert s.recipe.float_layers == ["block1.0", "fc1", "fc2"]
    s.update_recipe(method="static")
    assert s.inventory.float_layers == ["block1.0", "fc1", "fc2"] and s.inapplicable_float_layers == []


def test_a_recipe_with_choices_for_another_method_opens(demo_loaded, tmp_path):
    recipe = QuantRecipe(model="demo", method="dynamic", float_layers=["block1.0", "fc1"])
    recipe.save(tmp_path / "r.json")
    s = QuantSession(demo_loaded, QuantRecipe.load(tmp_path / "r.json"))
    assert s.inventory.float_layers == ["fc1"] and s.inapplicable_float_layers == ["block1.0"]


def test_a_reconversion_says_what_it_does_before_its_first_figure(demo_loaded):
    """Issue 19, 7: a reconversion (the calibration kept) yielded nothing while it converted, so the window
    showed an empty bar; the first record of a job now comes before its slow steps."""
    s = QuantSession(demo_loaded, QuantRecipe(model="demo", calibration=DataSpec(batches=2)))
    s.adopt(drive(jobs.quantize(s.snapshot(), measure=False)))
    s.inventory.set_float("fc1")
    records = list(_records(jobs.quantize(s.snapshot(), measure=False)))
    assert records[0].stage == "convert" and "1 layer(s) float" in records[0].message


def test_every_configuration_a_tune_tries_is_announced_with_an_estimate_before_it_runs():
    """Issue 19, 7: the 'ranges, all at once' trial ran under the previous record, with no estimate. Every
    trial now has a record before it saying what is tried and how long it should take."""
    from pathlib import Path

    from qtapp.core.analysis.metrics import Target
    from qtapp.core.tune.search import Budget

    spec = f"{Path(__file__).resolve().parents[2] / 'fixtures' / 'point_kinds.py'}:build"
    session = drive(QuantSession.open(QuantRecipe(model=spec, kwargs={"kind": "outlier"})))
    job = jobs.tune(session.snapshot(), Target.parse("sqnr>=40"), Budget.parse("size<=1MB"), measure=False)
    records, outcome = _records_and_result(job)
    tune = [r for r in records if r.stage == "tune"]
    trying = [r for r in tune if r.message.startswith("trying")]
    batches = [r for r in tune if r.message.startswith("ranking ")]  # the moves ranked, each alone
    assert tune[0].message == "scoring the recipe as it is"
    assert any("all at once" in r.message for r in trying)
    assert all(re.search(r"\((~\d+ s|under 1 s)\)$", r.message) for r in trying + batches)  # timed: the start was
    ranked = sum(int(r.message.split()[1]) for r in batches)
    assert batches and len(outcome.tune.steps) == 1 + len(trying) + ranked  # the start, then each announced


def _records(job):
    return _records_and_result(job)[0]


def _records_and_result(job):
    records = []
    try:
        while True:
            records.append(next(job))
    except StopIteration as stop:
        return records, stop.value
