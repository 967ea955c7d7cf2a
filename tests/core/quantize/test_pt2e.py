"""The PT2E backend and ExecuTorch .pte files (skipped without the executorch extra)."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("executorch")
pytest.importorskip("torchao")

from qtapp.core.base.errors import QtappError, UsageError  # noqa: E402
from qtapp.core.base.progress import drive  # noqa: E402
from qtapp.core.config.recipe import DataSpec, QuantRecipe  # noqa: E402
from qtapp.core.deploy import executorch  # noqa: E402
from qtapp.core.quantize import pt2e  # noqa: E402
from qtapp.core.run.session import QuantSession  # noqa: E402


@pytest.fixture(scope="module")
def pt2e_session(demo_loaded):
    session = QuantSession(demo_loaded, QuantRecipe(model="demo", backend="pt2e", calibration=DataSpec(batches=4)))
    drive(session.quantize())
    return session


def _linear_weights(graph_module):
    """{module: the node feeding its linear op's weight} of a converted PT2E graph."""
    return {pt2e._owner(n): n.args[1] for n in graph_module.graph.nodes
            if n.op == "call_function" and "linear" in str(n.target)}


def test_pt2e_run_quantizes_with_xnnpack_and_says_so(pt2e_session):
    result = pt2e_session.result
    assert result.mode == "pt2e" and result.engine == "xnnpack"
    assert result.output.sqnr_db > 30 and result.output.accuracy_quantized > 0.95
    # every linear reads dequantized int8 weights
    weights = _linear_weights(result.quantized_model)
    assert set(weights) == {"fc1", "fc2"} and all("dequantize" in str(w.target) for w in weights.values())


def test_a_float_layer_reads_float_weights_without_recalibrating(pt2e_session):
    calibrated = pt2e_session.calibrated
    float_fc2 = calibrated.convert(["fc2"])
    weights = _linear_weights(float_fc2)
    assert weights["fc2"].op == "get_attr" and "dequantize" in str(weights["fc1"].target)
    x = pt2e_session._check_inputs()
    with torch.no_grad():
        assert not torch.equal(float_fc2(*x), pt2e_session.result.quantized_model(*x))
    assert pt2e_session.calibrated is calibrated  # one calibration served both conversions


def test_keeping_a_module_without_weights_float_is_refused_by_name(pt2e_session):
    import copy

    graph = copy.deepcopy(pt2e_session.calibrated.prepared)
    with pytest.raises(QtappError, match="gap"):
        pt2e.keep_float(graph, {"gap"})


def test_only_weighted_layers_are_toggles_on_this_backend():
    from pathlib import Path

    from qtapp.core.model.loading import load_model
    from qtapp.core.quantize.inventory import LayerInventory

    spec = f"{Path(__file__).resolve().parents[2] / 'fixtures' / 'point_kinds.py'}:build"
    loaded = drive(load_model(spec, kwargs={"kind": "functional"}))
    points = LayerInventory.build(loaded, "static", "fbgemm", "pt2e").points.values()
    ops = [p for p in points if p.kind == "op"]
    weighted = [p for p in points if p.weighted]
    assert ops and all(p.toggle is None for p in ops) and any("PT2E" in p.reason for p in ops)
    assert weighted and all(p.toggle == "module" for p in weighted)



def test_pte_is_lowered_reloaded_and_checked(pt2e_session, tmp_path):
    exports = drive(pt2e_session.export(tmp_path, ["pte"]))
    (pte,) = exports
    assert pte.format == "pte" and pte.verified and (tmp_path / "model.pte").stat().st_size == pte.bytes
    assert any("XNNPACK-delegated" in n for n in pte.notes) and pte.sqnr_vs_float_db > 30
    # the file, run by the ExecuTorch runtime itself, gives what the report says
    x = pt2e_session._check_inputs()[0][:1]
    (out,) = executorch.run_pte(tmp_path / "model.pte", [(x,)])
    with torch.no_grad():
        ref = pt2e_session.loaded.module(x)
    assert out.shape == ref.shape and torch.argmax(out) == torch.argmax(ref)


def test_torchscript_of_a_pt2e_graph_is_refused(pt2e_session, tmp_path):
    with pytest.raises(UsageError, match="reference graph"):
        pt2e_session.export_request(tmp_path, ["pt"])


def test_a_torch_ao_run_gets_its_pte_from_a_pt2e_calibration(demo_loaded, tmp_path):
    session = QuantSession(demo_loaded, QuantRecipe(model="demo", calibration=DataSpec(batches=2), float_layers=["fc2"]))
    drive(session.quantize())
    (pte,) = drive(session.export(tmp_path, ["pte"]))
    assert pte.verified and pte.quantizer.startswith("PT2E")
    assert any("PT2E calibration on the same 32 samples, with fc2 float" in n for n in pte.notes)


def test_recipe_refuses_what_pt2e_cannot_do():
    for bad, said in [({"method": "dynamic"}, "dynamic"), ({"observer": "minmax"}, "observer"),
                      ({"static_mode": "eager"}, "eager")]:
        with pytest.raises(UsageError, match=said):
            QuantRecipe(model="demo", backend="pt2e", **bad).check_applicable()


def test_missing_extra_says_how_to_install(monkeypatch):
    def missing():
        raise ImportError("no executorch", name="executorch")

    monkeypatch.setattr(pt2e, "_import_quiet", missing)
    with pytest.raises(UsageError, match=r'pip install -e "\.\[executorch\]"'):
        pt2e.require("--backend pt2e")


def test_every_point_has_its_error_read_off_the_pt2e_graphs(pt2e_session):
    """The last point's accumulated figure is the output's SQNR on the same samples, recomputed here."""
    from qtapp.core.analysis.qparams import SAMPLES

    layers = {p.name: p for p in pt2e_session.result.layers}
    assert {"input:x", "block1.0", "fc1", "fc2"} <= set(layers)
    for name in ("block1.0", "block2.0", "fc1", "fc2"):
        p = layers[name]
        assert p.quantized and p.local_sqnr_db > 25 and p.accumulated_sqnr_db > 25
        assert 0.1 < p.normalised_error < 1.0  # near the 0.29 of pure rounding
    source, _ = pt2e_session.evaluation_source(pt2e_session.recipe)
    x = torch.cat([inputs[0] for inputs, _ in source])[:SAMPLES]
    with torch.no_grad():
        ref, got = pt2e_session.loaded.module(x), pt2e_session.result.quantized_model(x)
    expected = float(10 * torch.log10((ref ** 2).sum() / ((ref - got) ** 2).sum()))
    assert layers["fc2"].accumulated_sqnr_db == pytest.approx(expected, abs=0.05)


def test_an_op_the_quantizer_leaves_unrounded_is_not_counted_int8():
    from pathlib import Path

    spec = f"{Path(__file__).resolve().parents[2] / 'fixtures' / 'point_kinds.py'}:build"
    session = drive(QuantSession.open(QuantRecipe(model=spec, kwargs={"kind": "functional"}, backend="pt2e",
                                                  calibration=DataSpec(batches=2))))
    drive(session.quantize())
    layers = {p.name: p for p in session.result.layers}
    # XNNPACK's quantizer has no int8 matmul: its output reaches the division unrounded
    assert not layers["/matmul"].quantized and layers["/matmul"].normalised_error is None
    assert layers["block/add"].quantized and layers["/cat"].quantized


def test_pt2e_qat_trains_with_its_float_layers_float_and_converts(demo_loaded):
    recipe = QuantRecipe(model="demo", backend="pt2e", method="qat", float_layers=["fc2"],
                         calibration=DataSpec(batches=2))
    recipe.qat.epochs = 1
    session = QuantSession(demo_loaded, recipe)
    session.inventory.set_float_layers(["fc2"])
    result = drive(session.quantize())
    assert result.mode == "pt2e" and result.calib_stats["batches"] == 2 and result.output.accuracy_quantized > 0.9
    weights = _linear_weights(result.quantized_model)
    assert weights["fc2"].op == "get_attr" and "dequantize" in str(weights["fc1"].target)
    with pytest.raises(UsageError, match="QAT trained fc2 in float"):
        session.calibrated.convert([])


def _fixture(name: str) -> str:
    from pathlib import Path

    return str(Path(__file__).resolve().parents[2] / "fixtures" / name)


def test_a_float_conv1d_stays_int8_and_says_why(tmp_path):
    """ExecuTorch's XNNPACK fails on a float Conv1d among int8 layers: at lowering ("Weight and Input should
    both be quantized") or when the runtime loads the .pte. Each stays int8, said on the result, and the
    .pte is written and runs."""
    session = drive(QuantSession.open(QuantRecipe(model=f"{_fixture('audio.py')}:build", backend="pt2e",
                                                  calibration=DataSpec(batches=2, batch_size=8))))
    session.inventory.set_float_layers(["conv1", "conv2", "fc"])
    result = drive(session.quantize())
    assert result.float_layers == ("fc",)
    for name in ("conv1", "conv2"):
        assert any(n.startswith(f"{name} stayed int8") and "Conv1d" in n for n in result.model_notes)
    (pte,) = drive(session.export(tmp_path, ["pte"]))
    assert pte.verified and any("float:" in n and "fc" in n.split("float:")[1] for n in pte.notes)


def test_recurrent_layers_are_said_float_on_pt2e():
    session = drive(QuantSession.open(QuantRecipe(model=f"{_fixture('seqmodels.py')}:build", backend="pt2e",
                                                  input_shape="1,12,16", calibration=DataSpec(batches=2))))
    result = drive(session.quantize())
    layers = {p.name: p for p in result.layers}
    for name in ("lstm", "gru"):
        assert not layers[name].quantized and layers[name].runs == "float" and "XNNPACK" in layers[name].reason
    assert layers["lstm"].accumulated_sqnr_db != layers["gru"].accumulated_sqnr_db  # each measured at its own output
    assert layers["proj"].quantized and layers["head.2"].quantized
