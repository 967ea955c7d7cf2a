"""End to end through qtapp-cli: models with several inputs, token-id models, and hostile data files."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

pytestmark = pytest.mark.filterwarnings(r"ignore:.*torch\.jit\..*deprecated:FutureWarning")

FIXTURES = Path(__file__).resolve().parent / "fixtures"
TWO_SPEC = f"{FIXTURES / 'multi_input.py'}:build_two"
TOKENS_SPEC = f"{FIXTURES / 'multi_input.py'}:build_tokens"


def report_of(out) -> dict:
    return json.loads((out / "report.json").read_text())


def test_two_input_model_with_random_data_quantizes_and_exports(tmp_path, monkeypatch, cli):
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "o"
    code, _, stderr = cli(["quantize", "--no-time-files", TWO_SPEC, "--input-shape", "1,16;1,8", "--batches", "2",
                           "--format", "pt,ptl,onnx", "--out", out])
    assert code == 0, stderr
    report = report_of(out)
    assert report["calibration"]["samples"] == 32 and report["output"]["cosine"] > 0.9
    exports = {e["format"]: e for e in report["exports"]}
    assert set(exports) == {"pt", "ptl", "onnx"}
    assert exports["pt"]["verified"] and exports["ptl"]["verified"]
    assert exports["onnx"]["max_abs_diff"] is not None
    scripted = torch.jit.load(str(out / "model.pt"))
    assert scripted(torch.randn(2, 16), torch.randn(2, 8)).shape == (2, 4)


def test_two_input_model_with_an_npz_of_x0_x1(tmp_path, monkeypatch, cli):
    monkeypatch.chdir(tmp_path)
    rng = np.random.default_rng(0)
    with open(tmp_path / "two.npz", "wb") as f:
        np.savez(f, x0=rng.standard_normal((40, 16)).astype(np.float32),
                 x1=rng.standard_normal((40, 8)).astype(np.float32), y=rng.integers(0, 4, 40))
    out = tmp_path / "o"
    code, _, stderr = cli(["quantize", "--no-time-files", TWO_SPEC, "--input-shape", "1,16;1,8", "--calib", tmp_path / "two.npz",
                           "--batch-size", "8", "--format", "pt", "--out", out])
    assert code == 0, stderr
    report = report_of(out)
    assert report["calibration"]["samples"] == 40 and report["calibration"]["labels"] is True
    # random labels for a random model: its top-1 on them is at chance, so no accuracy is claimed, and why
    assert report["output"]["accuracy_float"] is None
    assert "at chance level for 4 outputs" in report["output"]["accuracy_withheld"]


def test_a_token_model_takes_int64_inputs_from_its_data(tmp_path, monkeypatch, cli):
    monkeypatch.chdir(tmp_path)
    ids = np.random.default_rng(0).integers(0, 50, (48, 12)).astype(np.int64)
    np.save(tmp_path / "ids.npy", ids)
    out = tmp_path / "o"
    code, stdout, stderr = cli(["quantize", "--no-time-files", TOKENS_SPEC, "--calib", tmp_path / "ids.npy", "--format", "pt",
                                "--out", out])  # no --input-dtype
    assert code == 0, stderr
    report = report_of(out)
    assert report["input"] == "1x12 int64"
    assert any("int64" in n and "ids.npy" in n for n in report["notes"])
    assert "int64" in stdout


def test_the_input_dtype_follows_the_calibration_file_in_a_session(tmp_path):
    from qtapp.core.base.progress import drive
    from qtapp.core.config.recipe import DataSpec, QuantRecipe
    from qtapp.core.run.session import QuantSession

    np.save(tmp_path / "ids.npy", np.ones((8, 12), np.int32))
    np.save(tmp_path / "floats.npy", np.ones((8, 12), np.float32))
    session = drive(QuantSession.open(QuantRecipe(model=TOKENS_SPEC, calibration=DataSpec(str(tmp_path / "ids.npy")))))
    assert session.input_spec.dtype == "int32"
    session.update_recipe(calibration=DataSpec(str(tmp_path / "floats.npy")))
    assert session.input_spec.dtype == "float32"
    session.update_recipe(calibration=DataSpec(str(tmp_path / "ids.npy")), input_dtype="int64")
    assert session.input_spec.dtype == "int64"  # an explicit dtype wins over the data's


def test_nan_in_calibration_data_is_named_not_a_torch_error(tmp_path, monkeypatch, cli):
    monkeypatch.chdir(tmp_path)
    x = np.ones((20, 16), np.float32)
    x[3, 2] = np.nan
    x[5, :3] = np.inf
    with open(tmp_path / "calib.npz", "wb") as f:
        np.savez(f, x0=x, x1=np.ones((20, 8), np.float32))
    code, _, stderr = cli(["quantize", "--no-time-files", TWO_SPEC, "--input-shape", "1,16;1,8", "--calib", tmp_path / "calib.npz",
                           "--out", tmp_path / "o"])
    assert code == 1
    assert str(tmp_path / "calib.npz") in stderr and "4 NaN/Inf" in stderr and "histc" not in stderr


def test_a_run_of_a_billion_batches_is_refused_at_once(tmp_path):
    # In a child process with a time limit: before the cap, this run went on for ever.
    proc = subprocess.run([sys.executable, "-m", "qtapp.cli", "quantize", "demo", "--calib", "random",
                           "--batches", "1000000000", "--out", str(tmp_path / "o")],
                          capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    assert "at most 1,000,000 samples" in proc.stderr and "1,000,000,000 batches" in proc.stderr
    assert not (tmp_path / "o").exists()
