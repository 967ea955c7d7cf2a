"""A recipe is data: a Python callable it names runs only with consent (--trust, or SPEC typed on the
command line). Canary files prove that nothing ran; everything happens under tmp_path."""

from __future__ import annotations

import contextlib
import io
import json

import pytest

from qtapp.cli import main

pytestmark = pytest.mark.filterwarnings(r"ignore:.*torch\.jit\..*deprecated:FutureWarning")


def run(*argv) -> tuple[int, str]:
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        code = main(list(argv))
    return code, err.getvalue()


def write_recipe(path, **fields):
    path.write_text(json.dumps({"version": 1, **fields}))
    return path


def test_os_system_named_by_a_recipe_does_not_run(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    canary = tmp_path / "CANARY"
    recipe = write_recipe(tmp_path / "r.json", model="os:system", kwargs={"command": f"touch {canary}"})
    code, err = run("quantize", "--no-time-files", "--recipe", str(recipe), "--out", str(tmp_path / "out"))
    assert code == 1 and "os:system" in err and str(recipe) in err and "--trust" in err
    assert not canary.exists() and not (tmp_path / "out").exists()


def test_shutil_rmtree_named_by_a_recipe_deletes_nothing(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "thesis.tex").write_text("years of work")
    recipe = write_recipe(tmp_path / "r.json", model="shutil:rmtree", kwargs={"path": str(precious)})
    code, err = run("quantize", "--no-time-files", "--recipe", str(recipe), "--out", str(tmp_path / "out"))
    assert code == 1 and "shutil:rmtree" in err
    assert (precious / "thesis.tex").read_text() == "years of work"


def test_a_file_py_factory_named_by_a_recipe_is_not_even_imported(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    canary = tmp_path / "CANARY"
    factory = tmp_path / "net.py"
    factory.write_text(f"open({str(canary)!r}, 'w').write('imported')\n"
                       "import torch.nn as nn\n"
                       "def build():\n    m = nn.Linear(4, 2)\n    m.example_input_shape = (1, 4)\n    return m\n")
    recipe = write_recipe(tmp_path / "r.json", model="net.py:build", input_shape="1,4")
    code, err = run("quantize", "--no-time-files", "--recipe", str(recipe), "--batches", "2", "--out", str(tmp_path / "out"))
    assert code == 1 and "net.py:build" in err and not canary.exists()
    # With --trust the same recipe runs (the canary proves the code ran, as the user agreed).
    code, err = run("quantize", "--no-time-files", "--recipe", str(recipe), "--trust", "--batches", "2", "--format", "pt",
                    "--out", str(tmp_path / "out"))
    assert code == 0, err
    assert canary.exists() and (tmp_path / "out" / "model.pt").exists()


def test_a_spec_typed_on_the_command_line_is_consent(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    factory = tmp_path / "net.py"
    factory.write_text("import torch.nn as nn\n"
                       "def build():\n    m = nn.Sequential(nn.Linear(4, 3))\n    m.example_input_shape = (1, 4)\n"
                       "    return m\n")
    recipe = write_recipe(tmp_path / "r.json", model="os:system", engine="x86")
    code, err = run("quantize", "--no-time-files", f"{factory}:build", "--recipe", str(recipe), "--batches", "2", "--format", "pt",
                    "--out", str(tmp_path / "out"))
    assert code == 0, err
    assert json.loads((tmp_path / "out" / "report.json").read_text())["engine"] == "x86"


def test_torchvision_and_the_demo_named_by_a_recipe_need_no_consent(tmp_path):
    recipe = write_recipe(tmp_path / "r.json", model="demo", calibration={"batches": 2})
    code, err = run("quantize", "--no-time-files", "--recipe", str(recipe), "--format", "pt", "--out", str(tmp_path / "out"))
    assert code == 0, err
