"""One verdict per run, judged on the task metric where one is known, else on the output; a collapsed
classifier is always broken; a file no smaller and no faster than float is not compression."""

from __future__ import annotations

from dataclasses import replace

import pytest

from qtapp.core.analysis.compare import OutputMetrics
from qtapp.core.analysis.metrics import MetricValue
from qtapp.core.config.recipe import QuantRecipe
from qtapp.core.deploy.measure import Latency
from qtapp.core.report.results import RunResult
from qtapp.core.report.verdict import judge


def result(method="static", dtype="qint8", **output) -> RunResult:
    o = OutputMetrics(**{"sqnr_db": 30.0, "cosine": 0.999, "max_abs_error": 0.1, "top1_agreement": None,
                         "accuracy_float": None, "accuracy_quantized": None, "samples": 100, "float_rms": 1.0,
                         **output})
    recipe = QuantRecipe(model="net.py:build", method=method, dtype=dtype)
    return RunResult(recipe=recipe, model="net.py:build", mode="fx", input="1x8", calibration=None, evaluation=None,
                     output=o)


@pytest.mark.parametrize("sqnr, level", [(35.0, "usable"), (20.0, "usable"), (15.0, "degraded"), (8.6, "broken")])
def test_without_a_task_metric_the_output_sqnr_decides(sqnr, level):
    v = judge(result(sqnr_db=sqnr))
    assert v.level == level and "no task metric" in v.reason
    assert (v.next is None) == (level == "usable")
    if level != "usable":
        assert v.target == "sqnr>=20" and "qtapp-cli tune net.py:build --target sqnr>=20" in v.next


@pytest.mark.parametrize("acc_q, level", [(0.995, "usable"), (0.96, "degraded"), (0.58, "broken")])
def test_accuracy_decides_over_the_sqnr(acc_q, level):
    v = judge(result(sqnr_db=40.0, accuracy_float=0.998, accuracy_quantized=acc_q, top1_agreement=acc_q))
    assert v.level == level and "top-1 99.8%" in v.reason
    if level != "usable":
        assert v.target == "drop<=1"


def test_a_users_metric_is_judged_on_its_share_of_float():
    m = MetricValue("metric.py:cents", 0.90, 0.80)  # 11% of float lost
    v = judge(result(sqnr_db=40.0, metric=m))
    assert v.level == "broken" and "metric.py:cents" in v.reason and v.target == "drop<=0.009"
    assert judge(result(sqnr_db=5.0, metric=MetricValue("metric.py:cents", 0.90, 0.897))).level == "usable"


def test_a_classifier_answering_one_class_for_everything_is_broken_whatever_its_sqnr():
    v = judge(result(sqnr_db=25.0, top1_agreement=0.5, classes_float=2, classes_quantized=1))
    assert v.level == "broken" and "same class for every sample" in v.reason


def test_a_file_no_smaller_and_no_faster_than_float_is_not_compression():
    r = result(method="dynamic", dtype="float16", sqnr_db=45.0)
    r = replace(r, size_float=5_703_261, size_quantized=5_717_955, latency=Latency(1.0, 1.6, 50, 2))
    v = judge(r)
    assert v.level == "degraded" and "does not compress" in v.reason and "--dtype qint8" in v.next
    smaller = replace(r, size_quantized=1_464_167)
    assert judge(smaller).level == "usable"


def test_the_summary_ends_with_the_verdict_and_the_report_carries_it(demo_quantized):
    from qtapp.core.report.render import report_dict, summary_text

    res = demo_quantized.result
    assert summary_text(res).splitlines()[-1].startswith("verdict: USABLE: top-1 ")
    assert report_dict(res)["verdict"] == {"level": "usable", "reason": judge(res).reason, "next": None,
                                           "repair_target": None, "repair_budget": None}


def test_a_static_run_that_left_an_lstm_float_suggests_dynamic_quantization():
    import torch.nn as nn

    class Encoder(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lstm, self.linear = nn.LSTM(40, 256, 3), nn.Linear(256, 256)

    r = replace(result(sqnr_db=30.0), size_float=5_732_859, size_quantized=5_544_611,
                latency=Latency(27.2, 30.5, 12, 1), quantized_model=Encoder())
    v = judge(r)
    assert v.level == "degraded" and "does not compress" in v.reason
    assert v.next.startswith("qtapp-cli quantize net.py:build --method dynamic") and "lstm" in v.next
    assert "qtapp-cli tune" not in v.next  # keeping more layers float cannot make this file smaller
    no_rnn = replace(r, quantized_model=nn.Sequential(nn.Linear(4, 4)))
    assert "qtapp-cli tune" in judge(no_rnn).next
