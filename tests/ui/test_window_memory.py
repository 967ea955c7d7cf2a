"""Issue 19, 13: a window that ran Sensitivity holds no model the job tried (resnet18 reached 6.4 GB:
torch's FX memo kept every model prepare_fx and convert_fx saw). Driven through the window's own button,
counted as every nn.Module alive in the process; a tune's conversions go through the same Scorer, and
tests/core/run/test_memory.py counts them."""

from __future__ import annotations

import gc

import torch
from PySide6.QtCore import Qt


def _live_modules() -> int:
    gc.collect()
    return sum(issubclass(type(o), torch.nn.Module) for o in gc.get_objects())


def _idle(qtbot, window, timeout=180000):
    qtbot.waitUntil(lambda: not window.runner.busy and window.controller.waiting is None, timeout=timeout)


def test_sensitivity_in_the_window_keeps_no_model_it_tried(qtbot, window, open_and_wait,
                                                                     quantize_and_wait):
    open_and_wait(qtbot, window, "demo")
    quantize_and_wait(qtbot, window)
    after_quantize = _live_modules()
    with qtbot.waitSignal(window.result_applied, timeout=180000):
        qtbot.mouseClick(window.tune_panel.sensitivity_button, Qt.MouseButton.LeftButton)
    _idle(qtbot, window)
    assert window.session.result.sensitivity.conversions >= 8
    # one model more at most: the sensitivity result's own, beside the measured file's model it keeps (the
    # demo is 17 modules; a model kept per conversion would be 8 x 17 more)
    per_model = sum(1 for _ in window.session.loaded.module.modules())
    assert _live_modules() <= after_quantize + per_model
