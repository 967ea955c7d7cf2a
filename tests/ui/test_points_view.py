"""Every quantization point in the window: op rows in the tree, the Local and Accum. columns, the
diagnosis, the "Only bad points" filter, the activation range tab and a toggle on a functional op."""

from __future__ import annotations

from pathlib import Path

import pytest
from PySide6.QtCore import QModelIndex, Qt

from qtapp.ui.layer_model import COL_LOCAL, COL_NAME, COL_QUANT, COL_SQNR, NameRole

KINDS_SPEC = f"{Path(__file__).resolve().parents[1] / 'fixtures' / 'point_kinds.py'}:build"


def visible_names(window) -> list[str]:
    proxy, names = window.proxy, []

    def walk(parent: QModelIndex) -> None:
        for row in range(proxy.rowCount(parent)):
            idx = proxy.index(row, COL_NAME, parent)
            names.append(idx.data(NameRole))
            walk(idx)

    walk(QModelIndex())
    return names


def test_op_points_are_rows_of_their_module_with_both_columns(qtbot, window, open_and_wait, quantize_and_wait):
    open_and_wait(qtbot, window, KINDS_SPEC, kwargs={"kind": "functional"})
    model = window.tree_model
    block = model.index_of("block", COL_NAME)
    children = [model.index(r, COL_NAME, block).data(NameRole) for r in range(model.rowCount(block))]
    assert children == ["block.conv1", "block/add", "block.conv2", "block/add_1"]  # execution order
    assert model.data(model.index_of("block/add", COL_NAME)) == "add"
    assert model.data(model.index_of("block/add", COL_QUANT), Qt.ItemDataRole.CheckStateRole) == Qt.CheckState.Checked
    result = quantize_and_wait(qtbot, window)
    points = {p.name: p for p in result.layers}
    for name in ("block/add", "/cat", "/mean", "mix"):
        assert model.data(model.index_of(name, COL_LOCAL)) == f"{points[name].local_sqnr_db:.1f}"
        assert model.data(model.index_of(name, COL_SQNR)) == f"{points[name].sqnr_db:.1f}"
    # the bad point is marked, and its diagnosis is its tooltip
    assert model.data(model.index_of("/mean", COL_NAME)) == "⚠ mean"
    tip = model.data(model.index_of("/mean", COL_NAME), Qt.ItemDataRole.ToolTipRole)
    assert "⚠ shares the range of /matmul_1" in tip and "local" in tip and "accumulated" in tip


def test_only_bad_points_filter(qtbot, window, open_and_wait, quantize_and_wait):
    open_and_wait(qtbot, window, KINDS_SPEC, kwargs={"kind": "outlier"})
    quantize_and_wait(qtbot, window)
    everything = visible_names(window)
    assert {"input:x", "fc1", "fc2", "fc3"} <= set(everything)
    window.bad_only.setChecked(True)
    assert visible_names(window) == ["", "fc2"]  # the bad point and its ancestor, the model
    window.filter_edit.setText("fc3")  # both filters together: fc3 is not bad
    assert visible_names(window) == []
    window.filter_edit.clear()
    window.bad_only.setChecked(False)
    assert visible_names(window) == everything


def test_the_activation_tab_shows_the_selected_points_range(qtbot, window, open_and_wait, quantize_and_wait):
    open_and_wait(qtbot, window, KINDS_SPEC, kwargs={"kind": "fixed_range"})
    result = quantize_and_wait(qtbot, window)
    point = {p.name: p for p in result.layers}["/truediv"]
    window.select_layer("/truediv")
    plot = window.range_plot
    assert window.detail_tabs.currentWidget() is plot  # no weights to show: the range tab comes up
    assert plot.point_name() == "/truediv" and plot.range_lines() == pytest.approx((point.range.lo, point.range.hi))
    title = plot.title_text()
    assert "range fixed by the op 0 to 0.9961" in title and f"clipped {point.range.clipped_low:.0%} below" in title
    window.select_layer("fc2")  # a layer with weights: its range is there too; the tab stays
    assert plot.point_name() == "fc2" and "calibrated range" in plot.title_text()
    window.detail_tabs.setCurrentWidget(window.weight_plot)
    window.select_layer("input:x")  # no weights: the range tab comes back
    assert window.detail_tabs.currentWidget() is plot and plot.point_name() == "input:x"


def test_keeping_a_functional_op_float_from_the_tree(qtbot, window, open_and_wait, quantize_and_wait):
    session = open_and_wait(qtbot, window, KINDS_SPEC, kwargs={"kind": "functional"})
    quantize_and_wait(qtbot, window)
    model = window.tree_model
    with qtbot.waitSignal(window.result_applied, timeout=60000):
        model.setData(model.index_of("block/add_1", COL_QUANT), Qt.CheckState.Unchecked, Qt.ItemDataRole.CheckStateRole)
    qtbot.waitUntil(lambda: not window.runner.busy and window.controller.waiting is None, timeout=60000)
    assert session.recipe.float_layers == ["block/add_1"]
    assert model.data(model.index_of("block", COL_QUANT), Qt.ItemDataRole.CheckStateRole) == \
        Qt.CheckState.PartiallyChecked
    point = {p.name: p for p in session.result.layers}["block/add_1"]
    assert not point.quantized and point.runs == "float"
    assert model.data(model.index_of("block/add_1", COL_LOCAL)).endswith("(if int8)")


def test_figures_from_before_a_settings_change_are_shown_as_such(qtbot, window, open_and_wait, quantize_and_wait):
    session = open_and_wait(qtbot, window, "demo")
    quantize_and_wait(qtbot, window)
    assert not window.tree_model.stale and not window.layer_plot.is_stale()
    window.settings_panel.engine.setCurrentText("x86")  # needs a new calibration: nothing reruns by itself
    qtbot.waitUntil(lambda: not window.runner.busy, timeout=30000)
    assert session.calibrated is None and window.tree_model.stale and window.layer_plot.is_stale()
    tip = window.tree_model.data(window.tree_model.index_of("block2.0", COL_NAME), Qt.ItemDataRole.ToolTipRole)
    assert "From the last run, made before your latest changes" in tip
    assert window.tree_model.data(window.tree_model.index_of("block2.0", COL_SQNR), Qt.ItemDataRole.BackgroundRole) is None
    quantize_and_wait(qtbot, window)
    assert not window.tree_model.stale and not window.layer_plot.is_stale()


def test_another_activation_range_reconverts_at_once(qtbot, window, open_and_wait, quantize_and_wait):
    session = open_and_wait(qtbot, window, "demo")
    first = quantize_and_wait(qtbot, window)
    calibrated = session.calibrated
    with qtbot.waitSignal(window.result_applied, timeout=60000):
        window.settings_panel.observer.setCurrentText("minmax")
    qtbot.waitUntil(lambda: not window.runner.busy and window.controller.waiting is None, timeout=60000)
    assert session.calibrated is calibrated and session.result is not first
    assert session.result.recipe.observer == "minmax" and not window.tree_model.stale


def test_only_bad_points_on_a_healthy_model_says_there_are_none(qtbot, window, open_and_wait, quantize_and_wait):
    open_and_wait(qtbot, window, "demo")
    assert not window.bad_only.isEnabled()  # nothing to filter before a run
    quantize_and_wait(qtbot, window)
    window.bad_only.setChecked(True)
    assert visible_names(window) == [] and window.tree_hint.isVisible()
    assert "No point is worse than the rest" in window.tree_hint.text()
    window.bad_only.setChecked(False)
    assert not window.tree_hint.isVisible() and "block2.0" in visible_names(window)


def test_a_container_is_not_a_point(qtbot, window, open_and_wait, quantize_and_wait):
    open_and_wait(qtbot, window, "demo")
    quantize_and_wait(qtbot, window)
    window.detail_tabs.setCurrentWidget(window.range_plot)
    window.select_layer("block1")
    assert "block1 is not a quantization point" in window.range_plot.message()
