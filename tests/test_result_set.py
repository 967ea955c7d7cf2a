"""A result set is whole or absent: staged and swapped in, never mixed, never over the run's inputs.

Runs go through the CLI (in-process, or in a subprocess where a signal or a resource limit is needed)
on the bundled demo. Every path is under tmp_path."""

from __future__ import annotations

import contextlib
import io
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from qtapp.cli import main
from qtapp.core.base.errors import Cancelled, QtappError
from qtapp.core.base.progress import CancelToken, drive
from qtapp.core.base.resultset import ResultSet, write_bytes_atomic
from qtapp.core.config.recipe import DataSpec, QuantRecipe

pytestmark = pytest.mark.filterwarnings(r"ignore:.*torch\.jit\..*deprecated:FutureWarning")

QUICK = ["--no-time-files", "--batches", "2"]


def run_cli(*argv) -> tuple[int, str]:
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        code = main(list(argv))
    return code, err.getvalue()


def snapshot(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


def litter(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*")
                  if ".partial" in p.name or ".staging-" in p.name or ".previous-" in p.name)


@pytest.fixture(scope="module")
def previous(tmp_path_factory) -> Path:
    """A finished result set (demo with fc1 kept float), copied by each test that needs one."""
    out = tmp_path_factory.mktemp("prev") / "out"
    code, err = run_cli("quantize", "demo", "--float", "fc1", *QUICK, "--out", str(out))
    assert code == 0, err
    return out


def copy_of(previous: Path, dest: Path) -> Path:
    dest.mkdir()
    for name, data in snapshot(previous).items():
        (dest / name).write_bytes(data)
    return dest


# -- the set is whole ----------------------------------------------------------------------------------

def test_a_new_run_replaces_the_whole_previous_set(previous, tmp_path):
    out = copy_of(previous, tmp_path / "out")
    code, err = run_cli("quantize", "demo", *QUICK, "--format", "pt", "--out", str(out))
    assert code == 0, err
    names = sorted(p.name for p in out.iterdir())
    assert names == ["model.pt", "recipe.json", "report.json"]  # the old model.ptl went with its set
    report = json.loads((out / "report.json").read_text())
    assert report["float_layers"] == [] and json.loads((out / "recipe.json").read_text())["float_layers"] == []
    assert report["exports"][0]["path"] == str(out / "model.pt")  # the final path, not the staging one
    assert litter(tmp_path) == []


def test_a_late_failure_leaves_the_previous_set_intact(previous, tmp_path):
    out = copy_of(previous, tmp_path / "out")
    before = snapshot(out)
    bad_eval = tmp_path / "eval.npy"
    bad_eval.write_bytes(b"\x93NUMPY garbage")  # fails only at evaluation, after calibration
    code, err = run_cli("quantize", "demo", *QUICK, "--eval", str(bad_eval), "--out", str(out))
    assert code == 1 and str(bad_eval) in err
    assert snapshot(out) == before
    assert litter(tmp_path) == []


def test_cancel_leaves_the_previous_set_intact(previous, tmp_path):
    from qtapp.core.run.command import Command, run_command

    out = copy_of(previous, tmp_path / "out")
    before = snapshot(out)
    cancel = CancelToken()
    seen = []

    def on_progress(p):
        seen.append(p.stage)
        if p.stage == "export":
            cancel.cancel()

    with pytest.raises(Cancelled):
        drive(run_command(Command(QuantRecipe(model="demo", calibration=DataSpec(batches=2)), out=out,
                                  formats=("pt", "ptl")), cancel=cancel), on_progress)
    assert "export" in seen and snapshot(out) == before and litter(tmp_path) == []


@pytest.mark.parametrize("stage", ["calibrate", "evaluate"])
def test_kill_9_at_any_stage_leaves_the_previous_set_and_the_next_run_cleans_up(previous, tmp_path, stage):
    out = copy_of(previous, tmp_path / "out")
    before = snapshot(out)
    proc = subprocess.Popen([sys.executable, "-m", "qtapp.cli", "quantize", "demo", "--batches", "8",
                             "--out", str(out)], stderr=subprocess.PIPE, stdout=subprocess.DEVNULL,
                            text=True, cwd=tmp_path)
    deadline = time.monotonic() + 120
    for line in proc.stderr:  # a line per finished stage (stderr is not a terminal)
        if line.startswith(f"{stage}:") or time.monotonic() > deadline:
            break
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert snapshot(out) == before  # the whole previous set, byte for byte
    stale = [p for p in tmp_path.iterdir() if ".staging-" in p.name]
    assert stale, "the killed run should have left its staging folder (proving it was killed mid-run)"
    code, err = run_cli("quantize", "demo", *QUICK, "--out", str(out))
    assert code == 0, err
    assert litter(tmp_path) == []


# -- nothing the run reads is written over ---------------------------------------------------------------

def test_a_model_file_inside_out_is_refused_before_any_work(tmp_path, monkeypatch):
    import torch

    monkeypatch.chdir(tmp_path)
    out = tmp_path / "out"
    out.mkdir()
    model = torch.nn.Sequential(torch.nn.Linear(4, 2))
    torch.save(model, out / "report.json")  # a model file that happens to be named like our report
    before = (out / "report.json").read_bytes()
    code, err = run_cli("quantize", str(out / "report.json"), "--input-shape", "1,4", "--out", str(out))
    assert code == 2 and "report.json" in err and "reads" in err
    assert (out / "report.json").read_bytes() == before


def test_weights_inside_out_are_refused(tmp_path, monkeypatch):
    import torch

    from qtapp.core.base import demo

    monkeypatch.chdir(tmp_path)
    out = tmp_path / "out"
    out.mkdir()
    torch.save(demo.build_model().state_dict(), out / "recipe.json")
    before = (out / "recipe.json").read_bytes()
    code, err = run_cli("quantize", "qtapp.core.base.demo:build_model", "--input-shape", "1,1,8,8",
                        "--weights", str(out / "recipe.json"), "--out", str(out))
    assert code == 2 and "recipe.json" in err
    assert (out / "recipe.json").read_bytes() == before


def test_data_inside_out_and_out_inside_data_are_refused(tmp_path, monkeypatch):
    import numpy as np

    monkeypatch.chdir(tmp_path)
    out = tmp_path / "out"
    out.mkdir()
    np.save(out / "calib.npy", np.zeros((4, 1, 8, 8), np.float32))
    code, err = run_cli("quantize", "demo", "--calib", str(out / "calib.npy"), "--out", str(out))
    assert code == 2 and "calib.npy" in err and "reads" in err
    assert (out / "calib.npy").exists()
    images = tmp_path / "images"
    images.mkdir()
    code, err = run_cli("quantize", "demo", "--calib", str(images), "--out", str(images / "results"))
    assert code == 2 and "inside the data folder" in err


def test_a_folder_with_other_files_is_not_replaced(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "mywork"
    out.mkdir()
    (out / "thesis.tex").write_text("years of work")
    code, err = run_cli("quantize", "demo", *QUICK, "--out", str(out))
    assert code == 2 and "thesis.tex" in err
    assert (out / "thesis.tex").read_text() == "years of work"
    code, err = run_cli("quantize", "demo", *QUICK, "--out", ".")
    assert code == 2 and "current folder" in err


# -- a full disk ---------------------------------------------------------------------------------------------

LIMITED = textwrap.dedent("""
    import resource, signal, sys
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG instead
    resource.setrlimit(resource.RLIMIT_FSIZE, (200_000, 200_000))
    from qtapp.cli import main
    sys.exit(main(sys.argv[1:]))
""")


def test_a_file_size_limit_ends_with_one_message_and_no_partial_file(previous, tmp_path):
    """torch's C++ writer used to abort the process (exit 134) and leave a .partial file."""
    out = copy_of(previous, tmp_path / "out")
    before = snapshot(out)
    proc = subprocess.run([sys.executable, "-c", LIMITED, "quantize", "demo", *QUICK, "--out", str(out)],
                          capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert proc.returncode == 1, proc.stderr[-2000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("qtapp-cli: error")]
    # The first file over the limit is the float TorchScript written for the latency measurement.
    assert len(errors) == 1 and "cannot write" in errors[0] and ".pt" in errors[0] and "limit" in errors[0]
    assert ".staging-" not in errors[0] and "--debug" not in errors[0]
    assert snapshot(out) == before and litter(tmp_path) == []


def _tmpfs(path: Path, size: str) -> bool:
    path.mkdir()
    if os.geteuid() != 0:
        return False
    return subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                          capture_output=True).returncode == 0


def test_a_full_disk_ends_with_one_message_and_no_partial_file(tmp_path):
    disk = tmp_path / "disk"
    if not _tmpfs(disk, "300k"):
        pytest.skip("cannot mount a small tmpfs here (needs root); the file-size-limit test covers the path")
    try:
        proc = subprocess.run([sys.executable, "-m", "qtapp.cli", "quantize", "demo", *QUICK,
                               "--out", str(disk / "out")], capture_output=True, text=True, cwd=tmp_path,
                              timeout=300)
        assert proc.returncode == 1, proc.stderr[-2000:]
        assert "disk is full" in proc.stderr and "Traceback" not in proc.stderr
        assert list(disk.iterdir()) == []
    finally:
        subprocess.run(["umount", str(disk)], check=False)


def test_write_bytes_atomic_maps_a_full_disk_to_one_error(tmp_path):
    disk = tmp_path / "disk"
    if not _tmpfs(disk, "64k"):
        pytest.skip("cannot mount a small tmpfs here")
    try:
        with pytest.raises(QtappError, match="disk is full"):
            write_bytes_atomic(disk / "model.pt", b"x" * 200_000)
        assert list(disk.iterdir()) == []
    finally:
        subprocess.run(["umount", str(disk)], check=False)


def test_result_set_publishes_over_a_previous_set_atomically(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "report.json").write_text("old")
    with ResultSet(out) as rs:
        rs.path("report.json").write_text("new")
        assert (out / "report.json").read_text() == "old"  # nothing visible before publish
        rs.publish()
    assert (out / "report.json").read_text() == "new" and litter(tmp_path) == []


def test_a_weights_download_onto_a_full_disk_says_so(tmp_path, monkeypatch):
    import torch

    from qtapp.core.model.loading import _download_weights

    disk = tmp_path / "disk"
    if not _tmpfs(disk, "1m"):
        pytest.skip("cannot mount a small tmpfs here")
    try:
        source = tmp_path / "weights-abc123.pth"
        source.write_bytes(b"x" * (3 << 20))
        monkeypatch.setattr(torch.hub, "get_dir", lambda: str(disk / "hub"))
        with pytest.raises(QtappError, match="disk is full") as info:
            list(_download_weights(source.as_uri()))
        assert "weights-abc123.pth" in str(info.value)
        assert list((disk / "hub" / "checkpoints").iterdir()) == []
    finally:
        subprocess.run(["umount", str(disk)], check=False)
