"""Guard against a PySide6 build that leaks references to None/True (6.12.0 on Python < 3.12).

Each leaked reference is one decrement of a shared singleton; after enough GUI calls the count
reaches zero and the interpreter aborts ("Fatal Python error: none_dealloc").
"""

import sys

from PySide6.QtCore import QObject, Signal
from PySide6.QtWidgets import QLabel


class _Emitter(QObject):
    fired = Signal()


def test_void_calls_and_emits_keep_singleton_refcounts(qtbot):
    label = QLabel()
    qtbot.addWidget(label)
    emitter = _Emitter()
    emitter.fired.connect(lambda: None)
    label.setText("warm-up")
    emitter.fired.emit()
    none_before, true_before = sys.getrefcount(None), sys.getrefcount(True)
    for i in range(200):
        label.setText(str(i))
        emitter.fired.emit()
    # Immortal singletons (Python >= 3.12) report a constant huge count; mortal ones must not drop.
    assert sys.getrefcount(None) >= none_before - 5
    assert sys.getrefcount(True) >= true_before - 5
