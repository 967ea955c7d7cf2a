"""`tune`, `analyze --sensitivity` and `--metric` from the shell: the files written, the exit codes, and a
tuned recipe that reproduces its figures."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytestmark = pytest.mark.filterwarnings(r"ignore:.*torch\.jit\..*deprecated:FutureWarning")

KINDS = f"{Path(__file__).resolve().parent / 'fixtures' / 'point_kinds.py'}:build"


def kind(name):
    return [KINDS, "--kwargs", json.dumps({"kind": name})]


@pytest.fixture(scope="module")
def tuned(tmp_path_factory, cli):
    out = tmp_path_factory.mktemp("tune") / "t"
    code, stdout, stderr = cli(["tune", "--no-time-files", *kind("must_stay_float"), "--target", "sqnr>=30", "--out", out])
    return code, stdout, stderr, out


def test_tune_writes_what_quantize_writes_and_tune_json(tuned):
    code, stdout, stderr, out = tuned
    assert code == 0, stderr
    assert sorted(p.name for p in out.iterdir()) == ["model.pt", "model.ptl", "recipe.json", "report.json", "tune.json"]
    assert "target      sqnr>=30 (budget none): reached" in stdout
    assert "chosen      1 point(s) kept float (fc2)" in stdout
    recipe = json.loads((out / "recipe.json").read_text())
    assert recipe["version"] == 4 and recipe["float_layers"] == ["fc2"]
    report = json.loads((out / "report.json").read_text())
    assert report["tune"]["reached"] and report["tune"]["float_points"] == ["fc2"]
    assert report["output"]["sqnr_db"] >= 30
    doc = json.loads((out / "tune.json").read_text())
    assert doc["chosen"]["float_layers"] == ["fc2"] and doc["calibrations"] == 2  # the start, and equalised
    assert report["tune"]["configurations_tried"] == len(doc["steps"])


def test_every_configuration_the_curve_and_front_show_was_timed_on_its_own_file(tuned):
    doc = json.loads((tuned[3] / "tune.json").read_text())

    def config(step):
        return json.dumps([step["float_layers"], step["overrides"], step["equalize"]], sort_keys=True)

    timed = {config(s) for s in doc["steps"] if s["measured"]}
    assert {config(doc["start"]), config(doc["chosen"])} <= timed
    assert all(point["measured"] for point in doc["curve"])
    # every configuration the front shows is built and timed (at most 6 beyond the start and the chosen one;
    # a measured size can move the front, and it is read again after each)
    assert all(doc["steps"][i]["measured"] for i in doc["front"]) or len(timed) == 8
    assert any(not s["measured"] for s in doc["steps"])  # the rest: the cost model's, said so
    report = json.loads((tuned[3] / "report.json").read_text())
    assert doc["chosen"]["latency_ms"] == report["latency_ms"]["quantized"]
    assert doc["chosen"]["size_bytes"] == report["size_bytes"]["quantized"] == (tuned[3] / "model.pt").stat().st_size


def test_quantize_with_the_tuned_recipe_reproduces_tunes_figures(tuned, tmp_path, cli):
    out = tuned[3]
    # The recipe names a Python factory: running it from the recipe file needs --trust.
    code, stdout, stderr = cli(["quantize", "--no-time-files", "--recipe", out / "recipe.json", "--trust", "--out", tmp_path / "q"])
    assert code == 0, stderr
    again = json.loads((tmp_path / "q" / "report.json").read_text())["output"]["sqnr_db"]
    tuned_report = json.loads((out / "report.json").read_text())
    assert again == pytest.approx(tuned_report["output"]["sqnr_db"], abs=0.05)
    assert again == pytest.approx(tuned_report["tune"]["score"], abs=0.05)


def test_a_target_out_of_reach_within_the_budget_exits_3_and_keeps_the_best(tmp_path, cli):
    out = tmp_path / "t"
    code, stdout, stderr = cli(["tune", "--no-time-files", *kind("must_stay_float"), "--target", "sqnr>=30", "--budget", "float<=0",
                                     "--out", out, "--format", "pt"])
    assert code == 3
    assert "target sqnr>=30 not reached within budget float<=0" in stderr and str(out) in stderr
    assert "NOT reached" in stdout
    doc = json.loads((out / "tune.json").read_text())
    assert not doc["reached"] and doc["chosen"]["float_layers"] == []
    assert (out / "model.pt").exists() and json.loads((out / "recipe.json").read_text())["float_layers"] == []


@pytest.mark.parametrize("args, message", [
    (["--target", "sqnr<=30"], "target 'sqnr<=30'"),
    (["--target", "sqnr>=30", "--budget", "speed<=2"], "cannot read budget 'speed<=2'"),
    (["--target", "drop<=1"], "needs labels"),
])
def test_bad_targets_and_budgets_are_refused_before_writing(tmp_path, args, message, cli):
    out = tmp_path / "t"
    code, stdout, stderr = cli(["tune", "--no-time-files", *kind("outlier"), *args, "--out", out])
    assert code == 2 and message in stderr
    assert not out.exists()


def test_analyze_sensitivity_prints_both_directions_and_writes_them(tmp_path, cli):
    out = tmp_path / "a"
    code, stdout, stderr = cli(["analyze", "demo", "--sensitivity", "--out", out])
    assert code == 0, stderr
    lines = stdout.splitlines()
    head = next(i for i, line in enumerate(lines) if line.startswith("  sensitivity sqnr"))
    assert "from one calibration (12 conversions" in lines[head]  # 5 toggleable points both ways, start and all-float
    assert lines[head + 1].split() == ["point", "only", "it", "float", "gain", "only", "it", "int8", "cost"]
    report = json.loads((out / "report.json").read_text())
    ranked = report["sensitivity"]["points"]
    assert len(ranked) == 5 and lines[head + 2].split()[0] == ranked[0]["name"]
    assert ranked[0]["gain"] == max(p["gain"] for p in ranked)


def test_metric_cosine_is_reported_by_name(tmp_path, cli):
    code, stdout, stderr = cli(["quantize", "--no-time-files", "demo", "--metric", "cosine", "--out", tmp_path / "q", "--format", "pt"])
    assert code == 0, stderr
    assert "  metric      cosine: quantized 0.99" in stdout
    report = json.loads((tmp_path / "q" / "report.json").read_text())
    assert report["output"]["metric"]["name"] == "cosine"
    assert json.loads((tmp_path / "q" / "recipe.json").read_text())["metric"] == "cosine"


def test_a_users_metric_function_drives_tune(tmp_path, cli):
    fn = tmp_path / "m.py"
    fn.write_text("def neg_mae(ref, q, y):\n    return -float((ref - q).abs().mean())\n")
    code, stdout, stderr = cli(["tune", "--no-time-files", *kind("must_stay_float"), "--metric", f"{fn}:neg_mae",
                                     "--target", "metric>=-0.01", "--out", tmp_path / "t", "--format", "pt"])
    assert code == 0, stderr
    doc = json.loads((tmp_path / "t" / "tune.json").read_text())
    assert doc["metric"] == f"{fn}:neg_mae" and doc["chosen"]["float_layers"] == ["fc2"]
    assert doc["chosen"]["metric"]["quantized"] >= -0.01 > doc["start"]["metric"]["quantized"]


def test_a_metric_function_named_by_a_recipe_needs_trust(tmp_path, cli):
    canary = tmp_path / "CANARY"
    fn = tmp_path / "m.py"
    fn.write_text(f"open({str(canary)!r}, 'w').close()\ndef score(ref, q, y):\n    return 1.0\n")
    recipe = tmp_path / "r.json"
    recipe.write_text(json.dumps({"version": 2, "model": "demo", "metric": f"{fn}:score"}))
    code, stdout, stderr = cli(["quantize", "--no-time-files", "--recipe", recipe, "--out", tmp_path / "q"])
    assert code == 1 and "as its metric" in stderr and "--trust" in stderr
    assert not canary.exists() and not (tmp_path / "q").exists()
    code, stdout, stderr = cli(["quantize", "--no-time-files", "--recipe", recipe, "--trust", "--out", tmp_path / "q", "--format", "pt"])
    assert code == 0, stderr
    assert canary.exists()


def test_report_html_shows_the_search_and_the_sensitivity(tmp_path, cli):
    code, _out, stderr = cli(["tune", "--no-time-files", *kind("must_stay_float"), "--target", "sqnr>=30", "--out", tmp_path / "t",
                              "--format", "pt", "--html"])
    assert code == 0, stderr
    page = (tmp_path / "t" / "report.html").read_text()
    assert "<h2>Tune: sqnr&gt;=30 (budget none)</h2>" in page and "aria-label='trade-off'" in page
    assert "1 point(s) kept float: fc2" in page
    code, _out, stderr = cli(["analyze", "demo", "--sensitivity", "--out", tmp_path / "a", "--html"])
    assert code == 0, stderr
    page = (tmp_path / "a" / "report.html").read_text()
    assert "<h2>Sensitivity (sqnr)</h2>" in page and "<title>fc2: gain " in page and "<title>fc2: cost " in page
