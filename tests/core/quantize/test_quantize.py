"""Each quantization method end to end through QuantSession: static FX, eager, dynamic, QAT."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from qtapp.core.base import demo
from qtapp.core.base.errors import UsageError
from qtapp.core.base.progress import Progress, drive
from qtapp.core.config.recipe import DataSpec, QatSpec, QuantRecipe
from qtapp.core.model.loading import load_model
from qtapp.core.report.render import report_dict
from qtapp.core.run.session import QuantSession


def module_path(m) -> str:
    return type(m).__module__


def test_static_fx_on_demo_keeps_accuracy_on_the_held_out_split(demo_quantized):
    s = demo_quantized
    assert s.mode == "fx" and s.calibrated.backend.name == "fx"
    assert s.calibrated.stats == {"batches": 8, "samples": 128}
    assert s.result.evaluation.description == "demo eval split"
    out = s.result.output
    assert out.samples == len(demo.load_split("eval")[1]) == 400
    assert out.accuracy_float >= 0.95
    assert out.accuracy_float - out.accuracy_quantized <= 0.02
    assert out.sqnr_db > 20 and out.cosine > 0.99 and out.top1_agreement > 0.97
    points = s.result.layers  # every quantization point: the input, each layer, the pooling between them
    assert [p.name for p in points] == ["input:x", "block1.0", "block2.0", "pool", "block3.0", "gap", "flatten",
                                        "fc1", "fc2"]
    assert set(s.inventory.heads) <= {p.name for p in points}
    assert all(p.quantized and p.sqnr_db > 15 and p.local_sqnr_db > 15 for p in points)
    mods = dict(s.result.quantized_model.named_modules())
    assert module_path(mods["block1.0"]).startswith("torch.ao.nn.intrinsic.quantized")  # ConvReLU2d, int8
    assert module_path(mods["fc2"]).startswith("torch.ao.nn.quantized")


def test_static_fx_weight_data_for_the_plots(demo_quantized):
    weight = next(layer for layer in demo_quantized.result.layers if layer.name == "block2.0").weight
    assert weight.float_weight.shape == (64, 32, 3, 3) == weight.dequantized.shape
    assert weight.qscheme.startswith("per_channel") and weight.axis == 0
    assert weight.scales.shape == (64,) and (weight.zero_points == 0).all()
    # dequantized weights are within half a step of the (BN-folded) float weights
    err = abs(weight.float_weight - weight.dequantized).reshape(64, -1).max(axis=1)
    assert (err <= weight.scales / 2 + 1e-6).all()


def test_progress_records_cover_every_stage(demo_loaded):
    session = QuantSession(demo_loaded, QuantRecipe(model="demo", calibration=DataSpec(batches=3)))
    records: list[Progress] = []
    drive(session.quantize(), records.append)
    stages = list(dict.fromkeys(p.stage for p in records))
    assert stages == ["calibrate", "convert", "evaluate", "per-point error", "activation ranges"]
    calib = [p for p in records if p.stage == "calibrate"]
    assert [(p.done, p.total) for p in calib] == [(0, 3), (1, 3), (2, 3), (3, 3)]
    assert calib[-1].fraction == 1.0 and calib[0].eta_s is None


def test_eager_quantizable_torchvision_model_with_a_float_island():
    torch.manual_seed(0)
    loaded = drive(load_model("torchvision:quantized_resnet18"))
    recipe = QuantRecipe(model=loaded.spec, float_layers=["layer2.0.bn1"],  # a member: acts on its conv
                         calibration=DataSpec(source="random", batches=2, batch_size=2),
                         evaluation=DataSpec(batches=1, batch_size=2))
    session = QuantSession(loaded, recipe)
    assert session.mode == "eager"
    assert session.inventory.float_layers == ["layer2.0.conv1"]
    assert any("layer2.0.bn1 is fused into layer2.0.conv1" in n for n in session.notes)
    result = drive(session.quantize())
    flags = {layer.name: layer.quantized for layer in result.layers if layer.name in session.inventory.heads}
    assert flags.pop("layer2.0.conv1") is False
    assert len(flags) == len(session.inventory.heads) - 1 and all(flags.values())
    island = result.quantized_model.layer2[0].conv1
    assert [type(m).__name__ for m in island] == ["DeQuantize", "ConvReLU2d", "Quantize"]
    assert module_path(island[1]) == "torch.ao.nn.intrinsic.modules.fused"  # float kernel
    with torch.no_grad():
        out = result.quantized_model(torch.randn(1, 3, 224, 224))
    assert out.shape == (1, 1000) and torch.isfinite(out).all()
    assert result.output.sqnr_db > 15
    assert not any("was to be quantized" in n for n in report_dict(session.result)["notes"])


@pytest.mark.parametrize("dtype, torch_dtype, min_sqnr", [("qint8", torch.qint8, 25), ("float16", torch.float16, 50)])
def test_dynamic_on_the_seq_model_with_one_layer_float(seq_loaded, seq_spec, dtype, torch_dtype, min_sqnr):
    recipe = QuantRecipe(model=seq_spec, method="dynamic", dtype=dtype, float_layers=["gru"],
                         calibration=DataSpec(batches=2, batch_size=4), evaluation=DataSpec(batches=2, batch_size=4))
    session = QuantSession(seq_loaded, recipe)
    assert session.mode == "dynamic"
    result = drive(session.quantize())
    flags = {layer.name: layer.quantized for layer in result.layers}
    assert flags == {"proj": True, "lstm": True, "gru": False, "head.0": True, "head.2": True}
    mods = dict(result.quantized_model.named_modules())
    for name in ("proj", "lstm", "head.0", "head.2"):
        assert "quantized.dynamic" in module_path(mods[name]), name
    assert type(mods["gru"]) is nn.GRU and type(mods["head.1"]) is nn.ReLU
    assert mods["proj"]._packed_params.dtype == torch_dtype and mods["lstm"].dtype == torch_dtype
    assert type(seq_loaded.module.proj) is nn.Linear  # the float model is untouched
    assert session.calibrated.stats == {"batches": 0, "samples": 0}
    assert result.output.sqnr_db > min_sqnr and result.output.top1_agreement >= 0.75
    assert result.output.accuracy_float is None  # random data has no labels
    report = report_dict(session.result)
    assert report["dtype"] == dtype and report["calibration"]["source"].startswith("none")


def test_qat_on_demo_reports_accuracy(demo_loaded):
    before = {k: v.clone() for k, v in demo_loaded.module.state_dict().items()}
    recipe = QuantRecipe(model="demo", method="qat", qat=QatSpec(epochs=1), calibration=DataSpec(batches=4))
    session = QuantSession(demo_loaded, recipe)
    result = drive(session.quantize())
    assert session.calibrated.backend.name == "qat"
    stats = session.calibrated.stats
    assert (stats["batches"], stats["samples"], len(stats["epoch_losses"]), stats["distilled"]) == (4, 64, 1, False)
    out = result.output
    assert out.accuracy_float is not None and out.accuracy_quantized is not None
    assert out.accuracy_quantized >= out.accuracy_float - 0.03
    assert all(layer.quantized for layer in result.layers)
    assert all(torch.equal(v, before[k]) for k, v in demo_loaded.module.state_dict().items())
    report = report_dict(session.result)
    assert report["qat"]["epochs"] == 1 and len(report["qat"]["epoch_losses"]) == 1


def test_qat_cannot_quantize_a_layer_it_trained_in_float(demo_loaded):
    recipe = QuantRecipe(model="demo", method="qat", qat=QatSpec(epochs=1), float_layers=["fc1"],
                         calibration=DataSpec(batches=1))
    session = QuantSession(demo_loaded, recipe)
    trained = drive(session.calibrate())
    session.inventory.set_float("fc1", keep_float=False)
    # QAT's float set is part of what it trained: the next run retrains instead of reusing it ...
    assert session.calibrated is None
    # ... and the trained model itself refuses to quantize a layer it trained in float.
    with pytest.raises(UsageError, match="QAT trained fc1 in float"):
        trained.convert([])


def test_eager_mode_needs_a_quantizable_model(demo_loaded):
    with pytest.raises(UsageError, match="eager mode needs one of torchvision's quantizable models"):
        QuantSession(demo_loaded, QuantRecipe(model="demo", static_mode="eager"))


def test_dynamic_quantization_of_a_transformer_layer_runs():
    """The attention fast path read a dynamically quantized Linear's weight as a tensor and failed with
    "'function' object has no attribute 'device'" when the comparison ran the model."""
    from qtapp.core.base.inputs import InputSpec
    from qtapp.core.model.loading import LoadedModel

    torch.manual_seed(0)
    model = nn.Sequential(nn.TransformerEncoderLayer(16, 2, 32, activation="gelu", batch_first=True)).eval()
    loaded = LoadedModel("tx", model, "eager", InputSpec(((2, 5, 16),)))
    session = QuantSession(loaded, QuantRecipe(model="tx", method="dynamic", calibration=DataSpec(batches=2)))
    result = drive(session.quantize())
    assert result.output.sqnr_db > 20 and any(l.quantized for l in result.layers)
