"""View > Show on graph: the current result's graph.pt2 and node data are written by a job, then Model Explorer
is started as a process; without it, a dialog says how to get it and where the files are."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

from PySide6.QtWidgets import QApplication, QMessageBox

from qtapp.core.base.scratch import process_alive
from qtapp.ui import graph_actions

FILES = ["graph.pt2", "node_data.json", "node_data_accumulated.json", "node_data_diagnosis.json"]


def _graph_dialog() -> QMessageBox | None:
    return next((w for w in QApplication.topLevelWidgets() if w.objectName() == "graphDialog" and w.isVisible()), None)


def test_without_model_explorer_the_dialog_says_how_to_get_it_and_where_the_files_are(
        qtbot, window, open_and_wait, quantize_and_wait, monkeypatch):
    open_and_wait(qtbot, window, "demo")
    assert not window.show_graph_action.isEnabled()  # nothing to show before a run
    result = quantize_and_wait(qtbot, window)
    monkeypatch.setattr(graph_actions, "model_explorer_command", lambda files: None)
    assert window.show_graph_action.isEnabled()
    window.show_graph_action.trigger()
    qtbot.waitUntil(lambda: _graph_dialog() is not None, timeout=60000)
    files = window.graph_files
    try:
        assert sorted(p.name for p in files.folder.iterdir()) == sorted(FILES)
        box = _graph_dialog()
        assert box.windowTitle() == "Model Explorer is not installed"
        assert 'pip install "qtapp[graph]"' in box.text() and "pip install ai-edge-model-explorer" in box.text()
        assert str(files.folder) in box.text() and "model-explorer " in box.text()
        local = json.loads((files.folder / "node_data.json").read_text())["graph"]["results"]
        worst = min(result.layers, key=lambda p: p.local_sqnr_db)
        assert any(e["point"] == worst.name and e["bgColor"] == "#d62728" for e in local.values())
        box.close()
    finally:
        shutil.rmtree(files.folder, ignore_errors=True)  # the action's own temporary folder


def test_with_model_explorer_it_is_started_on_the_files_without_blocking(
        qtbot, window, open_and_wait, quantize_and_wait, monkeypatch, tmp_path):
    open_and_wait(qtbot, window, "demo")
    quantize_and_wait(qtbot, window)
    # A stand-in Model Explorer that writes down its arguments (in its working folder) and ends.
    stand_in = "import pathlib, sys; pathlib.Path('args.json').write_text(__import__('json').dumps(sys.argv[1:]))"
    monkeypatch.setattr(graph_actions, "model_explorer_command",
                        lambda files: [sys.executable, "-c", stand_in, *files.model_explorer_args()])
    folder = tmp_path / "graph"
    window.show_on_graph(folder)
    qtbot.waitUntil(lambda: (folder / "args.json").exists(), timeout=60000)
    args = json.loads((folder / "args.json").read_text())
    assert args[0] == str(folder / "graph.pt2")
    paths = args[1].removeprefix("--node_data_paths=").split(",")
    assert [Path(p).name for p in paths] == ["node_data_accumulated.json", "node_data_diagnosis.json", "node_data.json"]
    assert all(Path(p).exists() for p in paths)
    qtbot.waitUntil(lambda: window.model_explorer is None, timeout=30000)  # it ended, and was let go
    assert _graph_dialog() is None and "Model Explorer is starting" in window.statusBar().currentMessage()

    # A Model Explorer still serving its page when the window closes is stopped with it.
    serving = "import pathlib, time; pathlib.Path('serving').write_text('yes'); time.sleep(120)"
    monkeypatch.setattr(graph_actions, "model_explorer_command", lambda files: [sys.executable, "-c", serving])
    window.show_on_graph(tmp_path / "again")
    qtbot.waitUntil(lambda: (tmp_path / "again" / "serving").exists(), timeout=60000)
    pid = window.model_explorer.processId()
    window.close()
    assert window.model_explorer is None
    assert not process_alive(pid)
