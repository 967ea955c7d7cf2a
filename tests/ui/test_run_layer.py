"""The window on the run layer: one job per action, results adopted on the GUI thread, the newest
action wins, and every figure shown is the figure of report.json for the same result."""

from __future__ import annotations

import pytest
from PySide6.QtCore import Qt

from qtapp.core.report.render import report_dict
from qtapp.ui.layer_model import COL_QUANT

pytestmark = pytest.mark.filterwarnings(r"ignore:.*torch\.jit\..*deprecated:FutureWarning")


def wait_idle(qtbot, window, timeout=120000):
    qtbot.waitUntil(lambda: not window.runner.busy and window.controller.waiting is None, timeout=timeout)


def test_switching_the_dynamic_dtype_runs_with_that_dtype(qtbot, window, seq_spec, open_and_wait, quantize_and_wait):
    """Defect 2: float16 used to change nothing (qint8 weights) while the report said float16."""
    session = open_and_wait(qtbot, window, seq_spec)
    window.settings_panel.method.setCurrentText("dynamic")
    wait_idle(qtbot, window)
    first = quantize_and_wait(qtbot, window)
    window.settings_panel.dtype.setCurrentText("float16")
    qtbot.waitUntil(lambda: session.recipe.dtype == "float16", timeout=30000)
    wait_idle(qtbot, window)
    second = quantize_and_wait(qtbot, window)
    assert {l.weight.qscheme for l in second.layers if l.quantized and l.weight is not None} == {"float16"}
    assert second.size_quantized > first.size_quantized  # float16 weights take twice the bytes of int8
    assert report_dict(second)["dtype"] == "float16"


def test_the_summary_shows_the_figures_of_report_json(qtbot, window, open_and_wait, quantize_and_wait):
    open_and_wait(qtbot, window, "demo")
    result = quantize_and_wait(qtbot, window)
    report = report_dict(result)
    figures = window.summary.figures
    assert figures["size_float"] == report["size_bytes"]["float"]
    assert figures["size_quantized"] == report["size_bytes"]["quantized"]
    assert figures["latency_float"] == report["latency_ms"]["float"]
    assert figures["latency_quantized"] == report["latency_ms"]["quantized"]
    assert figures["accuracy_quantized"] == report["output"]["accuracy_quantized"]
    assert figures["sqnr_db"] == report["output"]["sqnr_db"]
    text = window.summary.text()
    for note in report["notes"]:
        assert note.replace("'", "&#x27;") in text


def test_a_toggle_during_a_run_cancels_it_and_the_window_ends_on_the_toggled_result(
        qtbot, window, open_and_wait, quantize_and_wait):
    session = open_and_wait(qtbot, window, "demo")
    quantize_and_wait(qtbot, window)  # a calibration to reconvert from
    window.run_quantize()
    assert window.runner.busy
    window.tree_model.setData(window.tree_model.index_of("fc2", COL_QUANT), Qt.CheckState.Unchecked,
                              Qt.ItemDataRole.CheckStateRole)
    assert window.controller.waiting == "quantize"  # the toggle's reconversion waits for the cancel
    wait_idle(qtbot, window)
    assert session.result.float_layers == ("fc2",)
    assert {l.name: l.quantized for l in session.result.layers}["fc2"] is False


def test_after_a_run_the_worst_layer_is_selected(qtbot, window, open_and_wait, quantize_and_wait):
    """Defect 11: the weight pane used to say "Select a quantized layer" after every run."""
    open_and_wait(qtbot, window, "demo")
    result = quantize_and_wait(qtbot, window)
    worst = min((l for l in result.layers if l.quantized), key=lambda l: l.local_sqnr_db)  # costs most itself
    assert window.selected_layer() == worst.name
    assert window.layer_plot.highlighted() == worst.name


def test_a_torchscript_model_cannot_be_run(qtbot, window, tmp_path, open_and_wait):
    """Defect 9: a TorchScript file opened with Calibrate enabled and failed only when clicked."""
    import torch

    from .test_main_window import answer, consent_dialog

    path = tmp_path / "scripted.pt"
    torch.jit.save(torch.jit.script(torch.nn.Linear(4, 2)), str(path))
    window.open_path_or_spec(str(path))  # a program: the window asks first
    with qtbot.waitSignal(window.session_changed, timeout=60000):
        answer(consent_dialog(qtbot, window, "programConsentDialog"), accept=True)
    qtbot.waitUntil(lambda: not window.runner.busy, timeout=60000)
    assert not window.run_button.isEnabled() and not window.run_action.isEnabled()
    assert "TorchScript" in window.run_button.toolTip()


def test_results_of_another_method_are_not_shown_as_current(qtbot, window, open_and_wait, quantize_and_wait):
    """Defect 4: after static -> dynamic the tree kept the old SQNR cells and the chart its bars."""
    from qtapp.ui.layer_model import COL_SQNR

    session = open_and_wait(qtbot, window, "demo")
    quantize_and_wait(qtbot, window)
    assert window.tree_model.data(window.tree_model.index_of("block1.0", COL_SQNR))
    window.settings_panel.method.setCurrentText("dynamic")
    qtbot.waitUntil(lambda: session.inventory.method == "dynamic" and not window.runner.busy, timeout=30000)
    assert window.tree_model.data(window.tree_model.index_of("fc1", COL_SQNR)) in ("", None)
    assert window.layer_plot.bar_names() == []
    assert "Settings changed since this result" in window.summary.text()


def test_columns_say_what_they_show(window):
    """Defect 7: nothing said the SQNR column is the error accumulated up to the layer."""
    from qtapp.ui.layer_model import COL_QUANT, COL_SQNR

    tip = window.tree_model.headerData(COL_SQNR, Qt.Orientation.Horizontal, Qt.ItemDataRole.ToolTipRole)
    assert "accumulated" in tip and "15 dB" in tip and "35 dB" in tip
    assert window.tree_model.headerData(COL_QUANT, Qt.Orientation.Horizontal, Qt.ItemDataRole.ToolTipRole)


def test_a_dropped_python_file_opens_the_factory_dialog(qtbot, window, tmp_path):
    """Defect 9: a dropped .py file was opened as a model file and failed."""
    from PySide6.QtCore import QMimeData, QPointF, QUrl
    from PySide6.QtGui import QDropEvent

    from qtapp.ui.dialogs import FactoryDialog

    canary = tmp_path / "CANARY"
    path = tmp_path / "net.py"
    path.write_text(f"open({str(canary)!r}, 'w').write('ran')\nimport torch.nn as nn\n"
                    "def build():\n    m = nn.Sequential(nn.Linear(4, 3))\n    m.example_input_shape = (1, 4)\n"
                    "    return m\n")
    mime = QMimeData()
    mime.setUrls([QUrl.fromLocalFile(str(path))])
    window.dropEvent(QDropEvent(QPointF(10, 10), Qt.DropAction.CopyAction, mime, Qt.MouseButton.LeftButton,
                                Qt.KeyboardModifier.NoModifier))
    qtbot.waitUntil(lambda: any(d.isVisible() for d in window.findChildren(FactoryDialog)), timeout=5000)
    dialog = next(d for d in window.findChildren(FactoryDialog) if d.isVisible())
    assert dialog.target.text() == f"{path}:" and not canary.exists()  # nothing ran before the user says which
    dialog.target.setText(f"{path}:build")
    with qtbot.waitSignal(window.session_changed, timeout=30000):
        dialog.accept()
    assert window.session.recipe.model == f"{path}:build"


def test_export_of_a_dynamic_model_offers_no_onnx_and_shows_whole_notes(qtbot, window, seq_spec, tmp_path,
                                                                       open_and_wait, quantize_and_wait):
    """Defect 12: ONNX was tickable for dynamic models until Export was pressed; no way to open the folder."""
    session = open_and_wait(qtbot, window, seq_spec)
    window.settings_panel.method.setCurrentText("dynamic")
    qtbot.waitUntil(lambda: session.inventory.method == "dynamic" and not window.runner.busy, timeout=30000)
    quantize_and_wait(qtbot, window)
    dialog = window.open_export_dialog()
    assert not dialog.formats["onnx"].isEnabled() and not dialog.formats["onnx"].isChecked()
    assert "dynamic" in dialog.formats["onnx"].toolTip()
    assert not dialog.open_folder_button.isEnabled()
    dialog.folder.setText(str(tmp_path / "out"))
    dialog.export_button.click()
    qtbot.waitUntil(lambda: dialog.table.rowCount() == 2 and not window.runner.busy, timeout=60000)
    assert dialog.open_folder_button.isEnabled()
    assert dialog.table.wordWrap()
    assert (tmp_path / "out" / "report.json").exists() and session.result.exports  # adopted on the GUI thread
    dialog.close()


def test_error_dialogs_name_the_window_controls_not_cli_flags(qtbot, window, tmp_path):
    """Defect 8: the window's errors said "give --input-shape", "pass --trust" ..."""
    from PySide6.QtWidgets import QMessageBox

    path = tmp_path / "net.py"
    path.write_text("import torch.nn as nn\ndef build():\n    return nn.Sequential(nn.Linear(4, 3))\n")
    messages = []
    window.job_failed.connect(messages.append)
    with qtbot.waitSignal(window.session_changed, timeout=30000):
        window.open_spec(f"{path}:build")  # no input shape: the model does not declare one
    window.run_quantize()
    qtbot.waitUntil(lambda: bool(messages), timeout=30000)
    box = next(b for b in window.findChildren(QMessageBox, "errorDialog") if b.isVisible())
    assert "Input shape field" in box.text() and "--" not in box.text(), box.text()
    box.close()


def test_every_cli_flag_in_core_messages_has_window_words():
    import re
    from pathlib import Path

    from qtapp.ui.messages import for_window

    core = Path(__file__).resolve().parents[2] / "qtapp" / "core"
    flags = {m for f in core.rglob("*.py") for m in re.findall(r"--[a-z][a-z-]+", f.read_text())}
    assert {"--input-shape", "--float", "--method"} <= flags  # the core's files were read (a glob once found none)
    other_programs = {"--node"}  # Model Explorer's --node_data_paths, in the command the window starts for it
    left = {flag for flag in flags - other_programs if "--" in for_window(f"give {flag} 3")}
    assert left == set(), f"core messages use CLI flags the window has no words for: {sorted(left)}"


@pytest.mark.parametrize("size", [(1280, 720), (1480, 900)])
def test_nothing_is_squashed_or_cut_at_common_sizes(qtbot, window, open_and_wait, quantize_and_wait, size):
    """Defect 6: at 1280x720 the combos were squashed and the SQNR chart lost its right-hand bars."""
    from qtapp.ui.layer_model import COL_PARAMS

    window.resize(*size)
    open_and_wait(qtbot, window, "demo")
    window.settings_panel.engine.setCurrentText("x86")  # a longer engine note
    qtbot.waitUntil(lambda: not window.runner.busy, timeout=30000)
    quantize_and_wait(qtbot, window)
    qtbot.wait(50)
    for combo in (window.settings_panel.method, window.settings_panel.engine, window.settings_panel.observer):
        assert combo.height() >= combo.minimumSizeHint().height()
    chart = window.layer_plot
    assert chart.minimumSizeHint().width() <= chart.width()  # nothing drawn beyond the visible width
    assert chart.mapTo(window, chart.rect().topRight()).x() <= window.plots.mapTo(window, window.plots.rect().topRight()).x()
    if size == (1480, 900):  # the default size shows the tree's figures through the parameter counts, whole
        header = window.tree.header()
        assert header.sectionViewportPosition(COL_PARAMS) + header.sectionSize(COL_PARAMS) <= window.tree.viewport().width()
