"""The real window, driven offscreen: open, toggle, run, inspect plots, cancel, errors, export."""


import pytest
import torch
from PySide6.QtCore import QModelIndex, Qt, QTimer
from PySide6.QtWidgets import QApplication, QMessageBox

from qtapp.ui.layer_model import COL_LOCAL, COL_NAME, COL_QUANT, COL_SQNR, NameRole


def _check_state(window, name):
    idx = window.tree_model.index_of(name, COL_QUANT)
    return Qt.CheckState(window.tree_model.data(idx, Qt.ItemDataRole.CheckStateRole))


def test_open_demo_fills_the_tree(qtbot, window, open_and_wait):
    session = open_and_wait(qtbot, window, "demo")
    model = window.tree_model
    root = model.index(0, COL_NAME)
    assert model.rowCount() == 1 and model.data(root, NameRole) == ""
    children = [model.data(model.index(r, COL_NAME, root), NameRole) for r in range(model.rowCount(root))]
    assert children == [c for c in session.inventory[""].children]
    assert "block1" in children and "fc2" in children
    assert window.settings_panel.isEnabled() and window.run_button.isEnabled()
    assert window.layer_plot.is_empty() and window.output_plot.is_empty()


def test_toggle_both_directions(qtbot, window, open_and_wait):
    session = open_and_wait(qtbot, window, "demo")
    model = window.tree_model
    # view -> core: unchecking a fused BatchNorm keeps its group's head float, visibly.
    bn = model.index_of("block1.1", COL_QUANT)
    assert model.setData(bn, Qt.CheckState.Unchecked, Qt.ItemDataRole.CheckStateRole)
    assert session.recipe.float_layers == ["block1.0"]
    assert _check_state(window, "block1.0") == Qt.CheckState.Unchecked
    assert _check_state(window, "block1.2") == Qt.CheckState.Unchecked
    assert _check_state(window, "block1") == Qt.CheckState.Unchecked
    assert _check_state(window, "") == Qt.CheckState.PartiallyChecked
    # core -> view: a change made in the core arrives as dataChanged.
    with qtbot.waitSignal(model.dataChanged, timeout=1000):
        session.inventory.set_float("fc2")
    assert _check_state(window, "fc2") == Qt.CheckState.Unchecked
    session.inventory.set_float(["block1", "fc2"], keep_float=False)
    assert _check_state(window, "") == Qt.CheckState.Checked
    assert session.recipe.float_layers == []
    # an int8 point torch cannot keep float has no checkbox, with the reason as tooltip; it stays selectable
    # (its activation range is worth a look)
    pool = model.index_of("pool", COL_QUANT)
    assert model.flags(pool) & Qt.ItemFlag.ItemIsSelectable and not model.flags(pool) & Qt.ItemFlag.ItemIsUserCheckable
    assert model.data(pool, Qt.ItemDataRole.CheckStateRole) is None
    tip = model.data(model.index_of("pool", COL_NAME), Qt.ItemDataRole.ToolTipRole)
    assert "No float toggle: runs on int8 values and rounds its output to the range of block2.0" in tip


def test_run_shows_core_results_everywhere(qtbot, window, open_and_wait, quantize_and_wait):
    session = open_and_wait(qtbot, window, "demo")
    result = quantize_and_wait(qtbot, window)
    assert result is session.result and result.latency is not None
    quantized = [l for l in result.layers if l.quantized]
    assert len(quantized) == 9  # the five layers, the input, and pool, gap and flatten between them
    # tree columns: each point's own (local) error and the error accumulated there
    for layer in result.layers:
        assert window.tree_model.data(window.tree_model.index_of(layer.name, COL_SQNR)) == f"{layer.sqnr_db:.1f}"
        assert window.tree_model.data(window.tree_model.index_of(layer.name, COL_LOCAL)) == f"{layer.local_sqnr_db:.1f}"
    # bar chart, local by default
    assert window.layer_plot.bar_names() == [l.name for l in result.layers]
    assert window.layer_plot.bar_heights() == pytest.approx([l.local_sqnr_db for l in result.layers])
    # selecting a layer shows its histogram and highlights its bar; clicking a bar selects the layer
    window.select_layer("block2.0")
    assert window.weight_plot.layer_name() == "block2.0"
    assert window.layer_plot.highlighted() == "block2.0"
    window.layer_plot.layer_clicked.emit("fc1")
    assert window.selected_layer() == "fc1" and window.weight_plot.layer_name() == "fc1"
    # selecting a fused member shows its head
    window.select_layer("block3.1")
    assert window.weight_plot.layer_name() == "block3.0"
    # output plot and summary
    assert window.output_plot.point_count() == len(result.output.ref_values)
    figures = window.summary.figures
    assert figures["size_float"] == result.size_float and figures["size_quantized"] == result.size_quantized
    assert figures["accuracy_quantized"] == result.output.accuracy_quantized
    assert figures["latency_quantized"] == result.latency.quantized_ms
    assert abs(result.output.accuracy_quantized - result.output.accuracy_float) <= 0.02


def test_toggle_after_run_reconverts_without_recalibrating(qtbot, window, open_and_wait, quantize_and_wait):
    session = open_and_wait(qtbot, window, "demo")
    quantize_and_wait(qtbot, window)
    calibrated = session.calibrated
    with qtbot.waitSignal(window.result_applied, timeout=60000):
        window.tree_model.setData(window.tree_model.index_of("fc2", COL_QUANT), Qt.CheckState.Unchecked,
                                  Qt.ItemDataRole.CheckStateRole)
    qtbot.waitUntil(lambda: not window.runner.busy and window.controller.waiting is None, timeout=60000)
    assert session.calibrated is calibrated
    layer = {l.name: l for l in session.result.layers}["fc2"]
    assert not layer.quantized and session.result.float_layers == ("fc2",)
    assert "(float)" in window.tree_model.data(window.tree_model.index_of("fc2", COL_SQNR)) or layer.sqnr_db is None


def test_cancel_mid_calibration_keeps_model_and_previous_result(qtbot, window, open_and_wait):
    session = open_and_wait(qtbot, window, "torchvision:resnet18")
    before = {k: v.clone() for k, v in session.loaded.module.state_dict().items()}
    session.update_recipe(observer="minmax", calibration=type(session.recipe.calibration)(
        source="random", batches=40, batch_size=4))
    seen = []
    window.runner.busy_changed.connect(lambda busy: None)
    window.run_button.click()
    qtbot.waitUntil(lambda: window.progress.value() >= 2 and window.runner.name == "quantize", timeout=60000)
    seen.append(window.progress.value())
    window.cancel_button.click()
    qtbot.waitUntil(lambda: not window.runner.busy, timeout=60000)
    assert session.calibrated is None and session.result is None
    assert window.summary.figures == {}
    after = session.loaded.module.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert seen[0] < 40


def test_gui_thread_stays_responsive_while_resnet18_calibrates(qtbot, window, open_and_wait):
    import threading

    session = open_and_wait(qtbot, window, "torchvision:resnet18")
    session.update_recipe(calibration=type(session.recipe.calibration)(source="random", batches=6, batch_size=8))
    forward_threads = set()  # where the model runs: hooks travel with the copy the calibration prepares
    hook = session.loaded.module.conv1.register_forward_hook(
        lambda *_: forward_threads.add(threading.get_ident()))
    ticks = []  # GUI-thread timer ticks seen while the progress says "calibrate"
    timer = QTimer()
    timer.setInterval(10)
    timer.timeout.connect(lambda: ticks.append(threading.get_ident())
                          if window.progress_label.text().startswith("calibrate") else None)
    timer.start()
    try:
        window.run_button.click()
        qtbot.waitUntil(lambda: window.progress_label.text().startswith("calibrate: 6/6")
                        or not window.runner.busy, timeout=300000)
    finally:
        timer.stop()
        hook.remove()
    window.cancel_job()
    qtbot.waitUntil(lambda: not window.runner.busy, timeout=60000)
    gui = threading.get_ident()
    assert forward_threads and gui not in forward_threads  # the model never ran on the GUI thread
    assert len(ticks) >= 3 and set(ticks) == {gui}  # and its event loop kept turning while it calibrated


def _error_dialogs():
    return [w for w in QApplication.topLevelWidgets() if isinstance(w, QMessageBox) and w.objectName() == "errorDialog"
            and w.isVisible()]


def test_bad_file_opens_error_dialog(qtbot, window, tmp_path):
    bad = tmp_path / "broken.pt"
    bad.write_bytes(b"this is not a model")
    with qtbot.waitSignal(window.job_failed, timeout=30000):
        window.open_spec(str(bad))
    qtbot.waitUntil(lambda: bool(_error_dialogs()), timeout=5000)
    box = _error_dialogs()[0]
    assert "broken.pt" in box.text()
    assert "Traceback" in box.detailedText()
    box.close()
    assert window.session is None


def consent_dialog(qtbot, window, name):
    """The visible consent dialog named `name` (waits for it)."""
    from PySide6.QtWidgets import QMessageBox

    def visible():
        return [b for b in window.findChildren(QMessageBox, name) if b.isVisible()]

    qtbot.waitUntil(lambda: bool(visible()), timeout=30000)
    return visible()[0]


def answer(box, accept: bool) -> None:
    from PySide6.QtWidgets import QMessageBox

    role = QMessageBox.ButtonRole.AcceptRole if accept else QMessageBox.ButtonRole.RejectRole
    next(b for b in box.buttons() if box.buttonRole(b) == role).click()


def test_untrusted_pickle_asks_and_runs_nothing_when_refused(qtbot, window, tmp_path, monkeypatch):
    import sys

    pkg = tmp_path / "evilpkg"
    pkg.mkdir()
    marker = tmp_path / "executed"
    (pkg / "__init__.py").write_text(
        "import torch.nn as nn, pathlib\n"
        f"pathlib.Path({str(marker)!r}).write_text('imported')\n"
        "class Net(nn.Module):\n"
        "    def __init__(self):\n        super().__init__()\n        self.fc = nn.Linear(4, 2)\n"
        "    def forward(self, x):\n        return self.fc(x)\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    import evilpkg

    path = tmp_path / "net.pt"
    torch.save(evilpkg.Net(), path)
    marker.unlink()
    del sys.modules["evilpkg"]
    window.open_spec(str(path))
    box = consent_dialog(qtbot, window, "trustDialog")
    assert "evilpkg.Net" in box.text()
    answer(box, accept=False)
    qtbot.wait(200)
    assert not marker.exists() and window.session is None
    # Defect 1: accepting the dialog used to do nothing (the status bar stayed on "Opening ...").
    window.open_spec(str(path), input_shape="1,4")
    with qtbot.waitSignal(window.session_changed, timeout=30000):
        answer(consent_dialog(qtbot, window, "trustDialog"), accept=True)
    assert marker.exists() and type(window.session.loaded.module).__name__ == "Net"


def test_export_writes_verified_files(qtbot, window, tmp_path, open_and_wait, quantize_and_wait):
    open_and_wait(qtbot, window, "demo")
    quantize_and_wait(qtbot, window)
    dialog = window.open_export_dialog()
    dialog.folder.setText(str(tmp_path / "out"))
    dialog.formats["onnx"].setChecked(True)
    dialog.time_files.setChecked(False)  # timing each file: tests/ui/test_deploy_view.py
    dialog.export_button.click()
    qtbot.waitUntil(lambda: dialog.table.rowCount() == 3, timeout=60000)
    qtbot.waitUntil(lambda: not window.runner.busy, timeout=60000)
    for row, fmt in enumerate(("pt", "ptl", "onnx")):
        assert dialog.table.item(row, 0).text() == fmt
        assert dialog.table.item(row, 3).text() == "yes"
        assert (tmp_path / "out" / f"model.{fmt}").stat().st_size > 0
    assert (tmp_path / "out" / "report.json").exists() and (tmp_path / "out" / "recipe.json").exists()
    dialog.close()


def test_recipe_save_and_reopen_and_recent_files(qtbot, window, tmp_path, settings_dir, open_and_wait):
    session = open_and_wait(qtbot, window, "demo")
    session.inventory.set_float("fc1")
    window.settings_panel.engine.setCurrentText("x86")
    qtbot.waitUntil(lambda: session.recipe.engine == "x86" and not window.runner.busy, timeout=10000)
    path = tmp_path / "r.json"
    window.save_recipe(str(path))
    with qtbot.waitSignal(window.session_changed, timeout=30000):
        window.open_recipe(str(path))
    assert window.session.recipe.engine == "x86" and window.session.recipe.float_layers == ["fc1"]
    assert window.settings_panel.engine.currentText() == "x86"
    assert window.recent_files()[0] == str(path.resolve())
    assert (settings_dir / "qtapp.ini").exists()


def test_method_change_rebuilds_the_tree_off_the_gui_thread(qtbot, window, open_and_wait):
    session = open_and_wait(qtbot, window, "demo")
    window.settings_panel.method.setCurrentText("dynamic")
    qtbot.waitUntil(lambda: session.inventory.method == "dynamic" and not window.runner.busy, timeout=30000)
    assert window.tree_model.inventory is session.inventory
    assert set(session.inventory.heads) == {"fc1", "fc2"}
    assert window.tree_model.flags(window.tree_model.index_of("block1.0", COL_QUANT)) == Qt.ItemFlag.ItemIsSelectable
    assert window.settings_panel.dtype.isEnabled()


def _menu_action(menu, prefix):
    return next(a for a in menu.actions() if a.text().startswith(prefix))


def test_filter_and_context_menu(qtbot, window, open_and_wait):
    session = open_and_wait(qtbot, window, "demo")
    window.filter_edit.setText("batchnorm")
    visible = []

    def walk(parent):
        for r in range(window.proxy.rowCount(parent)):
            idx = window.proxy.index(r, 0, parent)
            visible.append(idx.data(NameRole))
            walk(idx)

    walk(QModelIndex())
    assert {n for n in visible if n and n.count(".")} == {"block1.1", "block2.1", "block3.1"}
    window.filter_edit.clear()
    # context menu actions edit the core inventory
    block2 = window.proxy.mapFromSource(window.tree_model.index_of("block2", COL_NAME))
    _menu_action(window.tree_menu(block2), "Keep this subtree float").trigger()
    assert session.inventory.float_layers == ["block2.0"]
    _menu_action(window.tree_menu(block2), "Quantize this subtree").trigger()
    assert session.inventory.float_layers == []
    fc1 = window.proxy.mapFromSource(window.tree_model.index_of("fc1", COL_NAME))
    action = _menu_action(window.tree_menu(fc1), "Keep every Linear float")
    assert action.text().endswith("(2)")
    action.trigger()
    assert session.recipe.float_layers == ["fc1", "fc2"]
    pool = window.proxy.mapFromSource(window.tree_model.index_of("pool", COL_NAME))
    assert not _menu_action(window.tree_menu(pool), "Keep this subtree float").isEnabled()


def test_drop_a_recipe_file_opens_it(qtbot, window, tmp_path):
    from PySide6.QtCore import QMimeData, QPointF, QUrl
    from PySide6.QtGui import QDropEvent

    from qtapp.core.config.recipe import QuantRecipe

    path = tmp_path / "r.json"
    QuantRecipe("demo", engine="qnnpack", float_layers=["fc2"]).save(path)
    mime = QMimeData()
    mime.setUrls([QUrl.fromLocalFile(str(path))])
    event = QDropEvent(QPointF(10, 10), Qt.DropAction.CopyAction, mime, Qt.MouseButton.LeftButton,
                       Qt.KeyboardModifier.NoModifier)
    with qtbot.waitSignal(window.session_changed, timeout=30000):
        window.dropEvent(event)
    assert window.session.recipe.engine == "qnnpack" and window.session.inventory.float_layers == ["fc2"]
    assert "slower than float" in window.settings_panel.engine_note.text()


def test_second_job_is_refused_and_close_during_run_stops_cleanly(qtbot, settings_dir, open_and_wait, delete_now):
    from qtapp.ui.app import make_settings
    from qtapp.ui.main_window import MainWindow

    win = MainWindow(make_settings())
    win.show()
    session = open_and_wait(qtbot, win, "torchvision:resnet18")
    session.update_recipe(observer="minmax", calibration=type(session.recipe.calibration)(
        source="random", batches=50, batch_size=4))
    win.run_quantize()
    qtbot.waitUntil(lambda: win.progress.value() >= 1, timeout=60000)
    assert not win.run_button.isEnabled()
    assert win.runner.start("second", lambda cancel: iter(())) is False
    win.close()  # cancels at the next batch and waits for the worker thread
    assert not win.runner.thread_running and not win.runner.busy
    assert session.calibrated is None
    delete_now(win)


def test_resnet18_toggle_reconverts_without_recalibrating_and_updates_errors(qtbot, window, open_and_wait):
    session = open_and_wait(qtbot, window, "torchvision:resnet18")
    session.update_recipe(observer="minmax", calibration=type(session.recipe.calibration)(
        source="random", batches=2, batch_size=4), evaluation=type(session.recipe.evaluation)(
        source="random", batches=2, batch_size=8))
    with qtbot.waitSignal(window.result_applied, timeout=120000):
        window.run_quantize()
    calibrated = session.calibrated
    with qtbot.waitSignal(window.result_applied, timeout=60000):
        session.inventory.set_float("layer4.1.bn2")  # a fused member: acts on layer4.1.conv2
    assert session.calibrated is calibrated  # reconverted from the same calibration (speed: benchmarks/)
    layer = {l.name: l for l in session.result.layers}["layer4.1.conv2"]
    assert not layer.quantized
    assert window.layer_plot.bar_names()[window.layer_plot.bar_names().index("layer4.1.conv2")] == "layer4.1.conv2"


def test_qat_and_dynamic_from_the_settings_panel(qtbot, window, open_and_wait, quantize_and_wait):
    session = open_and_wait(qtbot, window, "demo")
    window.settings_panel.method.setCurrentText("qat")
    qtbot.waitUntil(lambda: session.recipe.method == "qat" and not window.runner.busy, timeout=30000)
    assert window.settings_panel.qat_box.isEnabled()
    window.settings_panel.epochs.setValue(1)
    qtbot.waitUntil(lambda: session.recipe.qat.epochs == 1 and not window.runner.busy, timeout=10000)
    result = quantize_and_wait(qtbot, window)
    assert session.calibrated.stats["epoch_losses"] and len(session.calibrated.stats["epoch_losses"]) == 1
    assert abs(result.output.accuracy_quantized - result.output.accuracy_float) <= 0.02
    assert window.summary.figures["accuracy_quantized"] == result.output.accuracy_quantized
    window.settings_panel.method.setCurrentText("dynamic")
    qtbot.waitUntil(lambda: session.recipe.method == "dynamic" and not window.runner.busy, timeout=30000)
    assert "run again" in window.summary.text()
    result = quantize_and_wait(qtbot, window)
    assert [l.name for l in result.layers if l.quantized] == ["fc1", "fc2"]
    assert window.layer_plot.bar_names() == ["fc1", "fc2"]


def test_depthwise_equalisation_is_a_setting_of_the_window(qtbot, window, open_and_wait):
    session = open_and_wait(qtbot, window, "demo")
    box = window.settings_panel.equalize_depthwise
    assert box.isChecked() and box.isEnabled() and session.recipe.equalize_depthwise  # on by default
    box.setChecked(False)
    qtbot.waitUntil(lambda: not session.recipe.equalize_depthwise and not window.runner.busy, timeout=10000)
    window.settings_panel.per_channel.setChecked(False)  # it needs per-channel weights
    qtbot.waitUntil(lambda: not session.recipe.per_channel and not window.runner.busy, timeout=10000)
    assert not box.isEnabled()
    window.settings_panel.per_channel.setChecked(True)
    qtbot.waitUntil(lambda: session.recipe.per_channel and not window.runner.busy, timeout=10000)
    window.settings_panel.method.setCurrentText("dynamic")
    qtbot.waitUntil(lambda: session.recipe.method == "dynamic" and not window.runner.busy, timeout=30000)
    assert not box.isEnabled()  # dynamic quantization calibrates nothing


def test_a_calibration_data_error_points_at_the_control_that_sets_the_file(qtbot, window, open_and_wait, tmp_path):
    """The dialog named the file but not where the window sets it (issue 19, 12)."""
    import numpy as np

    data = tmp_path / "wrong_shape.npz"
    np.savez(data, x=np.zeros((4, 3, 5, 5), dtype=np.float32))
    open_and_wait(qtbot, window, "demo")
    session = window.session
    session.update_recipe(calibration=type(session.recipe.calibration)(source=str(data), batches=1, batch_size=4))
    with qtbot.waitSignal(window.job_failed, timeout=60000) as failed:
        window.run_quantize()
    qtbot.waitUntil(lambda: bool(_error_dialogs()), timeout=5000)
    box = _error_dialogs()[0]
    assert str(data) in box.text() and "Calibration data ▸ Source / Path" in box.text()
    assert "Calibration data ▸ Source / Path" in failed.args[0]
    box.close()


def test_the_output_error_of_a_run_before_a_method_change_is_marked_as_such(qtbot, window, open_and_wait,
                                                                           quantize_and_wait):
    """Static -> dynamic cleared the tree and bars but left "SQNR 43.6 dB" unmarked (issue 19, 6)."""
    session = open_and_wait(qtbot, window, "demo")
    quantize_and_wait(qtbot, window)
    before = window.output_plot.outputs_title()
    assert before.startswith("Outputs, SQNR") and "before your changes" not in before
    window.settings_panel.method.setCurrentText("dynamic")
    qtbot.waitUntil(lambda: session.inventory.method == "dynamic" and not window.runner.busy, timeout=30000)
    assert window.output_plot.outputs_title() == before + "<br>(before your changes)"
    window.settings_panel.method.setCurrentText("static")  # back to the settings of the run shown
    qtbot.waitUntil(lambda: session.inventory.method == "static" and not window.runner.busy, timeout=30000)
    assert window.output_plot.outputs_title() == before


def test_file_save_report_writes_the_cli_s_report_html(qtbot, window, open_and_wait, quantize_and_wait, tmp_path,
                                                        monkeypatch):
    """File > Save report… writes the same self-contained report.html as qtapp-cli --html (issue 19)."""
    from PySide6.QtWidgets import QFileDialog

    from qtapp.core.report.html import to_html

    open_and_wait(qtbot, window, "demo")
    assert not window.save_report_action.isEnabled()  # nothing to report yet
    quantize_and_wait(qtbot, window)
    assert window.save_report_action.isEnabled()
    path = tmp_path / "report.html"
    monkeypatch.setattr(QFileDialog, "getSaveFileName", lambda *a, **k: (str(path), "HTML report (*.html)"))
    window.save_report_action.trigger()
    html = path.read_text(encoding="utf-8")
    assert html == to_html(window.session.result)
    assert html.startswith("<!doctype html>") and "<title>demo: quantization report</title>" in html
    assert window.statusBar().currentMessage() == f"Saved report {path}"
