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


class _Fixed(nn.Module):
    """A model whose output is a given tensor, whatever its input: a stand-in for a file's runtime."""

    def __init__(self, out: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("out", out)

    def forward(self, x):
        return self.out + 0 * x.sum()


def _noisy(ref: torch.Tensor, sqnr_db: float, seed: int) -> torch.Tensor:
    """`ref` plus random noise at exactly `sqnr_db` against it."""
    noise = torch.randn(ref.shape, generator=torch.Generator().manual_seed(seed))
    return ref + noise * (ref.norm() / noise.norm() / 10 ** (sqnr_db / 20))


@pytest.mark.parametrize("file_db, float_known, verified", [
    (27.0, True, True),  # a correct 4-bit file: its runtime's rounding, within the model's own 17 dB + 6
    (21.0, True, False),  # further from the model than the model is from float, less 6 dB
    (8.0, True, False),  # XNNPACK dropping the weight zero points (cosine 0.93)
    (0.5, True, False),  # weight-only Linear on XNNPACK (cosine 0.58)
    (27.0, False, False),  # no float output to be relative to: 30 dB, as before
    (33.0, False, True),
])
def test_a_made_file_is_verified_against_the_run_s_own_error(tmp_path, file_db, float_known, verified):
    """The in-memory 4-bit model is 17 dB from float; a correct .pte of it (XNNPACK's bf16 group scales,
    true int8 kernels) was 27 dB from it on MiniLM and was marked NOT verified by a fixed 30 dB rule."""
    from qtapp.core.deploy.made import Made

    base = torch.randn(8, 32, generator=torch.Generator().manual_seed(0))
    float_out = base + 10 * nn.functional.one_hot(torch.arange(8) % 32, 32)  # a clear top-1 in every row
    in_memory = _noisy(float_out, 17.0, seed=1)
    made_file = _noisy(in_memory, file_db, seed=2)
    data = export.script_bytes(torch.jit.script(_Fixed(made_file)))
    result = export._write_made("pt", Made(data, "a test"), _Fixed(in_memory), (torch.zeros(8, 4),),
                                tmp_path / "model.pt", float_out if float_known else None)
    assert result.verified is verified
    said = result.notes[-1]
    assert said.startswith(f"SQNR {file_db:.1f} dB against the in-memory model it was made from")
    if float_known:
        assert "whose own error against float is 17.0 dB" in said and "min(30, 17.0 + 6) = 23.0 dB" in said
    else:
        assert said.endswith("verified at 30 dB or more")


@pytest.mark.parametrize("model_flips_float_s, float_known, verified", [
    (False, True, True),  # a near tie moved, 60 dB from the model: said, and the SQNR rule decides
    (True, True, True),  # the model itself moved one row's top-1 (an embedding's argmax)
    (True, False, False),  # no float output: every row must agree
])
def test_a_made_file_s_top_1_is_held_to_the_model_s_own(tmp_path, model_flips_float_s, float_known, verified):
    from qtapp.core.deploy.made import Made

    float_out = torch.eye(4) * 10
    in_memory = float_out.clone()
    in_memory[0, 1] = 9.999  # a near tie in the first row
    if model_flips_float_s:
        in_memory[3, 2] = 10.001  # the last row's top-1 moved from float's, by 0.001
    made_file = in_memory.clone()
    made_file[0, [0, 1]] = in_memory[0, [1, 0]]  # the first row's top-1 moves, by 0.001
    data = export.script_bytes(torch.jit.script(_Fixed(made_file)))
    result = export._write_made("pt", Made(data, "a test"), _Fixed(in_memory), (torch.zeros(4, 4),),
                                tmp_path / "model.pt", float_out if float_known else None)
    said = result.notes[-1]
    assert result.verified is verified
    assert float(said.split()[1]) > 60  # close in SQNR: the top-1 alone decides
    assert "top-1 agrees with the in-memory model's on 3 of 4 check rows" in said
    if float_known:
        assert said.endswith(f"(the in-memory model agrees with float's on {3 if model_flips_float_s else 4})")
