"""The recipe: round trips, refusals that name what is wrong, and paths relative to the recipe file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from qtapp.core.base.errors import UsageError
from qtapp.core.config.recipe import RECIPE_VERSION, DataSpec, QatSpec, QuantRecipe


def full_recipe() -> QuantRecipe:
    return QuantRecipe(
        model="torchvision:resnet18", weights="none", kwargs={"num_classes": 10}, input_shape="1,3,64,64",
        method="qat", static_mode="fx", engine="x86", dtype="qint8", per_channel=False, observer="minmax",
        calibration=DataSpec(source="random", batches=3, batch_size=5, preprocess="none"),
        evaluation=DataSpec(source="random", batches=2, batch_size=7,
                            preprocess={"size": [64, 64], "mean": [0.5] * 3, "std": [0.25] * 3}),
        qat=QatSpec(epochs=3, lr=0.01), float_layers=["layer4.1.conv2", "fc", "fc"])


def test_dict_round_trip():
    recipe = full_recipe()
    data = recipe.to_dict()
    assert list(data)[0] == "version" and data["version"] == RECIPE_VERSION
    assert data["float_layers"] == ["fc", "layer4.1.conv2"]  # sorted, deduplicated
    assert data["calibration"] == {"source": "random", "batches": 3, "batch_size": 5, "preprocess": "none"}
    again = QuantRecipe.from_dict(json.loads(json.dumps(data)))
    assert again == recipe
    assert isinstance(again.calibration, DataSpec) and isinstance(again.qat, QatSpec)


def test_save_load_round_trip(tmp_path):
    recipe = full_recipe()
    path = tmp_path / "recipe.json"
    recipe.save(path)
    assert json.loads(path.read_text())["engine"] == "x86"
    assert QuantRecipe.load(path) == recipe
    assert [p.name for p in tmp_path.iterdir()] == ["recipe.json"]  # no temporary file left


def test_defaults_fill_missing_keys():
    recipe = QuantRecipe.from_dict({"version": 1, "model": "demo"})
    assert recipe == QuantRecipe(model="demo")
    assert (recipe.method, recipe.engine, recipe.calibration.batches) == ("static", "fbgemm", 8)


@pytest.mark.parametrize("data, named", [
    ({"version": 1, "model": "demo", "engin": "x86"}, "engin"),
    ({"version": 1, "model": "demo", "calibration": {"batchez": 2}}, "batchez"),
    ({"version": 1, "model": "demo", "qat": {"epochs": 1, "momentum": 0.9}}, "momentum"),
    ({"version": 1, "model": "demo", "evaluation": {"source": "demo", "split": "test"}}, "split"),
])
def test_unknown_keys_are_refused_by_name(data, named):
    with pytest.raises(UsageError) as exc:
        QuantRecipe.from_dict(data)
    assert "unknown" in str(exc.value) and named in str(exc.value)


def test_unknown_version_is_refused():
    with pytest.raises(UsageError) as exc:
        QuantRecipe.from_dict({"version": 5, "model": "demo"})
    assert "version 5" in str(exc.value) and f"writes {RECIPE_VERSION}" in str(exc.value)


def test_a_version_1_recipe_is_read_and_written_as_the_current_version(tmp_path):
    old = {"version": 1, "model": "demo", "observer": "minmax", "float_layers": ["fc2"]}
    recipe = QuantRecipe.from_dict(old)
    assert recipe.version == RECIPE_VERSION == 4 and recipe.overrides == {} and recipe.metric is None
    assert recipe.backend == "torch.ao" and recipe.onnx_quantizer == "torch" and recipe.weight_bits == 8
    recipe.save(tmp_path / "r.json")
    again = QuantRecipe.load(tmp_path / "r.json")
    assert again.to_dict() == recipe.to_dict() and again.to_dict()["version"] == 4


def test_overrides_round_trip_and_are_checked():
    from qtapp.core.config.recipe import PointOverride

    recipe = QuantRecipe.from_dict({"version": 2, "model": "demo", "metric": "cosine", "overrides": {
        "layer1.0/add": {"observer": "percentile-99.99"}, "fc2": {"per_channel": False}}})
    assert recipe.overrides["layer1.0/add"] == PointOverride(observer="percentile-99.99")
    assert recipe.to_dict()["overrides"] == {"fc2": {"per_channel": False},
                                             "layer1.0/add": {"observer": "percentile-99.99"}}
    for bad, named in (({"x": {"observer": "median"}}, "median"), ({"x": {"colour": 1}}, "colour"),
                       ({"x": {}}, "at least one"), ({"x": 3}, "must be an object"), ([1], "JSON object")):
        with pytest.raises(UsageError, match=named):
            QuantRecipe.from_dict({"version": 2, "model": "demo", "overrides": bad})
    with pytest.raises(UsageError, match="unknown metric 'accuracy'"):
        QuantRecipe.from_dict({"version": 2, "model": "demo", "metric": "accuracy"})
    dynamic_range = QuantRecipe(model="demo", method="dynamic", overrides={"fc2": {"observer": "minmax"}})
    with pytest.raises(UsageError, match="applies to static quantization only"):
        dynamic_range.check_applicable()
    with pytest.raises(UsageError, match="dtype applies to dynamic quantization only"):
        QuantRecipe(model="demo", overrides={"fc2": {"dtype": "float16"}}).check_applicable()


def test_overrides_and_the_observer_need_no_recalibration():
    base = QuantRecipe(model="demo")
    assert QuantRecipe(model="demo", observer="minmax").calibration_key() == base.calibration_key()
    assert QuantRecipe(model="demo", overrides={"fc2": {"observer": "minmax"}}).calibration_key() == base.calibration_key()
    assert QuantRecipe(model="demo", per_channel=False).calibration_key() != base.calibration_key()


@pytest.mark.parametrize("key, value", [
    ("method", "dynamc"), ("engine", "arm"), ("dtype", "int4"), ("observer", "percentile"),
    ("static_mode", "graph"), ("input_dtype", "bfloat8"),
])
def test_bad_enum_values_are_refused_by_name(key, value):
    with pytest.raises(UsageError) as exc:
        QuantRecipe.from_dict({"version": 1, "model": "demo", key: value})
    assert f"unknown {key} {value!r}" in str(exc.value)


@pytest.mark.parametrize("batches", [0, -1, "8", True, 2.5])
def test_bad_batches_are_refused(batches):
    with pytest.raises(UsageError) as exc:
        QuantRecipe.from_dict({"version": 1, "model": "demo", "calibration": {"batches": batches}})
    assert "batches must be a positive int" in str(exc.value) and repr(batches) in str(exc.value)


@pytest.mark.parametrize("data, message", [
    ({"version": 1, "model": "demo", "calibration": {"batch_size": 0}}, "batch_size must be a positive int"),
    ({"version": 1, "model": "demo", "qat": {"lr": 0}}, "qat.lr must be a number"),
    ({"version": 1, "model": "demo", "qat": {"epochs": 0}}, "qat.epochs must be a positive int"),
    ({"version": 1, "model": "demo", "per_channel": "yes"}, "per_channel must be true or false"),
    ({"version": 1, "model": "demo", "float_layers": "fc1"}, "float_layers must be a list"),
    ({"version": 1, "model": "demo", "input_shape": "1,a"}, "cannot read input shape"),
    ({"version": 1, "model": "demo", "calibration": {"preprocess": {"crop": 3}}}, "unknown preprocess keys ['crop']"),
    ({"version": 1, "model": "demo", "calibration": "demo"}, "recipe calibration must be a JSON object"),
    ({"version": 1, "model": ""}, "recipe has no model spec"),
    ({"version": 1, "method": "static"}, "recipe has no 'model' key"),
    ([1, 2], "a recipe must be a JSON object"),
])
def test_other_bad_values_are_refused(data, message):
    with pytest.raises(UsageError) as exc:
        QuantRecipe.from_dict(data)
    assert message in str(exc.value)


def test_unreadable_recipe_files(tmp_path):
    with pytest.raises(UsageError, match="recipe file not found"):
        QuantRecipe.load(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(UsageError, match="is not valid JSON"):
        QuantRecipe.load(bad)


def test_relative_paths_resolve_against_the_recipe_folder(tmp_path, monkeypatch):
    folder = tmp_path / "project"
    folder.mkdir()
    for name in ("net.py", "weights.pth", "calib.npy"):
        (folder / name).write_text("")
    (folder / "images").mkdir()
    (folder / "recipe.json").write_text(json.dumps({
        "version": 1, "model": "net.py:build", "weights": "weights.pth",
        "calibration": {"source": "calib.npy"}, "evaluation": {"source": "images"}}))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)

    recipe = QuantRecipe.load(Path("../project/recipe.json"))
    assert recipe.model == f"{folder.resolve() / 'net.py'}:build"
    assert recipe.weights == str(folder.resolve() / "weights.pth")
    assert recipe.calibration.source == str(folder.resolve() / "calib.npy")
    assert recipe.evaluation.source == str(folder.resolve() / "images")


def test_non_paths_are_left_alone(tmp_path):
    (tmp_path / "recipe.json").write_text(json.dumps({
        "version": 1, "model": "torchvision.models:resnet18", "weights": "DEFAULT",
        "calibration": {"source": "random"}, "evaluation": {"source": "demo"}}))
    recipe = QuantRecipe.load(tmp_path / "recipe.json")
    assert recipe.model == "torchvision.models:resnet18" and recipe.weights == "DEFAULT"
    assert (recipe.calibration.source, recipe.evaluation.source) == ("random", "demo")


def test_a_relative_recipe_runs_from_another_folder(tmp_path, monkeypatch, seq_spec):
    """The recipe's folder holds the factory file, its weights and the data; run it from elsewhere."""
    import shutil

    import numpy as np
    import torch

    from qtapp.core.base.progress import drive
    from qtapp.core.run.session import QuantSession

    folder = tmp_path / "project"
    folder.mkdir()
    shutil.copy(seq_spec.rpartition(":")[0], folder / "seqmodels.py")
    torch.manual_seed(7)
    import importlib.util

    spec = importlib.util.spec_from_file_location("seqmodels_copy", folder / "seqmodels.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    trained = mod.SeqClassifier()
    torch.save(trained.state_dict(), folder / "weights.pth")
    np.save(folder / "calib.npy", np.random.default_rng(0).standard_normal((8, 12, 16)).astype(np.float32))
    QuantRecipe(model="seqmodels.py:build", weights="weights.pth", method="dynamic",
                calibration=DataSpec(source="calib.npy", batches=2, batch_size=4)).save(folder / "recipe.json")
    monkeypatch.chdir(tmp_path)

    recipe = QuantRecipe.load(folder / "recipe.json")
    session = drive(QuantSession.open(recipe))
    assert torch.equal(session.loaded.module.proj.weight, trained.proj.weight)
    assert session.open_calibration().kind == "tensor"


def test_a_version_4_recipe_holds_torchao_bits_per_layer(tmp_path):
    """Issue 20: low-bit weights per layer, stored as per-point overrides, read back exactly."""
    recipe = QuantRecipe(model="demo", backend="torchao", method="dynamic", weight_bits=4, group_size=32,
                         overrides={"fc2": {"weight_bits": 8}, "fc1": {"weight_bits": 4, "group_size": 64}})
    recipe.check_applicable()
    recipe.save(tmp_path / "r.json")
    again = QuantRecipe.load(tmp_path / "r.json")
    assert again.to_dict() == recipe.to_dict()
    assert again.overrides["fc1"].group_size == 64 and again.overrides["fc2"].weight_bits == 8
    data = json.loads((tmp_path / "r.json").read_text())
    assert data["version"] == 4 and data["overrides"]["fc2"] == {"weight_bits": 8}


@pytest.mark.parametrize("changes, says", [
    ({"weight_bits": 3}, "weight_bits must be 4 or 8"),
    ({"weight_bits": 4, "group_size": 48}, "power of two"),
    ({"overrides": {"fc1": {"weight_bits": 2}}}, "override weight_bits must be 4 or 8"),
])
def test_impossible_bits_are_refused(changes, says):
    with pytest.raises(UsageError, match=says):
        QuantRecipe(model="demo", backend="torchao", method="dynamic", **changes)


@pytest.mark.parametrize("changes, says", [
    ({"method": "weight-only"}, "add --backend torchao"),
    ({"weight_bits": 4}, "add --backend torchao"),
    ({"overrides": {"fc1": {"weight_bits": 4}}}, "apply to --backend torchao only"),
    ({"backend": "torchao", "method": "static"}, "not static"),
    ({"backend": "torchao", "method": "dynamic", "dtype": "float16"}, "--weight-bits 4 or 8"),
])
def test_torchao_settings_elsewhere_are_refused_when_run(changes, says):
    recipe = QuantRecipe(model="demo", **changes)
    with pytest.raises(UsageError, match=says):
        recipe.check_applicable()
