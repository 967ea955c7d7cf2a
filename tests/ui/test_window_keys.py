"""Keyboard shortcuts: none may take a key that text editing uses where the user types (issue 19, 9)."""

from __future__ import annotations

from PySide6.QtCore import Qt
from PySide6.QtGui import QAction, QKeySequence

# Keys Qt's line edits and spin boxes act on themselves under the X11 keyboard scheme (KDE, GNOME and
# other Linux desktops; Qt's qplatformtheme.cpp key table) and on every platform: Ctrl+U clears the line,
# Ctrl+K cuts to its end, Ctrl+E moves to its end, and the clipboard and undo keys. A window shortcut on
# one of them either never fires while a field has focus, or fires and the field loses the edit.
EDITING_KEYS = {"Ctrl+A", "Ctrl+C", "Ctrl+V", "Ctrl+X", "Ctrl+Z", "Ctrl+Y", "Ctrl+Shift+Z", "Ctrl+E", "Ctrl+K",
                "Ctrl+U", "Ctrl+Insert", "Shift+Insert", "Shift+Delete", "Ctrl+Backspace", "Ctrl+Delete",
                "Ctrl+Left", "Ctrl+Right", "Home", "End"}


# Edit > Undo and Redo keep the standard keys on purpose: a field with focus takes them first and undoes its
# own typing (tests/ui/test_runs_view.py checks it), as in every editor; elsewhere they undo an edit.
UNDO_KEYS = {"Ctrl+Z", "Ctrl+Y", "Ctrl+Shift+Z"}


def test_no_window_shortcut_takes_a_text_editing_key(window):
    taken = {}
    for action in window.findChildren(QAction):
        for key in action.shortcuts():
            text = key.toString(QKeySequence.SequenceFormat.PortableText)
            if text in EDITING_KEYS and not (action in (window.undo_action, window.redo_action) and text in UNDO_KEYS):
                taken[action.text()] = text
    assert taken == {}


def test_the_tune_shortcut_typed_in_the_target_field_runs_tune_and_keeps_the_text(qtbot, window, open_and_wait):
    open_and_wait(qtbot, window, "demo")
    field = window.tune_panel.target_edit
    field.setFocus()
    field.setText("sqnr>=99")
    qtbot.waitUntil(field.hasFocus, timeout=5000)
    key = window.tune_action.shortcut()
    combo = key[0]
    with qtbot.waitSignal(window.runner.busy_changed, timeout=10000):
        qtbot.keyClick(field, combo.key(), combo.keyboardModifiers())
    assert field.text() == "sqnr>=99"
    assert window.runner.busy  # the tune started
    window.cancel_job()
    qtbot.waitUntil(lambda: not window.runner.busy, timeout=60000)
