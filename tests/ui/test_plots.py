"""The result plots against real core data from the bundled demo: bars, clicks, histograms, export."""

import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import math

import numpy as np
import pytest

pytest.importorskip("PySide6")
pg = pytest.importorskip("pyqtgraph")

from PySide6.QtCore import QPointF, Qt  # noqa: E402
from PySide6.QtGui import QColor, QImage  # noqa: E402

from qtapp.core.analysis.compare import OutputMetrics, WeightData  # noqa: E402
from qtapp.core.analysis.point_result import PointResult  # noqa: E402
from qtapp.ui.plots import OutputErrorPlot, WeightHistogramPlot, short_name, sqnr_color  # noqa: E402
from qtapp.ui.point_plot import LayerErrorPlot  # noqa: E402


def point(name, op, quantized, accumulated, local=None):
    return PointResult(name, "module", op, name, op, quantized, "int8", accumulated, local, None)


@pytest.fixture(scope="module")
def runs():
    """Per-channel (minmax), the same with fc2 kept float, and per-tensor: three real demo runs."""
    from qtapp.core.base.progress import drive
    from qtapp.core.config.recipe import QuantRecipe
    from qtapp.core.run.session import QuantSession

    session = drive(QuantSession.open(QuantRecipe("demo", observer="minmax")))
    per_channel = drive(session.quantize())
    session.inventory.set_float("fc2")
    with_float = drive(session.quantize())
    per_tensor = drive(drive(QuantSession.open(QuantRecipe("demo", per_channel=False))).quantize())
    return {"per_channel": per_channel, "with_float": with_float, "per_tensor": per_tensor}


def layer(result, name):
    return next(item for item in result.layers if item.name == name)


def shown(qtbot, widget, size=(760, 460)):
    qtbot.addWidget(widget)
    widget.resize(*size)
    widget.show()
    qtbot.waitExposed(widget)
    return widget


# -- colour scale -----------------------------------------------------------------------------------
def test_sqnr_color_runs_red_amber_green():
    assert sqnr_color(5.0) == sqnr_color(15.0) == QColor("#d62728")
    assert sqnr_color(25.0) == QColor("#f0a30a")
    assert sqnr_color(35.0) == sqnr_color(60.0) == QColor("#2ca02c")
    assert sqnr_color(-math.inf) == QColor("#d62728")
    between = sqnr_color(20.0)
    assert QColor("#d62728").green() < between.green() < QColor("#f0a30a").green()
    assert sqnr_color(None) == sqnr_color(math.nan) and sqnr_color(None).saturation() == 0


def test_short_name_keeps_the_tail_that_fits():
    assert short_name("fc1") == "fc1"
    assert short_name("features.12.block.3.conv") == "…12.block.3.conv"
    assert len(short_name("a_very_long_module_name_without_dots")) == 18


# -- empty states -----------------------------------------------------------------------------------
def test_every_plot_starts_empty_and_says_what_to_do(qtbot):
    bars, hist, out = LayerErrorPlot(), WeightHistogramPlot(), OutputErrorPlot()
    for widget in (bars, hist, out):
        shown(qtbot, widget)
        assert widget.is_empty()
    assert bars.message() == "Run calibration to see the error at every quantization point"
    assert out.message() == "Run calibration to see output error"
    assert hist.message() == "Select a quantized layer with weights to see its histogram"
    assert bars.bar_names() == [] and bars.highlighted() is None
    assert hist.layer_name() is None and hist.range_lines() is None and hist.channel_count() == 0
    assert out.point_count() == 0
    hist.set_layer("block1.1", None)
    assert hist.is_empty() and hist.layer_name() == "block1.1"
    assert hist.message().startswith("block1.1 has no weights")


def test_plots_return_to_empty_when_data_goes_away(qtbot, runs):
    result = runs["per_channel"]
    bars, hist, out = shown(qtbot, LayerErrorPlot()), shown(qtbot, WeightHistogramPlot()), shown(qtbot, OutputErrorPlot())
    bars.set_results(result.layers)
    hist.set_layer("fc1", layer(result, "fc1").weight)
    out.set_metrics(result.output)
    assert not (bars.is_empty() or hist.is_empty() or out.is_empty())
    bars.set_results([])
    hist.set_layer(None, None)
    out.set_metrics(None)
    assert bars.is_empty() and hist.is_empty() and out.is_empty()
    assert bars.bar_names() == [] and out.point_count() == 0 and hist.channel_count() == 0


# -- per-layer bars ---------------------------------------------------------------------------------
def test_bars_follow_the_core_results_in_model_order(qtbot, runs):
    result = runs["with_float"]
    plot = shown(qtbot, LayerErrorPlot())
    plot.set_results(result.layers)
    assert not plot.is_empty() and plot.shown_metric() == "local"  # each point's own error first
    assert plot.bar_names() == [item.name for item in result.layers]
    assert plot.bar_heights() == pytest.approx([item.local_sqnr_db for item in result.layers])
    plot.metric_box.setCurrentIndex(1)  # the user picks "Accumulated"
    assert plot.shown_metric() == "accumulated" and "accumulated" in plot.tooltip_for("fc1").lower()
    assert plot.bar_heights() == pytest.approx([item.sqnr_db for item in result.layers])
    colors = dict(zip(plot.bar_names(), plot.bar_colors()))
    assert not layer(result, "fc2").quantized
    assert colors["fc2"].saturation() == 0  # kept in float: grey, whatever its SQNR
    for item in result.layers:
        if item.quantized:
            assert colors[item.name] == sqnr_color(item.sqnr_db)
    plot.set_metric("local")
    assert plot.metric_box.currentIndex() == 0 and plot.bar_heights()[0] == result.layers[0].local_sqnr_db


def test_layers_without_sqnr_keep_their_slot(qtbot):
    layers = [point("a", "Conv2d", True, 12.0), point("b", "ReLU", True, None), point("c", "Linear", True, 40.0)]
    plot = shown(qtbot, LayerErrorPlot())
    plot.set_metric("accumulated")
    plot.set_results(layers)
    assert plot.bar_names() == ["a", "b", "c"] and plot.bar_heights() == [12.0, None, 40.0]
    assert plot.bar_colors()[1] is None
    assert plot.tooltip_for("b").startswith("<b>b: no measurable error</b><br>")
    plot.highlight("b")
    assert plot.highlighted() == "b"


def test_clicking_a_bar_emits_its_layer_name(qtbot, runs):
    result = runs["per_channel"]
    plot = shown(qtbot, LayerErrorPlot())
    plot.set_results(result.layers)
    view = plot.findChild(pg.PlotWidget)
    for name in ("block2.0", "fc2"):
        where = view.mapFromScene(plot.bar_center(name))
        with qtbot.waitSignal(plot.layer_clicked, timeout=2000) as blocker:
            qtbot.mouseClick(view.viewport(), Qt.MouseButton.LeftButton, pos=where)
        assert blocker.args == [name]
    # between two bars, and on the axis below them: no layer
    vb = view.getPlotItem().vb
    gap = view.mapFromScene(vb.mapViewToScene(QPointF(1.5, 10.0)))
    below_axis = view.mapFromScene(vb.mapViewToScene(QPointF(1.0, 0.0))) + pg.QtCore.QPoint(0, 12)
    with qtbot.assertNotEmitted(plot.layer_clicked):
        qtbot.mouseClick(view.viewport(), Qt.MouseButton.LeftButton, pos=gap)
        qtbot.mouseClick(view.viewport(), Qt.MouseButton.LeftButton, pos=below_axis)
        qtbot.mouseClick(view.viewport(), Qt.MouseButton.RightButton, pos=view.mapFromScene(plot.bar_center("fc1")))
        qtbot.keyClick(view.viewport(), Qt.Key.Key_Escape)  # closes the context menu, if one opened


def test_highlight_outlines_one_bar_and_survives_new_results(qtbot, runs):
    result = runs["per_channel"]
    plot = shown(qtbot, LayerErrorPlot())
    plot.set_results(result.layers)
    plot.highlight("block3.0")
    assert plot.highlighted() == "block3.0"
    outlines = [item for item in plot.findChild(pg.PlotWidget).getPlotItem().items
                if isinstance(item, pg.BarGraphItem) and item.opts["x"] is not None and len(item.opts["x"]) == 1]
    assert len(outlines) == 1 and list(outlines[0].opts["x"]) == [plot.bar_names().index("block3.0")]
    plot.highlight("fc1")
    assert plot.highlighted() == "fc1"
    plot.set_results(runs["with_float"].layers)
    assert plot.highlighted() == "fc1"
    plot.highlight("no.such.layer")
    assert plot.highlighted() is None
    plot.highlight("fc2")
    plot.set_results([])
    assert plot.highlighted() is None


def test_tooltip_names_the_layer_and_its_sqnr(qtbot, runs):
    result = runs["with_float"]
    plot = shown(qtbot, LayerErrorPlot())
    plot.set_results(result.layers)
    plot.set_metric("accumulated")
    fc1, fc2 = layer(result, "fc1"), layer(result, "fc2")
    assert plot.tooltip_for("fc1").startswith(f"<b>fc1: {fc1.sqnr_db:.1f} dB</b>")
    assert plot.tooltip_for("fc2").startswith(f"<b>fc2: {fc2.sqnr_db:.1f} dB (kept in float)</b>")
    assert "accumulates" in plot.tooltip_for("fc2") and "15 dB" in plot.tooltip_for("fc2")


def test_tick_labels_thin_out_when_there_are_many_layers(qtbot):
    layers = [point(f"features.{i}.conv", "Conv2d", True, 20.0 + i % 20, 30.0) for i in range(150)]
    plot = shown(qtbot, LayerErrorPlot(), size=(700, 380))
    plot.set_results(layers)
    labelled = plot.labelled_ticks()
    assert 3 <= len(labelled) < 40
    assert all(text == short_name(layers[int(pos)].name) for pos, text in labelled)
    plot.resize(1400, 380)
    qtbot.waitUntil(lambda: len(plot.labelled_ticks()) > len(labelled))


# -- weight histogram -------------------------------------------------------------------------------
def test_per_channel_layer_shows_one_range_per_output_channel(qtbot, runs):
    block = layer(runs["per_channel"], "block2.0")
    weight = block.weight
    plot = shown(qtbot, WeightHistogramPlot(), size=(700, 560))
    plot.set_layer("block2.0", weight)
    assert not plot.is_empty() and plot.layer_name() == "block2.0"
    assert plot.channel_count() == weight.float_weight.shape[weight.axis] == len(weight.scales) == 64
    assert plot.range_lines() is None
    assert plot.curve_names() == ["float", "int8 dequantized"]
    hist = plot.findChild(pg.PlotWidget).getPlotItem()
    counts = [int(np.sum(item.getData()[1])) for item in hist.listDataItems()]
    assert counts == [weight.float_weight.size, weight.dequantized.size]
    assert "block2.0" in hist.titleLabel.text and "per_channel_affine" in hist.titleLabel.text


def test_per_tensor_layer_draws_the_representable_range(qtbot, runs):
    weight = layer(runs["per_tensor"], "fc1").weight
    assert weight.qscheme == "per_tensor_affine"
    plot = shown(qtbot, WeightHistogramPlot(), size=(700, 420))
    plot.set_layer("fc1", weight)
    scale, zp = float(weight.scales[0]), float(weight.zero_points[0])
    assert plot.range_lines() == pytest.approx((scale * (weight.qmin - zp), scale * (weight.qmax - zp)))
    assert plot.channel_count() == 0
    hist = plot.findChild(pg.PlotWidget).getPlotItem()
    lines = [item for item in hist.items if isinstance(item, pg.InfiniteLine)]
    assert sorted(line.value() for line in lines) == pytest.approx(sorted(plot.range_lines()))
    assert sorted(line.label.toPlainText().strip() for line in lines) == ["int8 max", "int8 min"]


def test_few_levels_are_drawn_as_a_grid(qtbot):
    rng = np.random.default_rng(0)
    fw = rng.normal(0, 0.3, 2000).astype(np.float32)
    scale, zp = 0.05, 25
    dq = ((np.clip(np.round(fw / scale) + zp, 0, 50) - zp) * scale).astype(np.float32)
    plot = shown(qtbot, WeightHistogramPlot())
    plot.set_layer("toy", WeightData(fw, dq, "per_tensor_affine", np.array([scale]), np.array([zp]), None, 0, 50))
    hist = plot.findChild(pg.PlotWidget).getPlotItem()
    grid = [item for item in hist.items if isinstance(item, pg.InfiniteLine) and getattr(item, "label", None) is None]
    levels = {round(line.value() / scale) + zp for line in grid}
    assert len(grid) == len(levels) and levels <= set(range(0, 51)) and len(levels) > 30


def test_layer_kept_in_float_shows_only_the_float_weights(qtbot, runs):
    weight = layer(runs["with_float"], "fc2").weight
    assert weight.dequantized is None
    plot = shown(qtbot, WeightHistogramPlot())
    plot.set_layer("fc2", weight)
    assert not plot.is_empty()
    assert plot.curve_names() == ["float"]
    assert plot.range_lines() is None and plot.channel_count() == 0
    hist = plot.findChild(pg.PlotWidget).getPlotItem()
    assert "kept in float" in hist.titleLabel.text


def test_float16_weights_are_labelled_float16(qtbot):
    fw = np.linspace(-1, 1, 500, dtype=np.float32)
    plot = shown(qtbot, WeightHistogramPlot())
    plot.set_layer("half", WeightData(fw, fw.astype(np.float16).astype(np.float32), qscheme="float16"))
    assert plot.curve_names() == ["float", "float16"]
    assert plot.range_lines() is None and plot.channel_count() == 0


# -- output error -----------------------------------------------------------------------------------
def test_output_plot_shows_every_sampled_value(qtbot, runs):
    metrics = runs["per_channel"].output
    plot = shown(qtbot, OutputErrorPlot(), size=(900, 400))
    plot.set_metrics(metrics)
    assert not plot.is_empty()
    assert plot.point_count() == len(metrics.ref_values) == len(metrics.q_values) > 0
    scatter = [item for item in plot.findChild(pg.PlotWidget).getPlotItem().items
               if isinstance(item, pg.ScatterPlotItem)]
    x, y = scatter[0].getData()
    assert np.allclose(x, metrics.ref_values) and np.allclose(y, metrics.q_values)


def test_output_plot_without_sampled_values_is_empty(qtbot):
    plot = shown(qtbot, OutputErrorPlot())
    plot.set_metrics(OutputMetrics(30.0, 0.99, 0.1, None, None, None, 8))
    assert plot.is_empty() and plot.point_count() == 0


# -- export -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["layers", "histogram", "histogram_per_tensor", "output", "empty"])
def test_export_png_writes_an_image_of_the_widget(qtbot, runs, kind, tmp_path):
    result = runs["with_float"]
    if kind == "layers":
        plot = LayerErrorPlot()
        plot.set_results(result.layers)
        plot.highlight("block2.0")
    elif kind.startswith("histogram"):
        source = runs["per_tensor"] if kind.endswith("per_tensor") else result
        plot = WeightHistogramPlot()
        plot.set_layer("block2.0", layer(source, "block2.0").weight)
    elif kind == "output":
        plot = OutputErrorPlot()
        plot.set_metrics(result.output)
    else:
        plot = WeightHistogramPlot()
    shown(qtbot, plot, size=(760, 560 if kind == "histogram" else 420))
    path = tmp_path / f"{kind}.png"
    plot.export_png(str(path))
    image = QImage(str(path))
    assert not image.isNull() and path.stat().st_size > 1000
    assert image.size() == plot.size() * plot.devicePixelRatioF()


def test_export_png_works_before_the_widget_is_shown(qtbot, runs, tmp_path):
    plot = LayerErrorPlot()
    qtbot.addWidget(plot)
    plot.resize(500, 300)
    plot.set_results(runs["per_channel"].layers)
    plot.export_png(str(tmp_path / "hidden.png"))
    assert QImage(str(tmp_path / "hidden.png")).width() == 500


def test_export_png_to_an_unwritable_path_raises(qtbot, tmp_path):
    plot = shown(qtbot, OutputErrorPlot())
    with pytest.raises(OSError, match="could not write"):
        plot.export_png(str(tmp_path / "missing-dir" / "x.png"))


def test_error_histogram_keeps_outliers_off_scale_and_says_so(qtbot):
    import numpy as np

    from qtapp.core.analysis.compare import OutputMetrics
    from qtapp.ui.plots import OutputErrorPlot

    rng = np.random.default_rng(0)
    ref = rng.normal(size=4000)
    q = ref + rng.normal(scale=0.01, size=4000)
    q[:3] += 50.0  # three saturated outputs
    plot = OutputErrorPlot()
    qtbot.addWidget(plot)
    plot.set_metrics(OutputMetrics(30.0, 0.99, 50.0, None, None, None, 4000, 1.0, ref, q))
    lo, hi, outside = plot.error_range
    assert hi < 1.0 and lo > -1.0  # the binned range follows the bulk, not the 50.0 outliers
    assert outside >= 3
    assert "off-scale" in plot.error_title()


def test_the_window_and_report_html_colour_an_sqnr_alike():
    from qtapp.core.report.render import sqnr_colour

    for db in (-3.0, 15.0, 18.0, 20.0, 24.9, 25.0, 30.0, 35.0, 50.0, None):
        assert sqnr_color(db) == QColor(sqnr_colour(db)), db
