"""A model whose output the comparison cannot read, or that breaks on its data, is named with the
problem before any long work (not a torch error deep inside calibration or comparison)."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import numpy as np
import pytest

from qtapp.cli import main

pytestmark = pytest.mark.filterwarnings(r"ignore:.*torch\.jit\..*deprecated:FutureWarning")
SPEC = f"{Path(__file__).parent / 'fixtures' / 'odd_models.py'}:build"


def run(*argv) -> tuple[int, str]:
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        code = main(list(argv))
    return code, err.getvalue()


@pytest.mark.parametrize("kind, expected", [
    ("ReturnsNone", "forward returns None, not a tensor"),
    ("ReturnsScalar", "returns a scalar"),
    ("ReturnsStrings", "forward returns a dict with keys label, score, not a tensor"),
    ("BatchOfOneOnly", "runs on one sample but fails on a batch of 2"),
    ("NaNOutput", "NaN/Inf values"),
])
def test_unusable_outputs_are_named(tmp_path, kind, expected):
    code, err = run("quantize", SPEC, "--kwargs", json.dumps({"kind": kind}), "--batches", "2",
                    "--out", str(tmp_path / "out"))
    assert code == 1 and expected in err, err
    assert "--debug" not in err  # its own message, not the catch-all
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("method", ["static", "dynamic"])
def test_labels_that_are_not_class_ids_of_the_output_are_data_and_accuracy_is_withheld(tmp_path, method):
    data = tmp_path / "data.npz"
    rng = np.random.default_rng(0)
    np.savez(data, x=rng.normal(size=(32, 4)).astype(np.float32), y=np.arange(32) % 20)
    code, err = run("quantize", SPEC, "--method", method, "--calib", str(data), "--eval", str(data),
                    "--no-time-files", "--format", "pt", "--out", str(tmp_path / "out"))
    assert code == 0, err
    output = json.loads((tmp_path / "out" / "report.json").read_text())["output"]
    assert output["accuracy_float"] is None
    assert "go up to 19" in output["accuracy_withheld"] and "outputs 3 classes" in output["accuracy_withheld"]
    code, err = run("quantize", SPEC, "--method", method, "--calib", str(data), "--eval", str(data), "--metric",
                    "top1", "--no-time-files", "--format", "pt", "--out", str(tmp_path / "out2"))
    assert code == 1 and "top1" in err and "go up to 19" in err  # asked for by name: refused, saying why


def test_qat_on_a_model_without_logits_is_refused(tmp_path):
    code, err = run("quantize", SPEC, "--kwargs", '{"kind": "Features"}', "--method", "qat", "--batches", "2",
                    "--out", str(tmp_path / "out"))
    assert code == 1 and "QAT fine-tunes on classification logits" in err and "(2, 3, 1)" in err, err


def test_a_working_classifier_passes_the_probe(tmp_path):
    code, err = run("quantize", SPEC, "--batches", "2", "--format", "pt", "--out", str(tmp_path / "out"))
    assert code == 0, err


@pytest.mark.parametrize("method", ["static", "dynamic"])
def test_nan_outputs_on_a_later_batch_are_named(tmp_path, method):
    x = np.ones((64, 4), np.float32)
    x[40:] *= 100.0  # batches 3 and 4 (of 16) make the model return NaN
    data = tmp_path / "data.npy"
    np.save(data, x)
    code, err = run("quantize", SPEC, "--kwargs", '{"kind": "NaNOnLargeInputs"}', "--method", method,
                    "--calib", str(data), "--eval", str(data), "--batches", "4", "--out", str(tmp_path / "out"))
    assert code == 1 and "NaN/Inf" in err and "batch 3" in err and str(data) in err, err
