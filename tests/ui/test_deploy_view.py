"""The window's deployment path: switch to the PT2E backend, run, export a .pte and an ONNX Runtime
.onnx, and read each file's SQNR and latency in the export dialog's table."""

import pytest

pytest.importorskip("executorch")

from qtapp.ui.dialogs import COLUMNS  # noqa: E402


def test_pt2e_backend_run_and_export_table(qtbot, window, tmp_path, open_and_wait, quantize_and_wait):
    session = open_and_wait(qtbot, window, "demo")
    panel = window.settings_panel
    panel.backend.setCurrentText("pt2e")
    qtbot.waitUntil(lambda: session.recipe.backend == "pt2e" and not window.runner.busy, timeout=30000)
    assert not panel.observer.isEnabled() and not panel.engine.isEnabled() and "XNNPACK" in panel.engine_note.text()
    result = quantize_and_wait(qtbot, window)
    assert result.mode == "pt2e" and result.output.sqnr_db > 30
    dialog = window.open_export_dialog()
    # TorchScript of a PT2E graph is refused, with the reason on the box; the .pte is offered and ticked
    assert not dialog.formats["pt"].isEnabled() and "reference graph" in dialog.formats["pt"].toolTip()
    assert dialog.formats["pte"].isEnabled() and dialog.formats["pte"].isChecked()
    dialog.formats["onnx"].setChecked(True)
    dialog.folder.setText(str(tmp_path / "out"))
    dialog.export_button.click()
    qtbot.waitUntil(lambda: dialog.table.rowCount() == 2, timeout=120000)
    qtbot.waitUntil(lambda: not window.runner.busy, timeout=60000)
    col = {name: i for i, name in enumerate(COLUMNS)}
    rows = {dialog.table.item(r, 0).text(): r for r in range(2)}
    assert set(rows) == {"onnx", "pte"}
    for fmt, row in rows.items():
        assert dialog.table.item(row, col["Verified"]).text() == "yes"
        assert float(dialog.table.item(row, col["SQNR vs float"]).text().split()[0]) > 30
        assert float(dialog.table.item(row, col["Int8 ms"]).text()) > 0
        assert (tmp_path / "out" / f"model.{fmt}").stat().st_size > 0
    assert "onnxruntime" in dialog.table.item(rows["onnx"], col["Quantized by"]).text()
    # the summary beside the plots gains a row per timed file, and names what it sized
    summary = window.summary.text()
    assert "model.pte (the ExecuTorch runtime)" in summary and "model.onnx (ONNX Runtime)" in summary
    assert "Size (ExecuTorch .pte)" in summary
    dialog.close()
    # back to torch.ao: TorchScript is offered again
    panel.backend.setCurrentText("torch.ao")
    qtbot.waitUntil(lambda: session.recipe.backend == "torch.ao" and not window.runner.busy, timeout=30000)
    quantize_and_wait(qtbot, window)
    dialog = window.open_export_dialog()
    assert dialog.formats["pt"].isEnabled() and dialog.formats["pt"].isChecked()
    dialog.close()


def test_the_export_dialog_has_a_box_for_every_format_and_says_why_one_is_refused(qtbot):
    from qtapp.core.deploy.export import FORMATS
    from qtapp.ui.dialogs import ExportDialog

    dialog = ExportDialog(None, folder="/tmp/out", unavailable={"pt2": "--backend torch.ao cannot write pt2"})
    qtbot.addWidget(dialog)
    assert list(dialog.formats) == list(FORMATS) and "pt2" in FORMATS
    box = dialog.formats["pt2"]
    assert box.text() == "torch.export (.pt2)" and not box.isEnabled() and not box.isChecked()
    assert box.toolTip() == "--backend torch.ao cannot write pt2"
    assert dialog.chosen_formats() == ["pt", "ptl"]
