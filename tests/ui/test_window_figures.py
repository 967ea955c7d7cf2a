"""What the window says about a run is what the run did: the summary names the dtype the run made and
says why a float16 file is no smaller, a greyed setting shows the value that applies (the recipe keeps
its own), and the activation range tab words every point's ranges alike: the calibrated range as
calibrated, the int8 grid's representable range named as such, levels counted against the grid."""

from __future__ import annotations

import pyqtgraph as pg
import pytest

from qtapp.core.report.render import report_dict

pytestmark = pytest.mark.filterwarnings(r"ignore:.*torch\.jit\..*deprecated:FutureWarning")


def wait_idle(qtbot, window, timeout=60000):
    qtbot.waitUntil(lambda: not window.runner.busy and window.controller.waiting is None, timeout=timeout)


def choose(qtbot, window, combo, text, done):
    combo.setCurrentText(text)
    qtbot.waitUntil(done, timeout=30000)
    wait_idle(qtbot, window)


def test_a_dynamic_float16_run_is_named_float16_and_says_why_its_file_is_no_smaller(
        qtbot, window, open_and_wait, quantize_and_wait):
    session = open_and_wait(qtbot, window, "demo")
    panel = window.settings_panel
    choose(qtbot, window, panel.method, "dynamic", lambda: session.recipe.method == "dynamic")
    # dynamic int8 takes the per-channel setting (torch.ao's per-channel dynamic qconfig): live and ticked
    assert panel.per_channel.isEnabled() and panel.per_channel.isChecked()
    choose(qtbot, window, panel.dtype, "float16", lambda: session.recipe.dtype == "float16")
    # float16 weights have no scales: greyed, the box shows none, and the recipe keeps its own value
    assert not panel.per_channel.isEnabled() and not panel.per_channel.isChecked()
    assert session.recipe.per_channel
    result = quantize_and_wait(qtbot, window)
    assert {p.weight.qscheme for p in result.layers if p.quantized and p.weight is not None} == {"float16"}
    assert result.size_quantized >= 0.95 * result.size_float  # the file is no smaller
    text = window.summary.text()
    assert "<th align=right>float16</th>" in text and "<th align=right>int8</th>" not in text
    assert window.summary.figures["dtype"] == "float16"
    assert ("why the file is no smaller: float16 applies only to the layers dynamic quantization converts "
            "(fc1, fc2), and the TorchScript file stores even their weights as float32") in text
    assert any(n.startswith("why the file is no smaller") for n in report_dict(result)["notes"])  # report.json too

    choose(qtbot, window, panel.dtype, "qint8", lambda: session.recipe.dtype == "qint8")
    assert panel.per_channel.isEnabled() and panel.per_channel.isChecked()  # the recipe's value, shown again
    result = quantize_and_wait(qtbot, window)
    fc1 = {p.name: p for p in result.layers}["fc1"]
    assert fc1.weight.qscheme == "per_channel_affine" and len(fc1.weight.scales) == 512  # and honoured
    text = window.summary.text()
    assert "<th align=right>int8</th>" in text and "why the file is no smaller" not in text


def test_greyed_settings_show_the_value_that_applies_and_the_recipe_keeps_its_own(qtbot, window, open_and_wait):
    session = open_and_wait(qtbot, window, "demo")
    panel = window.settings_panel
    assert session.recipe.equalize_depthwise and panel.equalize_depthwise.isChecked()
    choose(qtbot, window, panel.method, "dynamic", lambda: session.recipe.method == "dynamic")
    # dynamic quantization calibrates nothing, so evens nothing out and has no observer; it is torch.ao's or
    # (with Backend torchao) torchao's low-bit weights: the backend stays live
    assert not panel.equalize_depthwise.isEnabled() and not panel.equalize_depthwise.isChecked()
    assert not panel.observer.isEnabled() and panel.observer.currentText() == ""
    assert not panel.static_mode.isEnabled() and panel.static_mode.currentText() == ""
    assert panel.backend.isEnabled() and panel.backend.currentText() == "torch.ao"
    choose(qtbot, window, panel.dtype, "float16", lambda: session.recipe.dtype == "float16")
    choose(qtbot, window, panel.method, "qat", lambda: session.recipe.method == "qat")
    # QAT makes int8 whatever the dynamic dtype the window keeps, and its ranges are its fake quantizers'
    # moving averages whatever the observer chosen for static quantization
    assert session.recipe.dtype == "float16" and session.recipe.observer == "histogram"
    assert not panel.dtype.isEnabled() and panel.dtype.currentText() == "qint8"
    assert not panel.observer.isEnabled() and panel.observer.currentText() == "moving-average"
    assert not panel.static_mode.isEnabled() and panel.static_mode.currentText() == "fx"
    assert panel.per_channel.isEnabled() and panel.per_channel.isChecked()
    assert panel.equalize_depthwise.isEnabled() and panel.equalize_depthwise.isChecked()
    choose(qtbot, window, panel.method, "static", lambda: session.recipe.method == "static")
    assert panel.observer.isEnabled() and panel.observer.currentText() == "histogram"
    assert panel.static_mode.isEnabled() and panel.static_mode.currentText() == "auto"
    assert not panel.dtype.isEnabled() and panel.dtype.currentText() == "qint8"
    choose(qtbot, window, panel.method, "dynamic", lambda: session.recipe.method == "dynamic")
    assert panel.dtype.isEnabled() and panel.dtype.currentText() == "float16"  # the recipe's, live again


def test_the_range_tab_words_every_points_ranges_alike(qtbot, window, open_and_wait, quantize_and_wait):
    """gap read "calibrated range 0 to 9.913 ... 84 of 128 levels" (9.913: the int8 grid's top, twice the
    calibrated one; its values end near 3.6), block3.0 "129 of 256 levels (128 calibrated)"."""
    open_and_wait(qtbot, window, "demo")
    result = quantize_and_wait(qtbot, window)
    assert "<th align=right>int8</th>" in window.summary.text()
    points = {p.name: p for p in result.layers}
    plot = window.range_plot
    for name in ("gap", "block3.0", "input:x", "fc2"):
        window.select_layer(name)
        r = points[name].range
        top = r.scale * (r.qmin + r.levels_total - 1 - r.zero_point)  # the calibrated range: 128 levels on fbgemm
        bottom = r.scale * (r.qmin - r.zero_point)
        saw = "" if (f"{r.observed_min:.4g}", f"{r.observed_max:.4g}") == (f"{bottom:.4g}", f"{top:.4g}") else \
            f" (its observer saw {r.observed_min:.4g} to {r.observed_max:.4g})"
        first, second = plot.title_text().split("\n")
        assert first == (f"{name}: calibrated range {bottom:.4g} to {top:.4g}{saw}: 128 levels in steps of "
                         f"{r.scale:.3g}; the int8 grid represents {r.lo:.4g} to {r.hi:.4g} (256 levels)")
        used = f"{r.levels_used} of the int8 grid's 256 levels used"
        assert f"from {r.data_min:.4g} to {r.data_max:.4g}: {used}" in second
        assert plot.range_lines() == pytest.approx((r.lo, r.hi))
        assert plot.calibrated_lines() == pytest.approx((bottom, top))
        item = plot.findChild(pg.PlotWidget).getPlotItem()
        labels = {line.label.toPlainText().strip(): line.value() for line in item.items
                  if isinstance(line, pg.InfiniteLine) and getattr(line, "label", None) is not None}
        assert labels == pytest.approx({"int8 grid min": r.lo, "int8 grid max": r.hi, "calibrated max": top})
    gap = points["gap"].range
    gap_top = gap.scale * (gap.levels_total - 1 - gap.zero_point)
    assert gap.data_max < gap_top < gap.observed_max < gap.hi  # what the first line now keeps apart
