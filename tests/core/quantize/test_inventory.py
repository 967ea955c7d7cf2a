"""The layer inventory: fusion groups, toggles on heads/members/containers, tristate, refusals."""

from __future__ import annotations

import pytest

from qtapp.core.base.errors import UsageError
from qtapp.core.quantize.inventory import LayerInventory


@pytest.fixture
def demo_inventory(demo_loaded) -> LayerInventory:
    return LayerInventory.build(demo_loaded, "static", "fbgemm", "fx")


def test_demo_fusion_groups(demo_inventory):
    inv = demo_inventory
    assert inv.heads == ["block1.0", "block2.0", "block3.0", "fc1", "fc2"]
    assert inv["block1.0"].group == ["block1.0", "block1.1", "block1.2"]
    assert inv["fc1"].group == ["fc1", "relu"]
    for member in ("block1.1", "block1.2"):
        assert inv[member].group_head == "block1.0"
        assert not inv[member].quantizable
        assert "fused into block1.0" in inv[member].reason
    assert inv["relu"].group_head == "fc1"
    assert inv["fc2"].group == [] and inv["fc2"].quantizable  # a lone Linear: its own head
    assert not inv["pool"].quantizable and inv["block1"].reason == "container"


def test_demo_layer_facts(demo_inventory):
    inv = demo_inventory
    assert inv["block1.0"].type == "Conv2d" and inv["block1.0"].params == 1 * 32 * 3 * 3
    assert inv["fc2"].params == 512 * 10 + 10
    assert inv["fc2"].bytes == inv["fc2"].params * 4
    assert inv["block1.0"].output_shape == "1x32x8x8"
    assert inv["pool"].output_shape == "1x64x4x4"
    # the model's input is a quantization point of its own, listed first
    assert inv[""].children == ["input:x", "block1", "block2", "pool", "block3", "gap", "flatten", "fc1", "relu", "fc2"]
    assert inv["block1.0"].parent == "block1" and inv["block1.0"].short_name == "0"


def test_toggling_a_fused_member_keeps_its_head_float_and_says_so(demo_inventory):
    inv = demo_inventory
    changed = inv.set_float("block1.1")
    assert changed == ["block1.0"]
    assert inv.float_layers == ["block1.0"] and inv.is_float("block1.0")
    note = inv.explain("block1.1")
    assert note is not None and "block1.1 is fused into block1.0" in note
    assert "block1.0 + block1.1 + block1.2" in note
    assert inv.explain("block1.0") is None and inv.explain("fc2") is None
    # the member and the head show the same state
    assert inv.state("block1.1") == inv.state("block1.0") == "float"
    # set_float_layers (the recipe path) returns the same explanation
    assert inv.set_float_layers(["relu"]) == [inv.explain("relu")]
    assert inv.float_layers == ["fc1"]


def test_toggling_a_container_covers_its_heads(demo_inventory):
    inv = demo_inventory
    assert inv.resolve("") == inv.heads
    assert inv.resolve("block2") == ["block2.0"]
    changed = inv.set_float("")
    assert changed == inv.heads and inv.quantized_heads == []
    changed = inv.set_float("block2", keep_float=False)
    assert changed == ["block2.0"]
    assert inv.float_layers == ["block1.0", "block3.0", "fc1", "fc2"]
    assert inv.set_float("block1") == []  # already float: nothing changes


def test_tristate(demo_inventory):
    inv = demo_inventory
    assert inv.state("") == "quantized"
    inv.set_float("block1")
    assert inv.state("block1") == "float"
    assert inv.state("block2") == "quantized"
    assert inv.state("") == "partial"
    assert inv.state("pool") is None  # nothing to toggle in it
    assert inv.state("no.such.layer") is None
    inv.set_float("", keep_float=True)
    assert inv.state("") == "float"


def test_misspelt_layer_is_refused_and_nothing_changes(demo_inventory):
    inv = demo_inventory
    with pytest.raises(UsageError) as exc:
        inv.set_float(["block2", "block1.O"])
    assert "'block1.O'" in str(exc.value) and "Did you mean" in str(exc.value) and "block1.0" in str(exc.value)
    assert inv.float_layers == []  # block2 was valid, but all names are checked before any change
    with pytest.raises(UsageError, match="no layer named 'fc3'"):
        inv.set_float_layers(["fc3"])


def test_untoggleable_layer_is_refused(demo_inventory):
    with pytest.raises(UsageError) as exc:
        demo_inventory.set_float("pool")
    assert "'pool'" in str(exc.value) and "cannot be toggled" in str(exc.value)


def test_listeners_hear_changed_heads(demo_inventory):
    inv = demo_inventory
    heard = []
    inv.subscribe(heard.append)
    inv.set_float("block3.2")
    inv.set_float("block3")  # no change: no event
    inv.set_float_layers(["fc2"])
    inv.unsubscribe(heard.append)
    inv.set_float("fc1")
    assert heard == [["block3.0"], ["block3.0", "fc2"]]


def test_to_json_lists_every_layer_with_its_state(demo_inventory):
    inv = demo_inventory
    inv.set_float("fc1")
    data = inv.to_json()
    assert (data["method"], data["mode"], data["engine"]) == ("static", "fx", "fbgemm")
    rows = {row["name"]: row for row in data["layers"]}
    assert set(rows) == set(inv.layers)
    assert rows["fc1"]["state"] == "float" and rows["relu"]["state"] == "float"
    assert rows["fc2"]["state"] == "quantized" and rows["pool"]["state"] is None
    assert rows["block1.0"]["group"] == ["block1.0", "block1.1", "block1.2"]


def test_dynamic_inventory_of_the_seq_model(seq_loaded):
    inv = LayerInventory.build(seq_loaded, "dynamic", "fbgemm", "dynamic")
    assert inv.heads == ["proj", "lstm", "gru", "head.0", "head.2"]
    assert not inv["head.1"].quantizable and inv["head.1"].type == "ReLU"
    assert "dynamic quantization covers" in inv["head.1"].reason
    assert inv["lstm"].output_shape == "(1x12x32, (1x1x32, 1x1x32))"
    assert inv.resolve("head") == ["head.0", "head.2"]


def test_static_inventory_of_the_seq_model_points_rnns_to_dynamic(seq_loaded):
    inv = LayerInventory.build(seq_loaded, "static", "fbgemm", "fx")
    assert "lstm" not in inv.heads and "gru" not in inv.heads
    assert "use the dynamic method" in inv["lstm"].reason
    assert "proj" in inv.heads


def test_eager_inventory_of_a_quantizable_torchvision_model():
    from qtapp.core.base.progress import drive
    from qtapp.core.model.loading import load_model

    loaded = drive(load_model("torchvision:quantized_mobilenet_v2"))
    inv = LayerInventory.build(loaded, "static", "fbgemm", "eager")
    # torchvision's fuse_model() folds BN and ReLU into the conv: a toggle on the BN acts on the conv
    assert inv["features.0.0"].group == ["features.0.0", "features.0.1", "features.0.2"]
    assert inv.resolve("features.0.1") == ["features.0.0"]
    assert inv.heads[-1] == "classifier.1"
