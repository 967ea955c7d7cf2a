"""A session's memory: every run kept as its report.json (no model), two runs compared from those
figures, and undo/redo over the settings and float choices."""

from __future__ import annotations

import json

import pytest

from qtapp.core.base.progress import drive
from qtapp.core.config.recipe import DataSpec, QuantRecipe
from qtapp.core.report.render import report_dict
from qtapp.core.run.history import EditHistory
from qtapp.core.run.session import QuantSession


@pytest.fixture
def two_runs(demo_loaded):
    s = QuantSession(demo_loaded, QuantRecipe(model="demo", calibration=DataSpec(batches=2)))
    first = drive(s.quantize())
    s.runs.add(first, "quantize")
    s.inventory.set_float("fc1")
    s.update_recipe(observer="minmax")
    second = drive(s.quantize())
    s.runs.add(second, "quantize")
    return s, first, second


def test_each_run_is_kept_as_its_report_and_holds_no_model(two_runs):
    s, first, second = two_runs
    assert [r.number for r in s.runs.records] == [1, 2]
    record = s.runs.get(1)
    assert record.report == json.loads(json.dumps(report_dict(first), default=str))  # its report.json, plain data
    assert record.recipe["float_layers"] == [] and s.runs.get(2).recipe["float_layers"] == ["fc1"]
    assert "#2 static fbgemm, 1 float (quantize)" in s.runs.get(2).label


def test_a_measurement_or_export_of_the_same_configuration_replaces_its_record(two_runs):
    s, _first, second = two_runs
    s.runs.add(second, "export")
    assert [r.number for r in s.runs.records] == [1, 2] and s.runs.get(2).action == "quantize"
    s.runs.add(second, "quantize")  # a run of its own, even of the same configuration, is a new record
    assert [r.number for r in s.runs.records] == [1, 2, 3]


def test_two_runs_compare_with_the_figures_of_their_reports(two_runs):
    s, first, second = two_runs
    c = s.runs.compare(1, 2)
    rows = {r.label: r for r in c.figures}
    assert rows["output SQNR"].a == first.output.sqnr_db and rows["output SQNR"].b == second.output.sqnr_db
    assert rows["top-1 (quantized)"].a == first.output.accuracy_quantized
    assert ("observer", "histogram", "minmax") in c.settings
    assert c.float_only_b == ("fc1",) and c.float_only_a == ()
    pairs = {p.name: p for p in c.points}
    for layer in first.layers:
        assert pairs[layer.name].local_a == layer.local_sqnr_db and pairs[layer.name].accumulated_a == layer.sqnr_db
    for layer in second.layers:
        assert pairs[layer.name].local_b == layer.local_sqnr_db and pairs[layer.name].float_b == layer.kept_float
    assert pairs["fc1"].float_b and not pairs["fc1"].float_a
    text = c.text("#1", "#2")
    assert "observer histogram -> minmax" in text and "float only in #2: fc1" in text
    with pytest.raises(KeyError, match="no run #7"):
        s.runs.compare(1, 7)


def test_undo_and_redo_walk_the_settings_and_float_choices(demo_loaded):
    s = QuantSession(demo_loaded, QuantRecipe(model="demo"))
    edits = EditHistory(s.recipe)
    assert not edits.can_undo and not edits.record(s.recipe)  # nothing changed: nothing recorded
    s.inventory.set_float("fc1")
    edits.record(s.recipe)
    s.update_recipe(engine="x86")
    edits.record(s.recipe)
    assert edits.undo_text() == "engine x86"
    now, back = edits.undo()
    assert now.settings_changes(back) == {"engine": "fbgemm"} and back.configuration()[0] == ["fc1"]
    assert edits.undo_text() == "fc1 kept float" and edits.redo_text() == "engine x86"
    now, back = edits.undo()
    assert now.settings_changes(back) == {} and back.configuration() == ([], {}, False)
    assert not edits.can_undo
    edits.redo()
    s.update_recipe(engine="fbgemm")  # the session put back where the redo left it (fc1 float, fbgemm)
    s.inventory.set_float("fc1", keep_float=False)
    s.inventory.set_float("fc2")
    edits.record(s.recipe)  # a new edit after an undo drops what could be redone
    assert not edits.can_redo and edits.undo_text() == "fc2 kept float, fc1 back to int8"


def test_undoing_a_method_change_gives_typed_settings_back(demo_loaded):
    s = QuantSession(demo_loaded, QuantRecipe(model="demo", calibration=DataSpec(batches=3)))
    edits = EditHistory(s.recipe)
    s.update_recipe(method="dynamic", calibration=DataSpec(batches=5))
    edits.record(s.recipe)
    now, back = edits.undo()
    changes = now.settings_changes(back)
    assert changes["method"] == "static" and changes["calibration"] == DataSpec(batches=3)
    s.update_recipe(**changes)  # what the window does with them
    assert s.recipe.method == "static" and s.recipe.calibration.batches == 3
