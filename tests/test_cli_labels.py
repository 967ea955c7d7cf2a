"""Labels of any task are data: a pitch estimator's Hz, a sentence embedder's pair ids (-1 for none)
reach the run and the user's metric exactly as stored; only top-1 needs class ids, and says so."""

from __future__ import annotations

import json
import textwrap

import numpy as np
import pytest

pytestmark = pytest.mark.filterwarnings(r"ignore:.*torch\.jit\..*deprecated:FutureWarning")

QUICK = ["--no-time-files", "--batches", "2", "--format", "pt"]


@pytest.fixture
def task(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "nets.py").write_text(textwrap.dedent("""
        import torch, torch.nn as nn

        def pitch():  # audio frames -> pitch in Hz (a regression head)
            torch.manual_seed(0)
            m = nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 1))
            m.example_input_shape = (1, 64)
            return m

        def embedder():  # features -> an embedding
            torch.manual_seed(0)
            m = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 8))
            m.example_input_shape = (1, 16)
            return m
    """))
    (tmp_path / "metric.py").write_text(textwrap.dedent("""
        import json, torch
        def seen(ref, q, y):  # records what it was given, scores the output's closeness
            json.dump({"dtype": str(y.dtype), "first": y[:4].tolist(), "shape": list(y.shape)},
                      open("seen.json", "w"))
            return -float((ref - q).abs().mean())
    """))
    rng = np.random.default_rng(0)
    hz = rng.uniform(80.0, 800.0, 64)
    np.savez(tmp_path / "pitch.npz", x=rng.standard_normal((64, 64)).astype(np.float32), y=hz)
    pairs = np.where(np.arange(64) % 5 == 0, -1, np.arange(64) // 2)
    np.savez(tmp_path / "pairs.npz", x=rng.standard_normal((64, 16)).astype(np.float32), y=pairs)
    return tmp_path, hz, pairs


def test_regression_targets_in_hz_are_accepted_and_reach_the_metric_as_stored(task, cli):
    folder, hz, _ = task
    code, _, err = cli(["quantize", "nets.py:pitch", "--calib", "pitch.npz", "--eval", "pitch.npz", "--metric",
                        "metric.py:seen", *QUICK, "--out", folder / "o"])
    assert code == 0, err
    seen = json.loads((folder / "seen.json").read_text())
    assert seen["dtype"] == "torch.float64" and seen["shape"] == [64] and seen["first"] == pytest.approx(hz[:4].tolist())
    report = json.loads((folder / "o" / "report.json").read_text())
    assert report["output"]["accuracy_float"] is None and report["output"]["metric"]["name"] == "metric.py:seen"
    assert report["evaluation"]["labels"] is True


def test_pair_ids_with_minus_one_are_accepted_and_accuracy_withheld_with_the_reason(task, cli):
    folder, _, pairs = task
    code, _, err = cli(["quantize", "nets.py:embedder", "--calib", "pairs.npz", "--eval", "pairs.npz", *QUICK,
                        "--out", folder / "o"])
    assert code == 0, err
    report = json.loads((folder / "o" / "report.json").read_text())
    assert report["output"]["accuracy_float"] is None
    assert "negative values (lowest -1)" in report["output"]["accuracy_withheld"]
    code, _, err = cli(["quantize", "nets.py:embedder", "--calib", "pairs.npz", "--eval", "pairs.npz",
                        "--metric", "metric.py:seen", *QUICK, "--out", folder / "o"])
    assert code == 0, err
    seen = json.loads((folder / "seen.json").read_text())
    assert seen["dtype"] == "torch.int64" and seen["first"] == pairs[:4].tolist()


def test_top1_asked_for_with_labels_that_are_not_class_ids_is_refused_before_any_work(task, cli):
    folder, _, _ = task
    code, _, err = cli(["quantize", "nets.py:pitch", "--calib", "pitch.npz", "--eval", "pitch.npz", "--metric", "top1",
                        *QUICK, "--out", folder / "o"])
    assert code == 2 and "class ids" in err and "real values" in err
    assert "calibrate" not in err  # before any work
    code, _, err = cli(["tune", "nets.py:pitch", "--calib", "pitch.npz", "--eval", "pitch.npz", "--target", "drop<=1",
                        *QUICK, "--out", folder / "t"])
    assert code == 2 and "class ids" in err
