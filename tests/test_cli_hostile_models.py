"""Model specs, weights and --out as a hostile user gives them: one named message each, no hang, and
export keeps the same result-set guarantees as quantize (found by a sweep of ~230 hostile inputs)."""

from __future__ import annotations

import contextlib
import io
import json
import os
import stat

import pytest

from qtapp.cli import main

pytestmark = pytest.mark.filterwarnings(r"ignore:.*torch\.jit\..*deprecated:FutureWarning")


def run(*argv) -> tuple[int, str]:
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        code = main([str(a) for a in argv])
    return code, err.getvalue()


def one_line(err: str) -> str:
    lines = [l for l in err.splitlines() if l.startswith("qtapp-cli: error")]
    assert len(lines) == 1 and "--debug" not in lines[0], err
    return lines[0]


def test_a_fifo_as_model_or_weights_is_refused_without_blocking(tmp_path):
    fifo = tmp_path / "fifo.pt"
    os.mkfifo(fifo)
    assert "not a regular file" in one_line(run("inspect", fifo)[1])
    factory = tmp_path / "net.py"
    factory.write_text("import torch.nn as nn\ndef build():\n    return nn.Linear(4, 2)\n")
    assert "not a regular file" in one_line(run("inspect", f"{factory}:build", "--weights", fifo)[1])


@pytest.mark.parametrize("source, expected", [
    ("def f(:\n", "importing"),
    ("raise RuntimeError('import boom')\n", "import boom"),
    ("import nonexistent_module_xyz\n", "nonexistent_module_xyz"),
    ("def f():\n    raise ValueError('factory boom')\n", "raised ValueError while building the model: factory boom"),
    ("def f():\n    return None + 1\n", "raised TypeError while building the model"),
])
def test_broken_factory_files_are_named(tmp_path, source, expected):
    path = tmp_path / "m.py"
    path.write_text(source)
    code, err = run("inspect", f"{path}:f")
    line = one_line(err)
    assert code == 1 and expected in line and "m.py" in line
    assert "--kwargs" not in line  # no kwargs were given: do not blame them


@pytest.mark.parametrize("content", [b"", b"garbage bytes", None])
def test_empty_garbage_and_folder_models_are_not_told_to_trust(tmp_path, content):
    path = tmp_path / "m.pt"
    if content is None:
        path.mkdir()
    else:
        path.write_bytes(content)
    line = one_line(run("inspect", path)[1])
    assert "--trust" not in line and str(path) in line


def test_export_keeps_foreign_files_and_never_mixes_sets(tmp_path):
    out = tmp_path / "exp"
    out.mkdir()
    (out / "model.pt").write_bytes(b"the user's own model")
    (out / "mine.txt").write_text("notes")
    code, err = run("export", "demo", "--out", out)
    assert code == 2 and "mine.txt" in err
    assert (out / "model.pt").read_bytes() == b"the user's own model"


def test_out_under_a_file_is_named(tmp_path):
    (tmp_path / "afile").write_text("x")
    code, err = run("quantize", "--no-time-files", "demo", "--batches", "2", "--out", tmp_path / "afile" / "sub")
    assert code == 2 and "is a file, not a folder" in one_line(err)


def test_result_files_are_readable_by_others(tmp_path):
    old = os.umask(0o022)
    try:
        code, err = run("quantize", "--no-time-files", "demo", "--batches", "2", "--format", "pt", "--out", tmp_path / "out")
    finally:
        os.umask(old)
    assert code == 0, err
    for name in ("model.pt", "report.json", "recipe.json"):
        assert stat.S_IMODE((tmp_path / "out" / name).stat().st_mode) == 0o644


# -- static graphs that cannot be built or run, and runs that quantize nothing ----------------------
ODD = f"{os.path.join(os.path.dirname(__file__), 'fixtures', 'odd_graphs.py')}:build"


def test_an_untraceable_model_is_told_to_use_dynamic(tmp_path):
    code, err = run("analyze", ODD, "--kwargs", '{"kind": "data_dependent"}', "--batches", "1")
    line = one_line(err)
    assert code == 1 and "FX graph mode cannot trace this model" in line and "--method dynamic" in line


def test_an_int8_graph_that_cannot_run_names_the_op(tmp_path):
    code, err = run("analyze", ODD, "--kwargs", '{"kind": "view"}', "--batches", "1")
    line = one_line(err)
    assert code == 1 and "the int8 model torch.ao built for this model fails to run" in line
    assert "(at `view = c2.view(" in line and "Call using an FX-traced Module" not in err  # torch's own print kept out


def test_a_run_that_quantizes_nothing_says_so(tmp_path):
    code, out_err = run("quantize", "--no-time-files", ODD, "--kwargs", '{"kind": "float_only"}', "--method", "dynamic", "--format", "pt",
                        "--out", tmp_path / "o")
    report = (tmp_path / "o" / "report.json").read_text()
    assert code == 0 and "nothing was quantized: dynamic quantization covers Linear" in report


@pytest.mark.parametrize("argv, expected", [
    (["analyze", "demo", "--input-shape", "1,x"], "cannot read input shape '1,x'"),
    (["analyze", "demo", "--html"], "--html writes report.html into the result folder: give --out DIR"),
    (["analyze", "demo", "--method", "dynamic", "--observer", "minmax"], "--observer chooses the activation ranges"),
])
def test_options_that_would_be_ignored_are_refused(argv, expected):
    code, err = run(*argv)
    assert code == 2 and expected in err


def test_progress_says_each_stage_once_when_not_on_a_terminal(tmp_path):
    code, err = run("quantize", "--no-time-files", "demo", "--batches", "2", "--format", "pt", "--out", tmp_path / "o")
    assert code == 0 and sum(1 for line in err.splitlines() if line.startswith("latency:")) == 1


def test_an_untraceable_model_is_quantized_dynamically_when_no_method_was_named(tmp_path):
    code, err = run("quantize", "--no-time-files", ODD, "--kwargs", '{"kind": "data_dependent"}', "--batches", "1",
                    "--format", "pt", "--out", tmp_path / "out")
    assert code == 0, err
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    recipe = json.loads((tmp_path / "out" / "recipe.json").read_text())
    assert report["method"] == "dynamic" and recipe["method"] == "dynamic"  # the recipe reproduces the run
    assert any("static quantization needs a forward torch.fx can trace" in n and "--method static" in n
               for n in report["notes"])
    code, err = run("quantize", "--no-time-files", ODD, "--kwargs", '{"kind": "data_dependent"}', "--batches", "1",
                    "--method", "static", "--format", "pt", "--out", tmp_path / "static")
    assert code == 1 and "FX graph mode cannot trace this model" in one_line(err)  # asked for: the error
