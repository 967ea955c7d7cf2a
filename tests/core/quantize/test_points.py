"""Every quantization point: listed from what the quantizer did, named so a user finds it, toggleable
where torch can keep it float (and saying why not where it cannot)."""

from __future__ import annotations

import operator
from pathlib import Path

import pytest
import torch

from qtapp.core.base.errors import UsageError
from qtapp.core.base.progress import drive
from qtapp.core.config.recipe import DataSpec, QuantRecipe
from qtapp.core.model.loading import load_model
from qtapp.core.quantize.inventory import LayerInventory
from qtapp.core.run.session import QuantSession

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures"
KINDS_SPEC = f"{FIXTURES / 'point_kinds.py'}:build"
SMALL = dict(calibration=DataSpec(batches=2, batch_size=8), evaluation=DataSpec(batches=1, batch_size=8))


def loaded(kind):
    return drive(load_model(KINDS_SPEC, kwargs={"kind": kind}))


def inventory(kind, method="static", mode="fx"):
    return LayerInventory.build(loaded(kind), method, "fbgemm", mode)


def session(kind, **changes):
    recipe = QuantRecipe(model=KINDS_SPEC, kwargs={"kind": kind}, **{**SMALL, **changes})
    return drive(QuantSession.open(recipe))


def test_activation_modules_are_points_with_how_they_run():
    inv = inventory("activations")
    points = inv.points
    assert list(points)[:3] == ["input:x", "convs.0", "acts.0"]  # graph order: each conv, then its activation
    ops = {points[f"acts.{i}"].op for i in range(6)}
    assert ops == {"PReLU", "ReLU6", "Hardswish", "Hardsigmoid", "SiLU", "GELU"}
    assert points["acts.4"].runs == "float" and points["acts.5"].runs == "float"  # no int8 SiLU/GELU kernel
    assert points["acts.2"].runs == "int8" and points["acts.2"].observed
    assert points["acts.0"].inputs == ("convs.0",)
    assert points["/mean"].kind == "op" and points["/mean"].parent == ""
    for name in points:  # every point is a row of the tree (modules on their own row, ops in their own)
        assert name in inv
    assert inv["/mean"].parent == "" and "/mean" in inv[""].children
    assert {p["name"] for p in inv.to_json()["points"]} == set(points)


def test_fixed_range_ops_carry_their_range():
    points = inventory("fixed_range").points
    assert points["gate"].fixed_range == (0.0, pytest.approx(255 / 256))
    assert points["squash"].fixed_range == (pytest.approx(-1.0), pytest.approx(127 / 128))
    assert points["soft"].fixed_range == (0.0, pytest.approx(255 / 256))
    assert points["fc1"].fixed_range is None


def test_norm_layers_are_points():
    points = inventory("norms").points
    assert {"gn", "inorm", "ln"} <= set(points)
    assert points["gn"].runs == "float" and points["ln"].runs == "int8"
    assert not points["ln"].weighted and points["ln"].toggle is None  # LayerNorm's parameters stay float
    assert "whatever its setting" in points["ln"].reason


def test_an_embedding_is_an_int8_weight_point_in_both_methods():
    static = inventory("embedding")
    assert static.points["emb"].weighted and static.points["emb"].toggle == "module" and "emb" in static.heads
    dynamic = inventory("embedding", "dynamic", "dynamic")
    assert "emb" in dynamic.heads and dynamic.points["emb"].op == "Embedding"


def test_attention_is_one_float_op_in_fx_and_its_linears_are_dynamic_points():
    static = inventory("attention")
    assert static.points["encoder"].op == "TransformerEncoderLayer"
    assert "linear1" not in static.points and not static["encoder.linear1"].quantizable
    assert "FX runs as one op" in static["encoder.linear1"].reason
    assert "encoder.linear1" not in static.heads
    dynamic = inventory("attention", "dynamic", "dynamic")
    assert {"encoder.linear1", "encoder.linear2", "head"} == set(dynamic.points)
    assert "out_proj cannot be dynamically quantized" in dynamic["encoder.self_attn.out_proj"].reason


def test_recurrent_layers_are_float_in_static_and_points_in_dynamic():
    static = inventory("recurrent")
    assert not static.points["lstm"].observed and "dynamic method" in static.points["lstm"].reason
    assert "input:x" not in static.points  # the LSTM reads it in float: nothing rounds the input
    dynamic = inventory("recurrent", "dynamic", "dynamic")
    assert {"lstm", "gru", "head"} == set(dynamic.points)


def test_functional_ops_are_named_by_their_module_and_torchs_order():
    inv = inventory("functional")
    points = inv.points
    assert points["block/add"].target is operator.add and points["block/add"].order == 0
    assert points["block/add_1"].order == 1 and points["block/add_1"].scope == "block"
    assert [c for c in inv["block"].children if "/" in c] == ["block/add", "block/add_1"]
    assert inv["block/add"].parent == "block" and inv["block/add"].short_name == "add"
    for name in ("/cat", "/matmul", "/matmul_1", "/mean", "/mul", "/sigmoid"):
        assert name in points and points[name].kind == "op"
    assert points["block/add"].toggle == "op" and points["/matmul"].toggle == "op"  # lowered to int8 kernels
    assert points["/cat"].toggle is None and "range of" in points["/cat"].reason  # cat shares its inputs' range
    assert "block/add" in inv.heads and "block/add" in inv.heads_under("block")
    assert inv.state("block") == "quantized"


def test_resnet_add_relu_is_one_point_named_after_the_add():
    inv = LayerInventory.build(drive(load_model("torchvision:resnet18")), "static", "fbgemm", "fx")
    point = inv.points["layer1.0/add"]
    assert point.fused == ("ReLU",) and point.toggle == "op"
    assert "layer1.0.relu" not in inv.points  # its second call is the add's fused ReLU
    assert inv.points["maxpool"].shares_range == "conv1"
    assert len(inv.points) == 33 and inv.points["/flatten"].kind == "op"


def test_eager_mode_points_and_the_floatfunctional_that_cannot_be_kept_float():
    inv = LayerInventory.build(drive(load_model("torchvision:quantized_resnet18")), "static", "fbgemm", "eager")
    assert inv.points["quant"].kind == "input" and list(inv.points)[0] == "quant"
    add = inv.points["layer1.0.add_relu"]
    assert add.kind == "op" and add.op == "add_relu" and add.toggle is None and "FX mode" in add.reason
    assert "layer1.0.add_relu" not in inv.heads
    with pytest.raises(UsageError, match="cannot be toggled"):
        inv.set_float("layer1.0.add_relu")


def test_a_point_torch_cannot_keep_float_is_refused_with_the_reason():
    inv = inventory("functional")
    with pytest.raises(UsageError, match="cannot be toggled.*range of"):
        inv.set_float("/cat")


def test_keeping_a_functional_op_float_converts_it_float_without_recalibrating():
    s = session("functional")
    first = drive(s.quantize())
    calibrated = s.calibrated
    s.inventory.set_float("block/add")
    assert s.recipe.float_layers == ["block/add"]
    second = drive(s.quantize())
    assert s.calibrated is calibrated  # reconverted from the stored calibration
    graph = second.quantized_model.graph
    float_adds = [n for n in graph.nodes if n.op == "call_function" and n.target is operator.add]
    assert len(float_adds) == 1 and all(a.target == "dequantize" for a in float_adds[0].args)  # a float island
    points = {p.name: p for p in second.layers}
    assert not points["block/add"].quantized and points["block/add"].kept_float and points["block/add"].runs == "float"
    assert points["block/add_1"].quantized and {p.name: p for p in first.layers}["block/add"].quantized
    x = s.loaded.input_spec.example(batch=4)
    with torch.no_grad():
        assert torch.isfinite(second.quantized_model(*x)).all()


def test_a_recipe_with_a_float_op_reproduces(tmp_path):
    s = session("functional", float_layers=["block/add_1"])
    result = drive(s.quantize())
    s.recipe.save(tmp_path / "recipe.json")
    again = drive(QuantSession.open(QuantRecipe.load(tmp_path / "recipe.json")))
    assert again.inventory.float_layers == ["block/add_1"]
    repeat = drive(again.quantize())
    assert repeat.output.sqnr_db == pytest.approx(result.output.sqnr_db, abs=1e-6)


def test_where_torch_fails_to_keep_a_point_float_the_run_goes_on_and_says_so(monkeypatch):
    """convert_checked tries each float point alone when a conversion fails, converts the culprit in
    int8, and names it; the other float choices stand."""
    from qtapp.core.quantize import torch_ao

    s = session("functional", float_layers=["block/add", "mix"])
    original = torch_ao.FxStaticBackend.convert

    def failing(self, calibrated, float_heads, recipe):
        if "block/add" in float_heads:
            raise RuntimeError("Input type (c10::quint8) and bias type (float) should be the same")
        return original(self, calibrated, float_heads, recipe)

    monkeypatch.setattr(torch_ao.FxStaticBackend, "convert", failing)
    result = drive(s.quantize())
    points = {p.name: p for p in result.layers}
    assert points["block/add"].quantized and not points["mix"].quantized
    note = next(n for n in result.model_notes if n.startswith("block/add stayed int8"))
    assert "torch could not keep it float" in note and "bias type" in note


def test_a_model_that_declares_token_ids_runs_with_int8_embeddings():
    """The factory's model says `example_input_dtype = "int64"`: no --input-dtype needed (the session used
    to override it with float32 and the model failed on its own example)."""
    s = session("embedding", calibration=DataSpec(batches=2, batch_size=8))
    assert s.input_spec.dtype == "int64"
    result = drive(s.quantize())
    emb = {p.name: p for p in result.layers}["emb"]
    assert emb.quantized and emb.type == "Embedding" and emb.weight.qscheme == "per_channel_affine_float_qparams"
    assert type(result.quantized_model.emb).__module__.startswith("torch.ao.nn.quantized")


@pytest.mark.parametrize("kind,method", [("activations", "static"), ("fixed_range", "static"), ("norms", "static"),
                                         ("embedding", "static"), ("embedding", "dynamic"), ("attention", "static"),
                                         ("attention", "dynamic"), ("recurrent", "static"), ("recurrent", "dynamic"),
                                         ("functional", "static"), ("folded_outlier", "static")])
def test_every_point_is_in_the_inventory_the_tree_and_the_report(kind, method):
    from qtapp.core.report.render import report_dict

    s = session(kind, method=method)
    result = drive(s.quantize())
    names = list(s.inventory.points)
    assert names and [p.name for p in result.layers] == names  # measured, in the same order
    assert [p["name"] for p in report_dict(result)["layers"]] == names
    for name in names:  # a tree row each, under a row that exists
        row = s.inventory[name]
        assert row.point is not None and row.parent in s.inventory and name in s.inventory[row.parent].children
    for p in result.layers:  # every quantized point is measured both ways, or says why not
        if p.quantized and p.kind != "input":
            assert p.accumulated_sqnr_db is not None or p.local_sqnr_db is not None, p.name
