"""The CLI's deployment path: every format in one run and one report, re-timed by `bench`."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("executorch")


@pytest.fixture(scope="module")
def all_formats(tmp_path_factory):
    from qtapp.cli import main

    out = tmp_path_factory.mktemp("deploy") / "demo"
    code = main(["quantize", "demo", "--batches", "2", "--format", "pt,ptl,onnx,pte", "--onnx-quantizer", "ort",
                 "--out", str(out)])
    assert code == 0
    return out


def test_one_run_writes_checks_and_times_every_format(all_formats):
    report = json.loads((all_formats / "report.json").read_text())
    files = {e["format"]: e for e in report["exports"]}
    assert set(files) == {"pt", "ptl", "onnx", "pte"}
    for fmt, e in files.items():
        assert (all_formats / f"model.{fmt}").stat().st_size == e["bytes"] and e["verified"]
        assert e["sqnr_vs_float_db"] > 30 and e["latency_ms"]["int8"] > 0 and e["latency_ms"]["runtime"] == fmt
    assert files["onnx"]["quantizer"].startswith("onnxruntime quantize_static")
    assert files["pte"]["quantizer"].startswith("PT2E") and files["pt"]["quantizer"].startswith("torch.ao")
    assert set(report["latency_ms"]["per_format"]) == set(files)
    assert json.loads((all_formats / "recipe.json").read_text())["onnx_quantizer"] == "ort"


def test_bench_times_a_result_folder_again(all_formats, cli):
    code, _out, err = cli(["bench", str(all_formats), "--json"])
    assert code == 1 and "model.pt, model.ptl" in err and "--trust" in err  # TorchScript files are programs
    code, out, _err = cli(["bench", str(all_formats), "--json", "--trust"])
    assert code == 0
    timed = json.loads(out)
    assert set(timed) == {"pt", "ptl", "onnx", "pte"} and all(t["int8"] > 0 and t["float"] > 0 for t in timed.values())


def test_bench_refuses_what_is_not_a_result_folder(tmp_path, cli):
    code, _out, err = cli(["bench", str(tmp_path)])
    assert code == 2 and "not a result folder" in err


def test_pt2e_backend_refuses_torchscript_up_front(tmp_path, cli):
    code, _out, err = cli(["quantize", "demo", "--backend", "pt2e", "--format", "pt", "--out", str(tmp_path / "o")])
    assert code == 2 and "reference graph" in err and not (tmp_path / "o").exists()


def test_no_time_files_skips_the_per_file_timing(tmp_path, cli):
    code, _out, err = cli(["quantize", "demo", "--batches", "2", "--format", "pt", "--no-time-files",
                           "--out", str(tmp_path / "o")])
    assert code == 0, err
    report = json.loads((tmp_path / "o" / "report.json").read_text())
    assert report["exports"][0]["latency_ms"] is None and report["latency_ms"]["per_format"] == {}
    assert report["latency_ms"]["quantized"] > 0  # the run's own figure is still measured
