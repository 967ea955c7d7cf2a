"""The verdict above the summary: what the run is worth, and a Repair button that runs tune with the
verdict's target and budget, whose result is then judged again."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import Qt

KINDS_SPEC = f"{Path(__file__).resolve().parents[1] / 'fixtures' / 'point_kinds.py'}:build"


def test_a_broken_run_shows_its_verdict_and_repair_tunes_it_to_usable(qtbot, window, open_and_wait, quantize_and_wait):
    open_and_wait(qtbot, window, KINDS_SPEC, kwargs={"kind": "must_stay_float"})
    quantize_and_wait(qtbot, window)
    banner = window.verdict_banner
    assert banner.isVisible() and banner.verdict.level == "broken"  # 5.4 dB: fc2 rounds its weights to zero
    assert "BROKEN" in banner.label.text() and "Next:" in banner.label.text()
    assert banner.repair_button.isVisible() and banner.repair_button.isEnabled()
    with qtbot.waitSignal(window.result_applied, timeout=120000):
        qtbot.mouseClick(banner.repair_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: not window.runner.busy, timeout=60000)
    assert window.tune_panel.target_edit.text() == "sqnr>=20" and window.tune_panel.budget_edit.text() == "float<=1"
    assert window.session.result.tune is not None and "fc2" in window.session.result.float_layers
    assert window.session.result.output.sqnr_db >= 20
    # the output is right now; this toy model's file (14 KB, mostly TorchScript code) is no smaller in int8
    # than in float, and the verdict says so rather than calling it usable
    assert banner.verdict.level == "degraded" and "does not compress the model" in banner.verdict.reason
    assert "output SQNR" in banner.verdict.reason and "DEGRADED" in banner.label.text()


def test_a_usable_run_has_no_repair_button(qtbot, window, open_and_wait, quantize_and_wait):
    open_and_wait(qtbot, window, "demo")
    quantize_and_wait(qtbot, window)
    banner = window.verdict_banner
    assert banner.verdict.level == "usable" and banner.repair_button.isHidden()
    assert "top-1" in banner.label.text()


def test_the_per_channel_box_is_live_for_dynamic_int8_and_greyed_for_float16(qtbot, window, open_and_wait):
    open_and_wait(qtbot, window, "demo")
    panel = window.settings_panel
    panel.method.setCurrentText("dynamic")
    qtbot.waitUntil(lambda: not window.runner.busy, timeout=60000)  # the panel waits for the method change
    panel.dtype.setCurrentText("qint8")
    qtbot.waitUntil(lambda: not window.runner.busy, timeout=60000)
    assert panel.per_channel.isEnabled()  # dynamic int8 weights honour it
    panel.dtype.setCurrentText("float16")
    qtbot.waitUntil(lambda: not window.runner.busy, timeout=60000)
    assert not panel.per_channel.isEnabled() and panel.dtype.isEnabled()
