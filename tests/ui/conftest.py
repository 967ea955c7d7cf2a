"""GUI test fixtures: offscreen Qt, isolated settings, a fresh main window that must not leak."""

import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import pytest

pytest.importorskip("PySide6")
pytest.importorskip("pyqtgraph")


@pytest.fixture
def settings_dir(tmp_path, monkeypatch):
    folder = tmp_path / "settings"
    folder.mkdir()
    monkeypatch.setenv("QTAPP_SETTINGS_DIR", str(folder))
    return folder


@pytest.fixture
def window(qtbot, settings_dir):
    from PySide6.QtWidgets import QApplication

    from qtapp.ui.app import make_settings
    from qtapp.ui.main_window import MainWindow

    before = set(QApplication.topLevelWidgets())
    win = MainWindow(make_settings())
    qtbot.addWidget(win)
    win.resize(1400, 860)
    win.show()
    yield win
    win.close()  # cancels a running job and stops the worker thread
    assert not win.runner.thread_running
    _delete_now(win)
    leaked = [w for w in QApplication.topLevelWidgets() if w not in before and w.isVisible() and w is not win
              and w.objectName() not in ("errorDialog", "trustDialog", "codeConsentDialog")]
    assert not leaked, f"windows left open: {leaked}"


@pytest.fixture
def delete_now():
    return _delete_now


@pytest.fixture
def open_and_wait():
    return _open_and_wait


@pytest.fixture
def quantize_and_wait():
    return _quantize_and_wait


def _open_and_wait(qtbot, window, spec, timeout=60000, **kwargs):
    with qtbot.waitSignal(window.session_changed, timeout=timeout):
        window.open_spec(spec, **kwargs)
    qtbot.waitUntil(lambda: not window.runner.busy, timeout=timeout)
    return window.session


def _quantize_and_wait(qtbot, window, timeout=120000):
    """Click the run button and wait for quantize and the measurement that follows."""
    from PySide6.QtCore import Qt

    with qtbot.waitSignal(window.result_applied, timeout=timeout):
        qtbot.mouseClick(window.run_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: not window.runner.busy and window.controller.waiting is None, timeout=timeout)
    return window.session.result


def _delete_now(widget):
    """Delete a closed window's C++ side now and collect its Python wrappers at a known point."""
    import gc

    from PySide6.QtCore import QCoreApplication, QEvent

    widget.deleteLater()
    QCoreApplication.sendPostedEvents(None, QEvent.Type.DeferredDelete)
    gc.collect()
