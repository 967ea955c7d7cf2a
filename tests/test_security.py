"""Code runs only with consent, and no run leaves litter or loses results: TorchScript files are programs,
workers never import from the working folder, --out is checked before the work, signals clean up.

Canary files prove that nothing ran; everything happens under tmp_path."""

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
import torch

from qtapp.cli import main

pytestmark = pytest.mark.filterwarnings(r"ignore:.*torch\.jit\..*deprecated:FutureWarning",
                                        r"ignore:.*Lite Interpreter is deprecated.*")

QUICK = ["--no-time-files", "--batches", "1"]


def run(*argv) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
        code = main([str(a) for a in argv])
    return code, out.getvalue(), err.getvalue()


def hostile_torchscript(path: Path, canary: Path, lite: bool = False) -> Path:
    """A TorchScript file whose __setstate__ creates `canary` when the file is loaded."""

    source = textwrap.dedent(f"""
        import torch
        class Payload(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.x = torch.zeros(1)
            @torch.jit.export
            def __getstate__(self):
                return (self.x, self.training)
            @torch.jit.export
            def __setstate__(self, state: tuple[torch.Tensor, bool]):
                self.training = state[1]
                self.x = torch.from_file({str(canary)!r}, shared=True, size=4)
            def forward(self, x):
                return x + 1
        m = torch.jit.script(Payload())
        {"m._save_for_lite_interpreter" if lite else "m.save"}({str(path)!r})
    """)
    maker = canary.parent / f"make_{path.name.replace('.', '_')}.py"  # TorchScript reads the class's source
    maker.write_text(source)
    subprocess.run([sys.executable, "-W", "ignore", str(maker)], check=True, timeout=120)
    assert path.exists() and not canary.exists()
    return path


# -- 1. TorchScript is a program ---------------------------------------------------------------------------
@pytest.mark.parametrize("lite", [False, True], ids=["pt", "ptl"])
def test_inspect_and_export_of_a_torchscript_file_need_trust(tmp_path, monkeypatch, lite):
    monkeypatch.chdir(tmp_path)
    canary = tmp_path / "CANARY"
    model = hostile_torchscript(tmp_path / ("m.ptl" if lite else "m.pt"), canary, lite)
    code, _, err = run("inspect", model)
    assert code == 1 and "is a " in err and "program" in err and "--trust" in err
    code, _, err = run("export", model, "--input-shape", "1,4", "--out", tmp_path / "o")
    assert code == 1 and "--trust" in err
    assert not canary.exists() and not (tmp_path / "o").exists()
    if not lite:  # consent given: the file is loaded (and its code runs, as agreed)
        code, _, err = run("inspect", model, "--trust")
        assert code == 0, err
        assert canary.exists()


def test_a_recipe_naming_torchscript_is_refused_before_the_file_is_loaded(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    canary = tmp_path / "CANARY"
    model = hostile_torchscript(tmp_path / "m.pt", canary)
    recipe = tmp_path / "r.json"
    recipe.write_text(json.dumps({"version": 3, "model": str(model), "input_shape": "1,4"}))
    for extra in ([], ["--trust"]):  # not quantizable either way: nothing needs loading to say so
        code, _, err = run("quantize", "--recipe", recipe, *extra, *QUICK, "--out", tmp_path / "o")
        assert code == 2 and "TorchScript" in err and "no Python source" in err
        assert not canary.exists()


@pytest.mark.parametrize("fmt", ["pt", "ptl"])
def test_bench_over_a_folder_with_a_hostile_torchscript_file_runs_nothing(tmp_path, monkeypatch, fmt):
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "res"
    code, _, err = run("quantize", "demo", *QUICK, "--format", fmt, "--out", out)
    assert code == 0, err
    canary = tmp_path / "CANARY"
    hostile_torchscript(out / f"model.{fmt}", canary, lite=fmt == "ptl")  # someone swapped the file
    code, _, err = run("bench", out)
    assert code == 1 and f"model.{fmt}" in err and "--trust" in err
    assert not canary.exists()


# -- 2. workers never import from the working folder ----------------------------------------------------------
def test_modules_planted_in_the_working_folder_never_run(tmp_path, monkeypatch):
    work = tmp_path / "work"
    work.mkdir()
    for name in ("json", "statistics", "warnings", "torch", "qtapp", "executorch", "onnxruntime"):
        (work / f"{name}.py").write_text(f"open({str(tmp_path / ('RAN-' + name))!r}, 'w').write('ran')\n")
    monkeypatch.chdir(work)
    code, out, err = run("quantize", "demo", "--batches", "1", "--format", "pt", "--out", tmp_path / "o")
    assert code == 0, err
    report = json.loads((tmp_path / "o" / "report.json").read_text())
    assert report["exports"][0]["latency_ms"]["int8"] > 0  # the timing worker did run
    assert sorted(p.name for p in tmp_path.glob("RAN-*")) == []


# -- 3, 4, 6. --out: links, mount points, path limits -------------------------------------------------------
def test_an_out_that_is_a_symlink_writes_into_its_target_and_leaves_nothing(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    target = tmp_path / "real"
    link = tmp_path / "link"
    link.symlink_to(target)
    for _ in range(2):  # a new set, then a set over the previous one
        code, _, err = run("quantize", "demo", *QUICK, "--format", "pt", "--out", link)
        assert code == 0, err
    assert link.is_symlink() and os.readlink(link) == str(target)
    assert sorted(p.name for p in target.iterdir()) == ["model.pt", "recipe.json", "report.json"]
    assert [p.name for p in tmp_path.iterdir() if ".staging-" in p.name or ".previous-" in p.name] == []


def test_an_out_on_a_mount_point_is_refused_before_the_work(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    mount = tmp_path / "mnt"
    mount.mkdir()
    real = os.path.ismount
    monkeypatch.setattr(os.path, "ismount", lambda p: Path(p) == mount or real(p))
    code, _, err = run("quantize", "demo", *QUICK, "--out", mount)
    assert code == 2 and "mount point" in err and str(mount / "results") in err


def test_a_swap_that_fails_at_the_end_is_named(tmp_path, monkeypatch):
    import errno

    from qtapp.core.base import resultset

    monkeypatch.chdir(tmp_path)
    out = tmp_path / "o"
    out.mkdir()

    def busy(a, b):
        raise OSError(errno.EBUSY, os.strerror(errno.EBUSY), str(b))

    monkeypatch.setattr(resultset, "_exchange", busy)
    code, _, err = run("quantize", "demo", *QUICK, "--format", "pt", "--out", out)
    assert code == 1 and "cannot put the results in place" in err and "busy" in err.lower()
    assert "--debug" not in err and list(out.iterdir()) == []


def test_a_read_only_parent_is_refused_before_the_work(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    parent = tmp_path / "ro"
    parent.mkdir()
    real = os.access
    monkeypatch.setattr(os, "access", lambda p, mode, **kw: False if Path(p) == parent else real(p, mode, **kw))
    code, _, err = run("quantize", "demo", *QUICK, "--out", parent / "o")
    assert code == 2 and "cannot be written" in err


def test_a_250_character_out_name_works(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    out = tmp_path / ("r" * 250)
    code, _, err = run("quantize", "demo", *QUICK, "--format", "pt", "--out", out)
    assert code == 0, err
    assert (out / "report.json").exists()
    assert [p.name for p in tmp_path.iterdir() if ".staging-" in p.name] == []


def test_an_out_path_past_the_limit_is_refused_before_the_work(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    deep = tmp_path.joinpath(*(["d" * 200] * 20))  # about 4,000 characters
    code, _, err = run("quantize", "demo", *QUICK, "--out", deep)
    assert code == 2 and "limit" in err and "shorter --out" in err
    assert "calibrate" not in err  # refused at the start, not after calibrating


# -- 5. scratch folders -------------------------------------------------------------------------------------------
def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_scratch_folders_of_killed_runs_are_removed_by_the_next(tmp_path, monkeypatch):
    import tempfile

    from qtapp.core.base.scratch import scratch_dir

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    gone = dead_pid()
    orphans = [tmp_path / f"qtapp-{kind}-{gone}-abcd1234" for kind in ("latency", "measure", "float", "onnx", "ort")]
    alive = tmp_path / f"qtapp-latency-{os.getpid()}-keep0000"  # a run still going: not touched
    theirs = tmp_path / "qtapp-latency-somebody"  # not ours by name
    for d in (*orphans, alive, theirs):
        d.mkdir()
        (d / "float.pt").write_bytes(b"x" * 1000)
    with scratch_dir("latency") as fresh:
        assert fresh.is_dir() and fresh.name.startswith(f"qtapp-latency-{os.getpid()}-")
    assert not fresh.exists()
    assert [d for d in orphans if d.exists()] == [] and alive.exists() and theirs.exists()


def test_sigterm_cleans_up_like_ctrl_c(tmp_path):
    out = tmp_path / "o"
    env = {**os.environ, "TMPDIR": str(tmp_path / "tmp")}
    (tmp_path / "tmp").mkdir()
    proc = subprocess.Popen([sys.executable, "-m", "qtapp.cli", "quantize", "demo", "--batches", "2", "--format", "pt",
                             "--out", str(out)], cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not list((tmp_path / "tmp").glob("qtapp-*")):
        time.sleep(0.05)  # the run is timing its file: staging and scratch folders both exist
    assert list((tmp_path / "tmp").glob("qtapp-*")), "the run never reached the timing step"
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 143 and "terminated" in err
    assert list((tmp_path / "tmp").iterdir()) == []
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == [] and not out.exists()


# -- 7. an interrupt is reported as one ------------------------------------------------------------------------
def test_an_interrupt_that_surfaces_as_another_error_is_reported_as_an_interrupt(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    factory = tmp_path / "net.py"
    # As when Ctrl-C lands inside a library's import: the library half-initialises and fails later with
    # an unrelated error (seen: "module 'torch._dynamo' has no attribute 'utils'").
    factory.write_text(textwrap.dedent("""
        import os, signal
        import torch.nn as nn
        def build():
            try:
                os.kill(os.getpid(), signal.SIGINT)
            except BaseException:
                pass
            raise AttributeError("module 'torch._dynamo' has no attribute 'utils'")
    """))
    code, _, err = run("quantize", f"{factory}:build", *QUICK, "--out", tmp_path / "o")
    assert code == 130 and err.strip() == "qtapp-cli: interrupted"


# -- 9. deep nesting --------------------------------------------------------------------------------------------
def test_deeply_nested_kwargs_and_reports_are_named(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    deep = '{"a": ' * 60_000 + "1" + "}" * 60_000
    code, _, err = run("inspect", "torchvision:resnet18", "--kwargs", deep)
    assert code == 2 and "nested too deeply" in err
    folder = tmp_path / "res"
    folder.mkdir()
    (folder / "recipe.json").write_text(json.dumps({"version": 3, "model": "demo"}))
    (folder / "report.json").write_text('{"exports": ' + "[" * 60_000 + "]" * 60_000 + "}")
    code, _, err = run("bench", folder)
    assert code == 2 and "nested too deeply" in err


# -- 11. --json keeps stdout for the JSON ---------------------------------------------------------------------------
def test_json_output_is_not_broken_by_a_model_that_prints(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    factory = tmp_path / "chatty.py"
    factory.write_text(textwrap.dedent("""
        import torch.nn as nn
        print("debug: factory imported")
        class Chatty(nn.Module):
            def __init__(self):
                super().__init__()
                self.fc = nn.Linear(4, 3)
                self.example_input_shape = (1, 4)
            def forward(self, x):
                print("debug: forward called")
                return self.fc(x)
        def build():
            print("debug: building")
            return Chatty()
    """))
    code, out, err = run("quantize", f"{factory}:build", *QUICK, "--format", "pt", "--json", "--out", tmp_path / "o")
    assert code == 0, err
    assert json.loads(out)["model"] == f"{factory}:build" and "debug: forward called" in err
    # And at the level of the file descriptor, as a shell pipes it:
    proc = subprocess.run([sys.executable, "-m", "qtapp.cli", "inspect", f"{factory}:build", "--json"],
                          capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["model"] == f"{factory}:build" and "debug: building" in proc.stderr
