"""Hostile recipes: whatever a recipe file holds, reading it ends in a valid recipe or one UsageError
that names the problem, never a raw exception."""

from __future__ import annotations

import json
import os

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from qtapp.core.base.errors import UsageError
from qtapp.core.config.recipe import QuantRecipe

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-10**12, 10**12) | st.floats(allow_nan=False) | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12)
KEYS = ["model", "weights", "kwargs", "input_shape", "input_dtype", "method", "static_mode", "engine", "dtype",
        "per_channel", "observer", "calibration", "evaluation", "qat", "float_layers"]
data_specs = st.fixed_dictionaries({}, optional={"source": json_values, "batches": json_values,
                                                 "batch_size": json_values, "preprocess": json_values})


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.fixed_dictionaries({"version": st.just(1), "model": st.just("demo")},
                             optional={k: (data_specs if k in ("calibration", "evaluation") else json_values)
                                       for k in KEYS[1:]}))
def test_any_recipe_content_is_a_recipe_or_a_usage_error(data):
    try:
        recipe = QuantRecipe.from_dict(data)
    except UsageError as exc:
        assert str(exc)
        return
    # What was accepted is well typed all the way down, and round-trips exactly.
    for spec in (recipe.calibration, recipe.evaluation):
        assert isinstance(spec.source, str) and type(spec.batches) is int and type(spec.batch_size) is int
        pre = spec.preprocess
        assert pre in ("auto", "imagenet", "none") or isinstance(pre, dict)
        if isinstance(pre, dict):
            size = pre.get("size", [1, 1])
            assert isinstance(size, list) and len(size) == 2 and all(type(d) is int and d > 0 for d in size)
            for key in ("mean", "std"):
                assert all(type(v) in (int, float) for v in pre.get(key, [1.0]))
    assert isinstance(recipe.kwargs, dict) and all(isinstance(n, str) for n in recipe.float_layers)
    assert QuantRecipe.from_dict(json.loads(recipe.to_json())) == recipe


@pytest.mark.parametrize("pre, named", [
    ({"size": "224"}, "size must be [H, W]"),
    ({"size": [224]}, "size must be [H, W]"),
    ({"size": [224, -1]}, "size must be [H, W]"),
    ({"size": [True, 3]}, "size must be [H, W]"),
    ({"mean": "0.5"}, "mean must be a list of numbers"),
    ({"mean": [0.5, "a", 0.5]}, "mean must be a list of numbers"),
    ({"std": [0.2, 0, 0.2]}, "must not contain 0"),
    ({"std": {"r": 1}}, "std must be a list of numbers"),
])
def test_preprocess_values_of_the_wrong_type_are_refused(pre, named):
    with pytest.raises(UsageError) as exc:
        QuantRecipe.from_dict({"version": 1, "model": "demo", "calibration": {"preprocess": pre}})
    assert named in str(exc.value)


def test_a_recipe_without_version_is_refused():
    with pytest.raises(UsageError, match="no 'version' key"):
        QuantRecipe.from_dict({"model": "demo"})


def test_float16_with_static_or_qat_is_refused_when_run():
    for method in ("static", "qat"):
        recipe = QuantRecipe(model="demo", method=method, dtype="float16")
        with pytest.raises(UsageError, match="dtype float16 applies to dynamic quantization only"):
            recipe.check_applicable()
    QuantRecipe(model="demo", method="dynamic", dtype="float16").check_applicable()


@pytest.mark.parametrize("content, named", [
    (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\xff\xfe", "not UTF-8"),
    ('{"version": 1, "model": "d\xe9mo"}'.encode("latin-1"), "not UTF-8"),
    (b"[" * 100_000 + b"]" * 100_000, "nested too deeply"),
    (b'{"version": 1, "model": "demo", "engine": "arm"}', "unknown engine"),
    (b" " * (2 << 20), "a recipe is a small JSON file"),
])
def test_unreadable_recipe_files_name_the_file(tmp_path, content, named):
    path = tmp_path / "recipe.json"
    path.write_bytes(content)
    with pytest.raises(UsageError) as exc:
        QuantRecipe.load(path)
    assert named in str(exc.value) and str(path) in str(exc.value)


def test_a_fifo_given_as_recipe_is_refused_without_blocking(tmp_path):
    fifo = tmp_path / "recipe.json"
    os.mkfifo(fifo)
    with pytest.raises(UsageError, match="not a regular file"):
        QuantRecipe.load(fifo)
    with pytest.raises(UsageError, match="not a regular file"):
        QuantRecipe.load(tmp_path)
