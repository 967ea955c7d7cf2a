"""run_command, the CLI's job: it opens, runs one model job and writes the folder, and never changes the
recipe it was given (the session works on its own copy)."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest

from qtapp.core.base.progress import drive
from qtapp.core.config.recipe import DataSpec, QuantRecipe
from qtapp.core.run.command import Command, run_command
from qtapp.core.run.session import QuantSession


def test_a_command_leaves_its_recipe_as_it_was(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    np.savez("calib.npz", x=np.random.default_rng(0).random((32, 1, 8, 8), dtype=np.float32))
    recipe = QuantRecipe(model="demo", calibration=DataSpec(source="calib.npz", batches=2, batch_size=16))
    before = copy.deepcopy(recipe.to_dict())
    drive(run_command(Command(recipe, out=tmp_path / "out", formats=("pt",), measure=False)))
    assert recipe.to_dict() == before  # a relative path, as given
    written = json.loads((tmp_path / "out" / "recipe.json").read_text())
    assert written["calibration"]["source"] == str(tmp_path / "calib.npz")  # resolved on the run's copy


def test_a_tune_writes_its_chosen_recipe_and_leaves_the_callers(tmp_path):
    from qtapp.core.analysis.metrics import Target
    from qtapp.core.tune.search import Budget

    recipe = QuantRecipe(model="demo", calibration=DataSpec(batches=2))
    before = copy.deepcopy(recipe.to_dict())
    result = drive(run_command(Command(recipe, action="tune", target=Target.parse("sqnr>=99"), budget=Budget(),
                                       out=tmp_path / "out", formats=("pt",), measure=False)))
    written = json.loads((tmp_path / "out" / "recipe.json").read_text())
    assert written["float_layers"] == list(result.recipe.float_layers) and written["float_layers"]  # it kept some float
    assert recipe.to_dict() == before


def test_a_session_keeps_its_own_copy_of_the_recipe(demo_loaded):
    recipe = QuantRecipe(model="demo", calibration=DataSpec(batches=2))
    session = QuantSession(demo_loaded, recipe)
    session.inventory.set_float("fc2", True)
    session.update_recipe(observer="minmax")
    assert session.recipe.float_layers == ["fc2"] and session.recipe.observer == "minmax"
    assert recipe.float_layers == [] and recipe.observer == "histogram"


def test_an_unknown_action_is_refused():
    with pytest.raises(ValueError, match="unknown action 'calibrate'"):
        Command(QuantRecipe(model="demo"), action="calibrate")
