"""ONNX Runtime's quantizer as the ONNX path, and the files' own latency in their runtimes."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("onnxruntime")

from qtapp.core.base.progress import drive  # noqa: E402
from qtapp.core.config.recipe import DataSpec, QuantRecipe  # noqa: E402
from qtapp.core.deploy import onnx as deploy  # noqa: E402
from qtapp.core.run.exporting import export  # noqa: E402
from qtapp.core.run.session import QuantSession  # noqa: E402


def _ops(data: bytes) -> list[str]:
    import onnx

    return [n.op_type for n in onnx.load_from_string(data).graph.node]


def _sqnr(ref, got) -> float:
    return float(10 * torch.log10((ref ** 2).sum() / ((ref - got) ** 2).sum()))


@pytest.fixture(scope="module")
def demo_batches(demo_loaded):
    session = QuantSession(demo_loaded, QuantRecipe(model="demo", calibration=DataSpec(batches=4)))
    return session.open_calibration(), session._check_inputs()


def test_ort_static_quantizes_in_qdq_and_keeps_float_layers_float(demo_loaded, demo_batches):
    calib, check = demo_batches
    example = demo_loaded.input_spec.example(batch=1)
    everything = deploy.ort_quantized(demo_loaded.module, example, calib, set(), True, dynamic=False)
    kept = deploy.ort_quantized(demo_loaded.module, example, calib, {"fc2"}, True, dynamic=False)
    assert "QuantizeLinear" in _ops(everything.data)
    assert _ops(kept.data).count("DequantizeLinear") < _ops(everything.data).count("DequantizeLinear")
    assert any("nodes_to_exclude" in n for n in kept.notes)
    with torch.no_grad():
        ref = demo_loaded.module(*check)
    for made in (everything, kept):
        (got,) = deploy.run_onnx(made.data, [check])
        assert _sqnr(ref, got) > 30


def test_ort_dynamic_quantizes_a_recurrent_model(seq_loaded):
    example = seq_loaded.input_spec.example(batch=1)
    made = deploy.ort_quantized(seq_loaded.module, example, None, set(), False, dynamic=True)
    ops = _ops(made.data)
    assert "DynamicQuantizeLSTM" in ops or "MatMulInteger" in ops or "DynamicQuantizeMatMul" in ops
    x = torch.randn(4, *example[0].shape[1:])
    with torch.no_grad():
        ref = seq_loaded.module(x)
    (got,) = deploy.run_onnx(made.data, [(x,)])
    assert got.shape == ref.shape and _sqnr(ref, got) > 20


def test_onnx_nodes_are_traced_to_their_modules(demo_loaded):
    data, exporter = deploy.float_onnx(demo_loaded.module, demo_loaded.input_spec.example(batch=1))
    owners = deploy.onnx_node_modules(data)
    assert "fc2" in owners.values() and "fc1" in owners.values() and exporter


def test_dynamic_run_exports_onnx_through_onnxruntime(seq_spec, tmp_path):
    session = drive(QuantSession.open(QuantRecipe(model=seq_spec, method="dynamic", onnx_quantizer="ort")))
    drive(session.quantize())
    (onnx_file,) = drive(session.export(tmp_path, ["onnx"]))
    assert onnx_file.verified and "quantize_dynamic" in onnx_file.quantizer
    assert onnx_file.sqnr_vs_float_db is not None and onnx_file.sqnr_vs_float_db > 20


def test_every_file_is_timed_against_its_float_counterpart_in_its_runtime(demo_loaded, tmp_path):
    from qtapp.core.report.render import report_dict

    session = QuantSession(demo_loaded, QuantRecipe(model="demo", calibration=DataSpec(batches=2),
                                                    onnx_quantizer="ort"))
    drive(session.quantize())
    result = drive(export(session.export_request(tmp_path, ["ptl", "onnx"], measure=True)))
    timed = {e.format: e.latency for e in result.exports}
    assert set(timed) == {"ptl", "onnx"} and all(lat.float_ms > 0 and lat.quantized_ms > 0 for lat in timed.values())
    assert timed["onnx"].format == "onnx" and timed["ptl"].format == "ptl"
    per_format = report_dict(result)["latency_ms"]["per_format"]
    assert set(per_format) == {"ptl", "onnx"} and per_format["onnx"]["runtime"] == "onnx"


def test_files_timed_on_a_busy_machine_are_flagged(demo_quantized):
    from dataclasses import replace

    from qtapp.core.deploy.export import ExportResult
    from qtapp.core.deploy.measure import Latency
    from qtapp.core.report.notes import notes

    quiet, busy = Latency(1.0, 0.5, 50, 2, 0.05, "pt"), Latency(1.0, 0.5, 50, 2, 1.4, "onnx")
    files = (ExportResult("pt", "m.pt", 1, True, 0.0, latency=quiet), ExportResult("onnx", "m.onnx", 1, True, None,
                                                                                  latency=busy))
    said = [n for n in notes(replace(demo_quantized.result, exports=files)) if n.code == "busy-machine-files"]
    assert len(said) == 1 and ".onnx" in said[0].text and ".pt" not in said[0].text.replace(".onnx", "")
    assert "1.4 CPU cores" in said[0].text


def test_the_files_table_names_each_runtime_and_who_quantized():
    from qtapp.core.deploy.export import ExportResult
    from qtapp.core.deploy.measure import Latency
    from qtapp.core.report.render import formats_table

    files = [ExportResult("pte", "m.pte", 2_000_000, True, 0.1, quantizer="PT2E", sqnr_vs_float_db=35.0,
                          latency=Latency(9.3, 3.4, 100, 2, 0.0, "pte")),
             ExportResult("onnx", "m.onnx", 2_000_000, True, None, quantizer="onnxruntime",
                          latency=Latency(8.9, 8.9, 100, 2, 0.0, "onnx"))]
    text = "\n".join(formats_table(files))
    assert "the ExecuTorch runtime" in text and "35.0 dB" in text and "2.74x faster" in text and "as fast" in text
    assert ".pte: quantized by PT2E" in text and ".onnx: quantized by onnxruntime" in text
    assert "SQNR" not in "\n".join(formats_table(files, with_sqnr=False))


def test_the_run_s_own_timing_is_the_pt_file_s_and_is_not_measured_twice(demo_loaded, tmp_path):
    session = QuantSession(demo_loaded, QuantRecipe(model="demo", calibration=DataSpec(batches=2)))
    drive(session.quantize())
    measured = drive(session.measure())
    result = drive(export(session.export_request(tmp_path, ["pt"], measure=True)))
    (pt,) = result.exports
    assert pt.bytes == measured.size_quantized and pt.latency is measured.latency
