"""The CLI contract: files written, report.json schema, recipes re-run, exit codes and messages."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from qtapp.core.config.recipe import QuantRecipe

pytestmark = pytest.mark.filterwarnings(r"ignore:.*torch\.jit\..*deprecated:FutureWarning")

REPORT_SCHEMA = {
    "schema_version": None, "qtapp_version": None, "torch_version": None, "model": None, "method": None,
    "engine": None,
    "calibration": {"source", "batches", "samples", "representative"},
    "size_bytes": {"float", "quantized"},
    "latency_ms": {"float", "quantized", "batch", "threads"},
    "output": {"sqnr_db", "cosine", "max_abs_error", "top1_agreement", "accuracy_float", "accuracy_quantized"},
    "layers": {"name", "kind", "type", "quantized", "sqnr_db", "accumulated_sqnr_db", "local_sqnr_db",
               "normalised_error", "range", "diagnosis"},
    "points": {"count", "quantized", "bad", "worst"},
    "exports": {"format", "path", "bytes", "verified", "max_abs_diff"},
    "notes": None,
    "verdict": {"level", "reason", "next", "repair_target", "repair_budget"},
    "corrections": None,
}


def console_script(name: str) -> str:
    beside = Path(sys.executable).parent / name
    found = str(beside) if beside.exists() else shutil.which(name)
    assert found, f"{name} is not installed"
    return found


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory, cli):
    out = tmp_path_factory.mktemp("cli_demo")
    code, stdout, stderr = cli(["quantize", "--no-time-files", "demo", "--out", out])
    return code, stdout, stderr, out


def read_report(out: Path) -> dict:
    return json.loads((out / "report.json").read_text())


def test_quantize_demo_writes_models_recipe_and_report(demo_run):
    code, stdout, stderr, out = demo_run
    assert code == 0, stderr
    assert sorted(p.name for p in out.iterdir()) == ["model.pt", "model.ptl", "recipe.json", "report.json"]
    assert "accuracy    float" in stdout and f"wrote       {out / 'model.pt'}" in stdout
    # progress goes to (the current) stderr, one line per finished stage when it is not a terminal
    assert "calibrate: 8/8 batches, 128 samples" in stderr and "export: wrote model.ptl" in stderr
    assert "calibrate:" not in stdout and "Traceback" not in stderr


def test_report_has_every_key_of_the_schema(demo_run):
    report = read_report(demo_run[3])
    missing = [key for key in REPORT_SCHEMA if key not in report]
    assert missing == []
    for key, subkeys in REPORT_SCHEMA.items():
        if subkeys is None:
            continue
        rows = report[key] if isinstance(report[key], list) else [report[key]]
        assert rows, f"report[{key!r}] is empty"
        for row in rows:
            assert subkeys <= set(row), f"report[{key!r}] lacks {sorted(subkeys - set(row))}"
    assert isinstance(report["notes"], list)


def test_report_values_for_the_demo(demo_run):
    report = read_report(demo_run[3])
    assert (report["schema_version"], report["qtapp_version"]) == (5, "0.1.0")
    assert report["torch_version"] == torch.__version__
    assert (report["model"], report["method"], report["engine"]) == ("demo", "static", "fbgemm")
    calib = report["calibration"]
    assert (calib["source"], calib["batches"], calib["samples"], calib["representative"]) == ("demo calib split", 8, 128, True)
    size = report["size_bytes"]
    assert size["quantized"] <= 0.30 * size["float"]
    out = report["output"]
    assert out["accuracy_float"] - out["accuracy_quantized"] <= 0.02 and out["accuracy_float"] > 0.95
    lat = report["latency_ms"]
    assert lat["batch"] == 1 and lat["threads"] >= 1 and lat["float"] > 0 and lat["quantized"] > 0
    layers = {layer["name"]: layer for layer in report["layers"]}
    assert list(layers) == ["input:x", "block1.0", "block2.0", "pool", "block3.0", "gap", "flatten", "fc1", "fc2"]
    assert all(layer["quantized"] for layer in report["layers"])
    assert layers["block2.0"]["kind"] == "module" and layers["input:x"]["kind"] == "input"
    assert layers["block2.0"]["sqnr_db"] == layers["block2.0"]["accumulated_sqnr_db"]  # the old key, kept
    for layer in layers.values():  # rounding to a well-fitted range: close to the ideal 1/sqrt(12)
        assert 15 < layer["local_sqnr_db"] < 60 and 0.1 < layer["normalised_error"] < 0.4
    assert layers["pool"]["range"]["levels_total"] == 128  # fbgemm's activations use 7 bits
    exports = {e["format"]: e for e in report["exports"]}
    assert set(exports) == {"pt", "ptl"}
    for fmt, e in exports.items():
        assert e["verified"] and e["max_abs_diff"] == 0.0
        assert Path(e["path"]).stat().st_size == e["bytes"]
    # the written model.pt is what size_bytes measured (up to zip entry names)
    assert exports["pt"]["bytes"] == pytest.approx(size["quantized"], rel=0.02)
    assert exports["pt"]["bytes"] <= 0.30 * size["float"]


def test_recipe_rerun(demo_run, tmp_path, cli):
    first = demo_run[3]
    code, _, stderr = cli(["quantize", "--no-time-files", "--recipe", first / "recipe.json", "--out", tmp_path])
    assert code == 0, stderr
    a, b = read_report(first), read_report(tmp_path)
    assert (b["method"], b["engine"], b["model"]) == (a["method"], a["engine"], a["model"])
    assert b["calibration"] == a["calibration"]
    assert QuantRecipe.load(tmp_path / "recipe.json") == QuantRecipe.load(first / "recipe.json")


def test_json_output_and_options_over_a_recipe(demo_run, tmp_path, cli):
    code, stdout, stderr = cli(["quantize", "--no-time-files", "--recipe", demo_run[3] / "recipe.json", "--engine", "qnnpack",
                                "--float", "fc2", "--batches", "2", "--format", "pt", "--json",
                                "--out", tmp_path])
    assert code == 0, stderr
    report = json.loads(stdout)
    assert report == read_report(tmp_path)
    assert report["engine"] == "qnnpack" and report["float_layers"] == ["fc2"]
    assert report["calibration"]["batches"] == 2
    assert {layer["name"]: layer["quantized"] for layer in report["layers"]}["fc2"] is False
    assert any("qnnpack targets Arm" in n for n in report["notes"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.pt", "recipe.json", "report.json"]


# -- usage errors: exit 2 ------------------------------------------------------------------------------
def test_unknown_engine_is_refused_by_argparse(tmp_path, cli):
    code, _, stderr = cli(["quantize", "--no-time-files", "demo", "--engine", "tpu", "--out", tmp_path])
    assert code == 2
    assert "invalid choice: 'tpu'" in stderr
    assert list(tmp_path.iterdir()) == []


def test_misspelt_float_layer_exits_2_naming_it(tmp_path, cli):
    out = tmp_path / "out"
    code, stdout, stderr = cli(["quantize", "--no-time-files", "demo", "--float", "block1.O", "--out", out])
    assert code == 2
    assert stderr.startswith("qtapp-cli: error: no layer named 'block1.O'") and "block1.0" in stderr
    assert "Traceback" not in stderr and stdout == ""
    assert not out.exists()


def test_recipe_with_an_unknown_key_exits_2(tmp_path, cli):
    recipe = tmp_path / "recipe.json"
    recipe.write_text(json.dumps({"version": 1, "model": "demo", "calibation": {"batches": 2}}))
    code, _, stderr = cli(["quantize", "--no-time-files", "--recipe", recipe, "--out", tmp_path / "out"])
    assert code == 2 and "unknown recipe keys: calibation" in stderr


def test_wrong_input_shape_exits_2_naming_the_expected_shape(tmp_path, cli):
    code, _, stderr = cli(["quantize", "--no-time-files", "demo", "--input-shape", "1,3,32,33", "--out", tmp_path])
    assert code == 2
    assert "1x3x32x33" in stderr and "1x1x8x8" in stderr


def test_quantizing_torchscript_exits_2_explaining_why(demo_loaded, tmp_path, cli):
    path = tmp_path / "scripted.pt"
    torch.jit.script(demo_loaded.module).save(str(path))
    code, _, stderr = cli(["quantize", "--no-time-files", path, "--input-shape", "1,1,8,8", "--out", tmp_path / "out"])
    assert code == 2
    assert "is TorchScript: it has no Python source" in stderr


# -- failures: exit 1 ----------------------------------------------------------------------------------
def test_missing_model_file_exits_1_with_a_short_message(tmp_path, cli):
    code, stdout, stderr = cli(["quantize", "--no-time-files", tmp_path / "nope.pt", "--out", tmp_path / "out"])
    assert code == 1
    assert stderr.startswith("qtapp-cli: error: model file not found") and stderr.count("\n") == 1
    assert "Traceback" not in stderr and stdout == ""


def test_a_factory_that_raises_is_named_with_its_error(tmp_path, cli):
    factory = tmp_path / "broken.py"
    factory.write_text(textwrap.dedent("""
        def build():
            raise RuntimeError("the factory is broken")
    """))
    code, _, stderr = cli(["inspect", f"{factory}:build"])
    assert code == 1
    assert f"{factory}:build raised RuntimeError while building the model: the factory is broken" in stderr
    assert "Traceback" not in stderr and "--debug" not in stderr


def test_console_script_exit_codes_and_debug_traceback(tmp_path):
    cli = console_script("qtapp-cli")
    missing = str(tmp_path / "nope.pt")
    plain = subprocess.run([cli, "quantize", missing, "--out", str(tmp_path / "o")],
                           capture_output=True, text=True, timeout=120)
    assert plain.returncode == 1
    assert "model file not found" in plain.stderr and "Traceback" not in plain.stderr
    debug = subprocess.run([cli, "--debug", "quantize", missing, "--out", str(tmp_path / "o")],
                           capture_output=True, text=True, timeout=120)
    assert debug.returncode == 1
    assert "Traceback (most recent call last)" in debug.stderr and "QtappError: model file not found" in debug.stderr


def test_console_script_help():
    result = subprocess.run([console_script("qtapp-cli"), "--help"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0
    assert "usage: qtapp-cli" in result.stdout
    for command in ("quantize", "inspect", "export"):
        assert command in result.stdout


# -- inspect and export ----------------------------------------------------------------------------------
def test_inspect_json(tmp_path, cli):
    code, stdout, stderr = cli(["inspect", "demo", "--json", "--float", "block2"])
    assert code == 0, stderr
    data = json.loads(stdout)
    assert data["model"] == "demo" and data["input"] == "1x1x8x8"
    rows = {row["name"]: row for row in data["layers"]}
    assert [n for n, row in rows.items() if row["quantizable"]] == ["block1.0", "block2.0", "block3.0", "fc1", "fc2"]
    assert rows["block2.0"]["state"] == "float" and rows["block2.1"]["state"] == "float"
    assert rows["block1.0"]["state"] == "quantized" and rows[""]["state"] == "partial"
    assert rows["block1.0"]["group"] == ["block1.0", "block1.1", "block1.2"]


def test_inspect_text(cli):
    code, stdout, _ = cli(["inspect", "torchvision:quantized_mobilenet_v2", "--method", "static"])
    assert code == 0
    assert "torchvision:quantized_mobilenet_v2: input 1x3x224x224, method static (eager)" in stdout
    assert "fuses 0+1+2" in stdout


def test_inspect_a_file_factory_with_kwargs_and_weights(seq_spec, tmp_path, cli):
    import importlib.util

    spec = importlib.util.spec_from_file_location("seqmodels_for_cli", seq_spec.rpartition(":")[0])
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    weights = tmp_path / "seq.pth"
    torch.save(module.SeqClassifier(hidden=8, classes=3).state_dict(), weights)
    code, stdout, stderr = cli(["inspect", seq_spec, "--kwargs", '{"hidden": 8, "classes": 3}',
                                "--weights", weights, "--method", "dynamic", "--json"])
    assert code == 0, stderr
    rows = {row["name"]: row for row in json.loads(stdout)["layers"]}
    assert rows["head.2"]["params"] == 8 * 3 + 3 and rows["head.2"]["output_shape"] == "1x3"
    assert [n for n, row in rows.items() if row["quantizable"]] == ["proj", "lstm", "gru", "head.0", "head.2"]


def test_bad_kwargs_json_exits_2(seq_spec, cli):
    code, _, stderr = cli(["inspect", seq_spec, "--kwargs", "{hidden: 8}"])
    assert code == 2 and "--kwargs is not valid JSON" in stderr
    code, _, stderr = cli(["inspect", seq_spec, "--kwargs", "[8]"])
    assert code == 2 and "--kwargs must be a JSON object" in stderr


def test_export_float_model(tmp_path, cli):
    code, stdout, stderr = cli(["export", "demo", "--format", "pt,ptl", "--out", tmp_path])
    assert code == 0, stderr
    assert stdout.count("verified") == 2 and "NOT verified" not in stdout
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.pt", "model.ptl"]


def test_export_refuses_the_model_source_folder(tmp_path, cli):
    source = tmp_path / "model.pt"
    torch.save(torch.nn.Sequential(torch.nn.Linear(4, 2)), source)
    code, _, stderr = cli(["export", source, "--input-shape", "1,4", "--out", tmp_path])
    assert code == 2 and "holds" in stderr and "model.pt" in stderr  # --out holds the model it reads
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.pt"]


# -- a float layer survives into the exported TorchScript ---------------------------------------------
def test_float_layer_is_float_in_the_exported_torchscript(tmp_path, cli):
    torch.manual_seed(0)
    code, _, stderr = cli(["quantize", "--no-time-files", "torchvision:resnet18", "--engine", "x86", "--float", "layer4.1.conv2",
                           "--batches", "2", "--batch-size", "4", "--format", "pt", "--out", tmp_path])
    assert code == 0, stderr
    report = read_report(tmp_path)
    flags = {layer["name"]: layer["quantized"] for layer in report["layers"]}
    assert flags["layer4.1.conv2"] is False and flags["layer4.1.conv1"] is True
    scripted = torch.jit.load(str(tmp_path / "model.pt"))
    modules = dict(scripted.named_modules())

    def qualified(name):
        return modules[name]._c._type().qualified_name()

    assert "torch.nn.modules" in qualified("layer4.1.conv2") and "quantized" not in qualified("layer4.1.conv2")
    assert "quantized" in qualified("layer4.1.conv1") and "quantized" in qualified("fc")
    assert report["exports"][0]["verified"]


# -- analyze ------------------------------------------------------------------------------------------
OUTLIER_SPEC = f"{Path(__file__).resolve().parent / 'fixtures' / 'point_kinds.py'}:build"


def test_analyze_names_the_broken_point_first_and_writes_the_same_to_report_json(tmp_path, cli):
    out = tmp_path / "a"
    code, stdout, stderr = cli(["analyze", OUTLIER_SPEC, "--kwargs", '{"kind": "outlier"}', "--out", out])
    assert code == 0, stderr
    table = stdout.splitlines()
    header = next(i for i, line in enumerate(table) if line.split()[:3] == ["point", "local", "accum."])
    first = table[header + 1].split()
    assert first[0] == "fc2"
    assert "outliers set the range: 0.1% of values use 9" in table[header + 1]
    assert "4 points, 4 in int8, 1 worse than the rest" in stdout
    report = read_report(out)
    assert sorted(p.name for p in out.iterdir()) == ["recipe.json", "report.json"]  # no models: nothing exported
    worst = report["points"]["worst"][0]
    assert worst["name"] == "fc2" and worst["diagnosis"].startswith("outliers set the range")
    assert report["points"]["bad"] == ["fc2"]
    fc2 = next(p for p in report["layers"] if p["name"] == "fc2")
    assert fc2["kind"] == "module" and fc2["diagnosis"][0]["code"] == "outlier-range"
    assert fc2["local_sqnr_db"] == pytest.approx(float(first[1]), abs=0.05)
    assert report["latency_ms"]["float"] is None  # analyze measures error, not speed


def test_analyze_without_out_writes_nothing(tmp_path, monkeypatch, cli):
    monkeypatch.chdir(tmp_path)
    code, stdout, stderr = cli(["analyze", "demo", "--batches", "2", "--top", "3"])
    assert code == 0, stderr
    assert "give --out DIR to write report.json" in stdout and list(tmp_path.iterdir()) == []
    assert sum(1 for line in stdout.splitlines() if "(no worse than the rest)" in line) == 3


def test_analyze_refuses_a_bad_top(cli):
    code, _, stderr = cli(["analyze", "demo", "--top", "0"])
    assert code == 2 and "--top must be a positive number" in stderr
