"""Models that are unusual but real get a run, or a message that names the real problem (never the
catch-all, never a wrong hint): float64 weights, (tensor, dict) and tuple outputs under QAT, BatchNorm
without running statistics, dict outputs for ONNX."""

from __future__ import annotations

import json
import textwrap

import numpy as np
import pytest

pytestmark = pytest.mark.filterwarnings(r"ignore:.*torch\.jit\..*deprecated:FutureWarning")

QUICK = ["--no-time-files", "--batches", "2", "--format", "pt"]

MODELS = textwrap.dedent("""
    import torch, torch.nn as nn

    class Vec(nn.Module):
        def __init__(self, extras=None, bn_stats=True):
            super().__init__()
            torch.manual_seed(0)
            self.fc = nn.Linear(6, 3)
            self.extras = extras
            self.example_input_shape = (1, 6)
        def forward(self, x):
            y = self.fc(x)
            if self.extras == "dict":
                return y, {"aux": y * 2}
            if self.extras == "tuple":
                return y, y.sum(1)
            return y

    def f64():
        return Vec().double()

    def with_dict():
        return Vec("dict")

    def with_tuple():
        return Vec("tuple")

    class NoStats(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3)
            self.bn = nn.BatchNorm2d(4, track_running_stats=False)
            self.fc = nn.Linear(4, 3)
            self.example_input_shape = (1, 3, 8, 8)
        def forward(self, x):
            return self.fc(self.bn(self.conv(x)).mean((2, 3)))

    def no_stats():
        return NoStats()
""")


@pytest.fixture
def models(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "models.py").write_text(MODELS)
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "labelled.npz", x=rng.standard_normal((64, 6)).astype(np.float32), y=rng.integers(0, 3, 64))
    return tmp_path


def test_a_float64_model_runs_in_float32_with_a_note(models, cli):
    for extra in ([], ["--input-dtype", "float64"]):
        code, _, err = cli(["quantize", "models.py:f64", *QUICK, *extra, "--out", models / "o"])
        assert code == 0, err
        report = json.loads((models / "o" / "report.json").read_text())
        notes = " ".join(report["notes"])
        assert "float64: converted to float32" in notes
        assert report["output"]["sqnr_db"] > 20


@pytest.mark.parametrize("factory", ["with_dict", "with_tuple"])
@pytest.mark.parametrize("labelled", [True, False], ids=["labels", "distilled"])
def test_qat_trains_on_the_first_output_of_a_model_returning_extras(models, cli, factory, labelled):
    data = ["--calib", "labelled.npz"] if labelled else []
    code, _, err = cli(["quantize", f"models.py:{factory}", "--method", "qat", "--epochs", "1", *data, *QUICK,
                        "--out", models / "o"])
    assert code == 0, err
    report = json.loads((models / "o" / "report.json").read_text())
    assert report["output"]["sqnr_db"] > 15


def test_batchnorm_without_running_statistics_is_named(models, cli):
    code, _, err = cli(["quantize", "models.py:no_stats", *QUICK, "--out", models / "o"])
    assert code == 1
    assert "bn (BatchNorm2d) keeps no running statistics (track_running_stats=False)" in err
    assert "cannot trace" not in err


def test_dict_outputs_for_onnx_are_named(models, cli):
    pytest.importorskip("onnxruntime")
    code, _, err = cli(["quantize", "models.py:with_dict", "--no-time-files", "--batches", "2", "--format", "onnx",
                        "--out", models / "o"])
    assert code == 1 and "returns a dict among its outputs" in err and "NamedTuple" in err


@pytest.mark.parametrize("dtype", ["int64", "uint16"])
def test_image_arrays_stored_as_integers_are_pixels_not_token_ids(models, cli, dtype):
    """A conv model has no embedding: integer data can only be numbers for it (pixels saved as int64, or
    a 16-bit sensor's uint16), never token ids."""
    (models / "conv.py").write_text(textwrap.dedent("""
        import torch, torch.nn as nn
        def build():
            torch.manual_seed(0)
            m = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 4))
            m.example_input_shape = (1, 3, 16, 16)
            return m
    """))
    top = 255 if dtype == "int64" else 65535
    pixels = np.random.default_rng(0).integers(0, top + 1, (32, 3, 16, 16)).astype(dtype)
    np.save(models / "images.npy", pixels)
    code, _, err = cli(["quantize", "conv.py:build", "--calib", "images.npy", *QUICK, "--out", models / "o"])
    assert code == 0, err
    report = json.loads((models / "o" / "report.json").read_text())
    assert report["input"] == "1x3x16x16"  # float32: no dtype suffix
    assert f"holds {dtype} values: fed to the model as float32" in report["calibration"]["preprocessing"]
