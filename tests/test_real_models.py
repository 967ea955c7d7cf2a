"""A real pretrained network in the suite (the rest are in benchmarks/real_models.py): CREPE tiny with
the weights its PyPI wheel ships, on frames made here at a known pitch. With the defaults the int8 model
must keep the task (raw pitch accuracy within 2 points of float), say so in its verdict, and be smaller
than float; its labels (Hz) are data, scored by the task's own metric."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.filterwarnings(r"ignore:.*torch\.jit\..*deprecated:FutureWarning")

REAL = Path(__file__).resolve().parent / "fixtures" / "real"


def test_crepe_keeps_its_pitch_accuracy_with_the_defaults(tmp_path, cli, monkeypatch):
    import sys

    monkeypatch.syspath_prepend(str(REAL))
    import crepe

    x, hz = crepe.frames(128, seed=0)
    np.savez(tmp_path / "calib.npz", x=x[:64], y=hz[:64])
    np.savez(tmp_path / "eval.npz", x=x[64:], y=hz[64:])
    code, _, err = cli(["quantize", f"{REAL / 'crepe.py'}:build", "--calib", tmp_path / "calib.npz", "--eval",
                        tmp_path / "eval.npz", "--metric", f"{REAL / 'crepe.py'}:pitch_rpa50", "--batches", "2",
                        "--batch-size", "32", "--format", "pt", "--out", tmp_path / "o"])
    assert code == 0, err
    report = json.loads((tmp_path / "o" / "report.json").read_text())
    metric = report["output"]["metric"]
    assert metric["float"] >= 0.9  # the float model does its job on these frames
    assert metric["float"] - metric["quantized"] <= 0.02
    assert report["verdict"]["level"] == "usable", report["verdict"]
    assert report["size_bytes"]["quantized"] < 0.4 * report["size_bytes"]["float"]
    assert report["output"]["accuracy_float"] is None and "real values" in report["output"]["accuracy_withheld"]
    sys.modules.pop("crepe", None)
