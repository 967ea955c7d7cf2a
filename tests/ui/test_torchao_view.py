"""Issue 20 in the window: Backend torchao from the settings panel (the method follows), each layer's bits
in the tree's Int8 column, a subtree's bits set from its context menu (reconverted, undoable)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest.importorskip("torchao")

SPEC = f"{Path(__file__).resolve().parents[1] / 'fixtures' / 'token_encoder.py'}:build"


def _idle(qtbot, window, timeout=120000):
    qtbot.waitUntil(lambda: not window.runner.busy and window.controller.waiting is None, timeout=timeout)


def test_choosing_torchao_then_4_bits_then_8_for_one_layer(qtbot, window, quantize_and_wait, tmp_path):
    recipe = tmp_path / "r.json"
    recipe.write_text(json.dumps({"version": 4, "model": SPEC, "input_shape": "1,16", "input_dtype": "int64"}))
    with qtbot.waitSignal(window.session_changed, timeout=60000):
        window.open_recipe_object(__import__("qtapp.core.config.recipe", fromlist=["QuantRecipe"]).QuantRecipe.load(
            recipe), trust=True)
    _idle(qtbot, window)
    panel = window.settings_panel
    panel.backend.setCurrentText("torchao")  # static is not torchao's: the method follows to dynamic
    qtbot.waitUntil(lambda: window.session.recipe.backend == "torchao", timeout=30000)
    _idle(qtbot, window)
    assert window.session.recipe.method == "dynamic" and panel.method.currentText() == "dynamic"
    assert panel.weight_bits.isVisibleTo(panel) and not panel.engine.isEnabled()
    panel.weight_bits.setCurrentText("4")
    qtbot.waitUntil(lambda: window.session.recipe.weight_bits == 4, timeout=30000)
    _idle(qtbot, window)
    result = quantize_and_wait(qtbot, window)
    assert result.mode == "torchao" and {p.name for p in result.layers if p.quantized} == {"emb", "ff1", "ff2", "head"}
    model = window.tree_model
    from qtapp.ui.layer_model import COL_QUANT

    assert model.data(model.index_of("ff1", COL_QUANT)) == "4-bit"
    menu = window.tree_menu(window.proxy.mapFromSource(model.index_of("head", 0)))
    action = next(a for a in menu.actions() if a.text().startswith("Weights 8-bit"))
    with qtbot.waitSignal(window.result_applied, timeout=120000):
        action.trigger()  # reconverted with head in 8 bits
    _idle(qtbot, window)
    assert window.session.recipe.overrides["head"].weight_bits == 8
    assert model.data(model.index_of("head", COL_QUANT)) == "8-bit"
    q = window.session.result.quantized_model
    assert str(q.head.weight.target_dtype) == "torch.int8" and str(q.ff1.weight.target_dtype) == "torch.int4"
    assert window.undo_action.text() == "Undo per-point settings"  # undoable (undo itself: test_runs_view)


def test_a_torchao_run_says_bits_and_its_sensitivity_and_tune_say_each_width(qtbot, window, tmp_path):
    from qtapp.core.analysis.metrics import Target
    from qtapp.core.base.progress import drive
    from qtapp.core.config.recipe import QuantRecipe
    from qtapp.core.run import jobs
    from qtapp.core.tune.search import Budget
    from qtapp.ui.layer_model import COL_QUANT
    from qtapp.ui.tune_plot import TradeoffPlot

    recipe = QuantRecipe(model=SPEC, input_shape="1,16", input_dtype="int64", backend="torchao", method="dynamic",
                         weight_bits=4, overrides={"head": {"weight_bits": 8}})
    from PySide6.QtCore import Qt

    model = window.tree_model
    headers = []  # what a view reading the header when told it changed gets
    model.headerDataChanged.connect(lambda *_: headers.append(model.headerData(COL_QUANT, Qt.Orientation.Horizontal)))
    with qtbot.waitSignal(window.session_changed, timeout=60000):
        window.open_recipe_object(recipe, trust=True)
    _idle(qtbot, window)
    assert headers and headers[-1] == "Bits"
    window.run_sensitivity()
    qtbot.waitUntil(lambda: window.session.result is not None and window.session.result.sensitivity is not None,
                    timeout=120000)
    _idle(qtbot, window)
    assert model.headerData(COL_QUANT, Qt.Orientation.Horizontal) == "Bits"
    assert "4 + 8-bit" in window.summary.text()  # the quantized column: the widths the run made
    assert window.layer_plot.metric_box.itemText(0) == "Local: each point alone in its bits"  # not "in int8"
    assert window.layer_plot.metric_box.itemText(1) == "Accumulated: the quantized model at that point"
    plot = window.sensitivity_plot
    tip = plot.tooltip_for("ff1")
    assert "only it 4-bit" in tip and "only it 8-bit" in tip and "int8" not in tip
    assert "alone in 4-bit and 8-bit" in plot.caption_text()
    outcome = drive(jobs.tune(window.session.snapshot(), Target.parse("sqnr>=60"), Budget.parse("bits<=5.7"),
                              measure=False))
    tradeoff = TradeoffPlot()
    qtbot.addWidget(tradeoff)
    tradeoff.set_tune(outcome.tune)
    eight = sum(1 for _n, o in outcome.tune.best.config.overrides if o.weight_bits == 8)
    assert f"{eight} layer(s) at 8 bits" in tradeoff.caption_text()
    assert f"({outcome.tune.best.bits:.2f} weight bits per value on average)" in tradeoff.caption_text()
