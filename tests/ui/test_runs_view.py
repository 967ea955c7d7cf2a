"""Issue 19, 'compare runs': every run of a session kept in the Runs dock, two side by side with the
figures of their report.json; Edit > Undo/Redo over toggles and settings."""

from __future__ import annotations

from PySide6.QtCore import Qt

from qtapp.core.report.render import report_dict


def _toggle_and_wait(qtbot, window, name):
    with qtbot.waitSignal(window.result_applied, timeout=120000):
        window.session.inventory.set_float(name, keep_float=name not in window.session.inventory.float_layers)
    qtbot.waitUntil(lambda: not window.runner.busy and window.controller.waiting is None, timeout=120000)


def test_every_run_is_kept_and_two_are_compared_with_their_reports_figures(qtbot, window, open_and_wait,
                                                                          quantize_and_wait):
    open_and_wait(qtbot, window, "demo")
    first = report_dict(quantize_and_wait(qtbot, window))
    _toggle_and_wait(qtbot, window, "fc1")  # a toggle after a run reconverts: a second run
    second = report_dict(window.session.result)
    window.compare_action.trigger()
    panel = window.runs_panel
    assert window.runs_dock.isVisible() and panel.run_numbers() == [1, 2] and panel.chosen() == (1, 2)
    rows = {label: (a, b) for label, a, b, _change in panel.figure_rows()}
    assert rows["output SQNR"] == (f"{first['output']['sqnr_db']:.1f} dB", f"{second['output']['sqnr_db']:.1f} dB")
    assert rows["size (quantized)"] == (f"{first['size_bytes']['quantized'] / 1e6:.2f} MB",
                                        f"{second['size_bytes']['quantized'] / 1e6:.2f} MB")
    assert rows["latency (quantized)"][1] == f"{second['latency_ms']['quantized']:.2f} ms"
    assert "float only in B: fc1" in panel.settings_label.text()
    bars = {name: (a, b) for name, a, b in panel.bar_pairs()}
    for layer in first["layers"]:
        assert bars[layer["name"]][0] == layer["local_sqnr_db"]
    panel.metric_box.setCurrentIndex(panel.metric_box.findData("accumulated"))
    bars = {name: (a, b) for name, a, b in panel.bar_pairs()}
    for layer in second["layers"]:
        assert bars[layer["name"]][1] == layer["accumulated_sqnr_db"]
    panel.select(2, 1)  # either way round
    assert panel.figure_rows()[0][1] == f"{second['output']['sqnr_db']:.1f} dB"


def test_undo_and_redo_a_toggle_and_a_setting(qtbot, window, open_and_wait, quantize_and_wait):
    open_and_wait(qtbot, window, "demo")
    assert not window.undo_action.isEnabled()
    quantize_and_wait(qtbot, window)
    _toggle_and_wait(qtbot, window, "fc1")
    assert window.undo_action.text() == "Undo fc1 kept float"
    with qtbot.waitSignal(window.result_applied, timeout=120000):
        window.undo_action.trigger()  # back to int8, reconverted
    qtbot.waitUntil(lambda: not window.runner.busy and window.controller.waiting is None, timeout=120000)
    assert window.session.inventory.float_layers == [] and window.session.result.float_layers == ()
    assert window.redo_action.text() == "Redo fc1 kept float"
    with qtbot.waitSignal(window.result_applied, timeout=120000):
        window.redo_action.trigger()
    qtbot.waitUntil(lambda: not window.runner.busy and window.controller.waiting is None, timeout=120000)
    assert window.session.inventory.float_layers == ["fc1"]
    window.settings_panel.engine.setCurrentText("x86")  # a setting: the panel's own signal
    qtbot.waitUntil(lambda: window.session.recipe.engine == "x86" and not window.runner.busy, timeout=60000)
    assert window.undo_action.text() == "Undo engine x86"
    window.undo_action.trigger()
    qtbot.waitUntil(lambda: window.session.recipe.engine == "fbgemm" and not window.runner.busy, timeout=60000)
    assert window.settings_panel.engine.currentText() == "fbgemm" and window.session.inventory.float_layers == ["fc1"]
    assert window.redo_action.isEnabled()


def test_ctrl_z_in_a_text_field_undoes_the_typing_not_the_model(qtbot, window, open_and_wait):
    open_and_wait(qtbot, window, "demo")
    window.session.inventory.set_float("fc1")
    qtbot.waitUntil(lambda: not window.runner.busy, timeout=60000)
    field = window.tune_panel.target_edit
    field.setFocus()
    qtbot.waitUntil(field.hasFocus, timeout=5000)
    field.selectAll()
    qtbot.keyClicks(field, "sqnr>=35")
    qtbot.keyClick(field, Qt.Key.Key_Z, Qt.KeyboardModifier.ControlModifier)
    assert field.text() != "sqnr>=35"  # the typing undone
    assert window.session.inventory.float_layers == ["fc1"]  # the toggle kept
