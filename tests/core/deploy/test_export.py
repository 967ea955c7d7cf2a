"""Export: files load back and match the in-memory model, writes are atomic, sources are protected."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn as nn

from qtapp.core.base.errors import QtappError, UsageError
from qtapp.core.base.progress import drive
from qtapp.core.config.recipe import DataSpec, QuantRecipe
from qtapp.core.deploy import export
from qtapp.core.model.loading import load_model
from qtapp.core.report.render import report_dict
from qtapp.core.run.session import QuantSession

pytestmark = pytest.mark.filterwarnings(r"ignore:.*torch\.jit\..*deprecated:FutureWarning")


def leftovers(folder):
    return sorted(p.name for p in folder.rglob("*partial*"))


@pytest.fixture(scope="module")
def demo_exports(demo_quantized, tmp_path_factory):
    out = tmp_path_factory.mktemp("demo_export")
    results = drive(demo_quantized.export(out, ["pt", "ptl", "onnx"]))
    return out, {r.format: r for r in results}


def check_input(session):
    return session._check_inputs()[0]


def test_every_format_is_written_and_verified(demo_exports, demo_quantized):
    out, results = demo_exports
    assert sorted(p.name for p in out.iterdir()) == ["model.onnx", "model.pt", "model.ptl"]
    for fmt, r in results.items():
        assert r.path == str(out / f"model.{fmt}") and r.bytes == (out / f"model.{fmt}").stat().st_size
        assert r.verified, (fmt, r.notes)
    assert results["pt"].max_abs_diff == 0.0 and results["ptl"].max_abs_diff == 0.0
    report = report_dict(demo_quantized.result.evolve(exports=tuple(results.values())))
    assert [(e["format"], e["verified"]) for e in report["exports"]] == [("pt", True), ("ptl", True), ("onnx", True)]
    assert leftovers(out) == []


def test_torchscript_file_matches_the_in_memory_model(demo_exports, demo_quantized):
    out, _ = demo_exports
    x = check_input(demo_quantized)
    loaded = torch.jit.load(str(out / "model.pt"))
    with torch.no_grad():
        assert torch.equal(loaded(x), demo_quantized.result.quantized_model(x))


def test_lite_interpreter_file_matches_the_in_memory_model(demo_exports, demo_quantized):
    from torch.jit.mobile import _load_for_lite_interpreter

    out, _ = demo_exports
    x = check_input(demo_quantized)
    mobile = _load_for_lite_interpreter(str(out / "model.ptl"))
    with torch.no_grad():
        assert torch.equal(mobile(x), demo_quantized.result.quantized_model(x))


def test_onnx_file_passes_the_checker_and_runs_in_onnxruntime(demo_exports, demo_quantized):
    import onnx
    import onnxruntime as ort

    out, results = demo_exports
    onnx.checker.check_model(str(out / "model.onnx"))
    model = onnx.load(str(out / "model.onnx"))
    assert any(node.op_type == "QuantizeLinear" for node in model.graph.node)  # int8 as QDQ
    x = check_input(demo_quantized)
    session = ort.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"])
    got = session.run(None, {"input": x.numpy()})[0]
    with torch.no_grad():
        expected = demo_quantized.result.quantized_model(x).numpy()
    assert got.shape == expected.shape == (len(x), 10)
    assert (got.argmax(1) == expected.argmax(1)).all()
    assert np.abs(got - expected).max() == pytest.approx(results["onnx"].max_abs_diff, rel=1e-5)
    assert "onnx.checker passed; ran in onnxruntime" in results["onnx"].notes


def test_parse_formats():
    assert export.parse_formats("pt, .PTL,onnx,pt") == ["pt", "ptl", "onnx"]
    with pytest.raises(UsageError, match="unknown export format\\(s\\) tflite"):
        export.parse_formats("pt,tflite")
    with pytest.raises(UsageError, match="\\(none\\)"):
        export.parse_formats(" , ")


@pytest.fixture
def pickled_model_session(tmp_path):
    """A pickled model at tmp/model.pt (allowlisted classes), quantized dynamically."""
    torch.manual_seed(0)
    source = tmp_path / "model.pt"
    torch.save(nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3)), source)
    recipe = QuantRecipe(model=str(source), input_shape="1,4", method="dynamic",
                         evaluation=DataSpec(source="random", batches=1, batch_size=4))
    session = drive(QuantSession.open(recipe))
    drive(session.quantize())
    return session, source


@pytest.mark.parametrize("formats", [["pt"], ["ptl", "pt"]])
def test_export_refuses_to_overwrite_the_model_source(pickled_model_session, formats):
    session, source = pickled_model_session
    original = source.read_bytes()
    with pytest.raises(QtappError) as exc:
        drive(session.export(source.parent, formats))
    assert "refusing to write" in str(exc.value) and str(source) in str(exc.value)
    assert source.read_bytes() == original
    # nothing was written before the refusal, not even the formats that were allowed
    assert sorted(p.name for p in source.parent.iterdir()) == ["model.pt"]


def test_export_beside_the_source_under_another_folder_works(pickled_model_session):
    session, source = pickled_model_session
    out = source.parent / "out"
    results = drive(session.export(out, ["pt", "ptl"]))
    assert [r.verified for r in results] == [True, True]
    assert sorted(p.name for p in out.iterdir()) == ["model.pt", "model.ptl"]


def test_export_refuses_to_overwrite_factory_weights(tmp_path, seq_spec):
    weights = tmp_path / "model.pt"
    torch.save(drive(load_model(seq_spec)).module.state_dict(), weights)
    loaded = drive(load_model(seq_spec, weights=str(weights)))
    example = loaded.input_spec.example()
    with pytest.raises(QtappError, match="refusing to write"):  # refused before any scripting is needed
        drive(export.export_model(loaded.module, None, example, ["ptl", "pt"], tmp_path, loaded.protected_paths))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.pt"]
