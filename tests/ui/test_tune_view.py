"""The Tune panel, the Trade-off and Sensitivity tabs: a search run in the background and applied to
the tree, a tried configuration applied by clicking it, cancel, bad input said in the panel."""

from __future__ import annotations

from pathlib import Path

import pyqtgraph as pg
from PySide6.QtCore import Qt

from qtapp.ui.layer_model import COL_QUANT

KINDS_SPEC = f"{Path(__file__).resolve().parents[1] / 'fixtures' / 'point_kinds.py'}:build"


def check_state(window, name):
    model = window.tree_model
    return model.data(model.index_of(name, COL_QUANT), Qt.ItemDataRole.CheckStateRole)


def tune_and_wait(qtbot, window, target, budget="", timeout=120000):
    window.tune_panel.target_edit.setText(target)
    window.tune_panel.budget_edit.setText(budget)
    with qtbot.waitSignal(window.result_applied, timeout=timeout):
        qtbot.mouseClick(window.tune_panel.tune_button, Qt.MouseButton.LeftButton)
    return window.tradeoff_plot.tune()


def test_tune_applies_its_configuration_to_the_tree_and_draws_what_it_tried(qtbot, window, open_and_wait):
    open_and_wait(qtbot, window, KINDS_SPEC, kwargs={"kind": "must_stay_float"})
    tune = tune_and_wait(qtbot, window, "sqnr>=30")
    assert tune.reached and tune.best.config.float_points == {"fc2"}
    assert check_state(window, "fc2") == Qt.CheckState.Unchecked
    assert check_state(window, "fc1") == Qt.CheckState.Checked
    assert not window.runner.busy  # the result shown is the tuned one: no second run was started
    assert window.session.result_is_current() and window.session.result.output.sqnr_db >= 30
    plot = window.tradeoff_plot
    assert window.detail_tabs.currentWidget() is plot
    drawn = {step for step, _x, _y in plot.configurations()}
    assert plot.chosen_step() in drawn and 0 in drawn
    assert "sqnr&gt;=30" in plot.caption_text() and "reached" in plot.caption_text()
    assert "Tune reached sqnr>=30" in window.statusBar().currentMessage()


def test_clicking_a_tried_configuration_applies_it_and_reconverts(qtbot, window, open_and_wait):
    open_and_wait(qtbot, window, KINDS_SPEC, kwargs={"kind": "must_stay_float"})
    tune_and_wait(qtbot, window, "sqnr>=30")
    plot = window.tradeoff_plot
    view = plot.findChild(pg.PlotWidget)
    start = view.mapFromScene(plot.point_of(0))  # the recipe as it was: everything int8
    with qtbot.waitSignal(window.result_applied, timeout=60000):
        qtbot.mouseClick(view.viewport(), Qt.MouseButton.LeftButton, pos=start)
    qtbot.waitUntil(lambda: not window.runner.busy, timeout=60000)
    chosen = plot.tune().steps[plot.selected_step()].scored.config  # the start, or a dot on it
    assert chosen.float_points == frozenset()
    assert check_state(window, "fc2") == Qt.CheckState.Checked
    result = window.session.result
    assert result.float_layers == () and result.output.sqnr_db < 10


def test_a_bad_target_is_said_in_the_panel_and_nothing_runs(qtbot, window, open_and_wait):
    open_and_wait(qtbot, window, "demo")
    window.tune_panel.target_edit.setText("accuracy>=0.9")
    qtbot.mouseClick(window.tune_panel.tune_button, Qt.MouseButton.LeftButton)
    assert "cannot read target 'accuracy>=0.9'" in window.tune_panel.error_text()
    assert not window.runner.busy and window.session.result is None
    window.tune_panel.target_edit.setText("sqnr>=30")
    window.tune_panel.budget_edit.setText("size<=5%")
    qtbot.mouseClick(window.tune_panel.tune_button, Qt.MouseButton.LeftButton)
    assert "budget 'size<=5%'" in window.tune_panel.error_text()
    assert not window.runner.busy


def test_cancelling_a_tune_leaves_the_tree_as_it_was(qtbot, window, open_and_wait):
    open_and_wait(qtbot, window, KINDS_SPEC, kwargs={"kind": "outlier"})
    window.tune_panel.target_edit.setText("sqnr>=30")
    qtbot.mouseClick(window.tune_panel.tune_button, Qt.MouseButton.LeftButton)
    # once the search itself runs (after the start's quantize, the range choices and the start's score)
    qtbot.waitUntil(lambda: window.progress_label.text().startswith("tune: trying"), timeout=60000)
    qtbot.mouseClick(window.cancel_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: not window.runner.busy, timeout=60000)
    assert window.session.inventory.float_layers == [] and window.session.recipe.overrides == {}
    tried = window.tradeoff_plot.tune()  # what the search tried stays in view, marked as cancelled
    assert tried is not None and tried.cancelled and len(tried.steps) >= 1
    assert window.detail_tabs.currentWidget() is window.tradeoff_plot
    assert "search cancelled" in window.tradeoff_plot.caption_text()
    assert "Nothing was applied" in window.tradeoff_plot.caption_text()
    assert len(window.tradeoff_plot.configurations()) >= 1
    message = window.statusBar().currentMessage()
    assert message.startswith("tune cancelled after") and "nothing was applied" in message
    qtbot.wait(5500)  # the old message vanished after 5 s, leaving an empty bar
    assert window.statusBar().currentMessage() == message


def test_sensitivity_ranks_every_toggle_and_a_bar_selects_its_point(qtbot, window, open_and_wait):
    open_and_wait(qtbot, window, KINDS_SPEC, kwargs={"kind": "must_stay_float"})
    with qtbot.waitSignal(window.result_applied, timeout=120000):
        qtbot.mouseClick(window.tune_panel.sensitivity_button, Qt.MouseButton.LeftButton)
    plot = window.sensitivity_plot
    assert window.detail_tabs.currentWidget() is plot
    assert sorted(plot.names()) == ["fc1", "fc2", "fc3"] and plot.names()[0] == "fc2"
    assert plot.gains()[0] > 20
    view = plot.findChild(pg.PlotWidget)
    qtbot.mouseClick(view.viewport(), Qt.MouseButton.LeftButton, pos=view.mapFromScene(plot.bar_center("fc3")))
    assert window.selected_layer() == "fc3"


def test_a_metric_chosen_in_the_panel_scores_the_next_run(qtbot, window, open_and_wait, quantize_and_wait):
    open_and_wait(qtbot, window, "demo")
    quantize_and_wait(qtbot, window)
    box = window.tune_panel.metric_box
    with qtbot.waitSignal(window.result_applied, timeout=60000):
        box.setCurrentIndex(box.findData("cosine"))
        box.activated.emit(box.currentIndex())
    qtbot.waitUntil(lambda: not window.runner.busy, timeout=60000)
    result = window.session.result
    assert result.output.metric.name == "cosine" and window.session.recipe.metric == "cosine"
    assert "Metric cosine" in window.summary.text()
