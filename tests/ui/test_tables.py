"""Tables as tables (issue 19): the layer tree sorts by any column (numbers as numbers, a third click
restores the model's order), a row copies as text, and the point table saves as CSV."""

from __future__ import annotations

import csv

from PySide6.QtCore import QPoint, Qt
from PySide6.QtWidgets import QApplication, QFileDialog

from qtapp.ui.layer_model import COL_LOCAL, COL_NAME, NameRole


def _children(window, column=COL_NAME):
    """The names under the model's root row, in the order the tree shows them."""
    root = window.proxy.index(0, 0)
    return [window.proxy.index(r, 0, root).data(NameRole) for r in range(window.proxy.rowCount(root))]


def _click_header(qtbot, window, column):
    header = window.tree.header()
    x = header.sectionViewportPosition(column) + header.sectionSize(column) // 2
    qtbot.mouseClick(header.viewport(), Qt.MouseButton.LeftButton, pos=QPoint(x, header.height() // 2))


def test_the_tree_sorts_by_local_sqnr_as_numbers_and_back_to_model_order(qtbot, window, open_and_wait,
                                                                         quantize_and_wait):
    open_and_wait(qtbot, window, "demo")
    result = quantize_and_wait(qtbot, window)
    model_order = _children(window)
    _click_header(qtbot, window, COL_LOCAL)
    shown = _children(window)
    local = {p.name: p.local_sqnr_db for p in result.layers}
    # leaves with a figure, in the order shown: ascending, worst first; rows without one come after them
    figures = [local[n] for n in shown if local.get(n) is not None]
    assert figures == sorted(figures) and shown[0] == "gap"  # the demo's worst point
    assert shown != model_order
    _click_header(qtbot, window, COL_LOCAL)  # descending
    assert [local[n] for n in _children(window) if local.get(n) is not None][0] == max(figures)
    _click_header(qtbot, window, COL_LOCAL)  # third click: the model's own order again
    assert _children(window) == model_order


def test_a_row_copies_as_text_and_the_points_save_as_csv(qtbot, window, open_and_wait, quantize_and_wait,
                                                         tmp_path, monkeypatch):
    open_and_wait(qtbot, window, "demo")
    result = quantize_and_wait(qtbot, window)
    gap = {p.name: p for p in result.layers}["gap"]
    idx = window.proxy.mapFromSource(window.tree_model.index_of("gap", COL_NAME))
    menu = window.tree_menu(idx)
    next(a for a in menu.actions() if a.text() == "Copy row").trigger()
    copied = QApplication.clipboard().text().split("\t")
    assert copied[0] == "gap" and copied[COL_LOCAL] == f"{gap.local_sqnr_db:.1f}"

    path = tmp_path / "points.csv"
    monkeypatch.setattr(QFileDialog, "getSaveFileName", lambda *a, **k: (str(path), "CSV (*.csv)"))
    assert window.save_points_action.isEnabled()
    window.save_points_action.trigger()
    rows = list(csv.DictReader(path.open(encoding="utf-8")))
    assert [r["point"] for r in rows] == [p.name for p in result.layers]
    row = next(r for r in rows if r["point"] == "gap")
    assert float(row["local_sqnr_db"]) == gap.local_sqnr_db and row["runs_as"] == "int8"
    assert row["range"].startswith("calibrated range 0 to")
