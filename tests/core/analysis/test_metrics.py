"""Metrics that mean something: accuracy only for a classifier scored on its own class ids, retrieval
and cosine for embeddings, the user's function, and the targets a search reads."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn as nn

from qtapp.core.analysis.compare import compare_outputs
from qtapp.core.analysis.metrics import MetricValue, Target, compute, load_metric
from qtapp.core.base.errors import QtappError, UsageError
from qtapp.core.base.inputs import InputSpec
from qtapp.core.base.progress import drive
from qtapp.core.config.metric_names import check_metric_name
from qtapp.core.data.open import open_source

SPEC = InputSpec(((1, 32),))


class Noisy(nn.Module):
    """The wrapped model's output plus fixed noise of `level` times its RMS: a 'quantized' model."""

    def __init__(self, model, level):
        super().__init__()
        self.model, self.level = model, level

    def forward(self, x):
        out = self.model(x)
        g = torch.Generator().manual_seed(int(out.shape[0]))
        return out + self.level * out.pow(2).mean().sqrt() * torch.randn(out.shape, generator=g)


def data(tmp_path, y):
    x = torch.randn(len(y), 32, generator=torch.Generator().manual_seed(1)).numpy()
    path = tmp_path / "d.npz"
    np.savez(path, x=x, y=np.asarray(y, dtype=np.int64))
    return open_source(str(path), SPEC, 16, 100)


def test_an_embedding_scored_on_unrelated_labels_gets_no_accuracy_and_says_why(tmp_path):
    torch.manual_seed(0)
    embed = nn.Linear(32, 16).eval()  # 16 outputs, labels 0..15 that are not its classes
    source = data(tmp_path, torch.randint(0, 16, (400,)))
    m = drive(compare_outputs(embed, Noisy(embed, 0.05), source))
    assert m.accuracy_float is None and m.accuracy_quantized is None
    assert "at chance level for 16 outputs" in m.accuracy_withheld
    assert m.top1_agreement is not None  # agreement of int8 with float still means something


def test_a_classifier_on_its_own_labels_gets_top1(tmp_path):
    torch.manual_seed(0)
    clf = nn.Linear(32, 4).eval()
    x = torch.randn(400, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        y = clf(x).argmax(1)  # labels the float model gets right: its own class ids
    y[:40] = (y[:40] + 1) % 4  # 90% right
    m = drive(compare_outputs(clf, Noisy(clf, 0.05), data(tmp_path, y), metric=("top1", None)))
    assert m.accuracy_float == pytest.approx(0.9) and m.accuracy_withheld is None
    assert m.metric == MetricValue("top1", m.accuracy_float, m.accuracy_quantized)


def test_top1_asked_for_where_it_means_nothing_is_refused(tmp_path):
    embed = nn.Linear(32, 16).eval()
    with pytest.raises(QtappError, match="top1 cannot be scored: .*at chance level"):
        drive(compare_outputs(embed, embed, data(tmp_path, torch.randint(0, 16, (64,))), metric=("top1", None)))


def test_retrieval_at_1_counts_the_embeddings_whose_nearest_float_one_is_their_own():
    ref = torch.eye(8)
    same = compute("retrieval@1", None, ref, ref, None, None)
    assert same.quantized == 1.0
    swapped = ref.clone()
    swapped[[0, 1]] = swapped[[1, 0]]  # two samples' int8 embeddings exchanged: both found as the other
    assert compute("retrieval@1", None, ref, swapped, None, None).quantized == pytest.approx(6 / 8)


def test_cosine_is_the_mean_per_sample_cosine():
    ref = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    q = torch.tensor([[1.0, 1.0], [0.0, 2.0]])
    assert compute("cosine", None, ref, q, None, None).quantized == pytest.approx((1 / math.sqrt(2) + 1) / 2)


def test_sqnr_metric_matches_the_formula():
    ref = torch.ones(10, 4)
    got = compute("sqnr", None, ref, ref * 1.1, None, None).quantized
    assert got == pytest.approx(20.0, abs=1e-4)


def test_a_users_metric_file_is_called_with_outputs_and_labels(tmp_path):
    fn_file = tmp_path / "my_metric.py"
    fn_file.write_text("def mae(ref, q, y):\n    return -float((ref - q).abs().mean())\n")
    fn = load_metric(f"{fn_file}:mae")
    value = compute(f"{fn_file}:mae", fn, torch.zeros(4, 2), torch.ones(4, 2), None, None)
    assert (value.float_value, value.quantized) == (0.0, -1.0)


def test_a_users_metric_that_fails_or_returns_nonsense_is_named(tmp_path):
    fn_file = tmp_path / "bad.py"
    fn_file.write_text("def boom(ref, q, y):\n    raise ValueError('no labels')\n"
                       "def nan(ref, q, y):\n    return float('nan')\n")
    name = f"{fn_file}:boom"
    with pytest.raises(QtappError, match=r"metric .*boom failed: ValueError: no labels"):
        compute(name, load_metric(name), torch.zeros(2, 2), torch.zeros(2, 2), None, None)
    name = f"{fn_file}:nan"
    with pytest.raises(QtappError, match="must return a finite number"):
        compute(name, load_metric(name), torch.zeros(2, 2), torch.zeros(2, 2), None, None)


def test_an_unknown_metric_is_refused_with_the_choices():
    with pytest.raises(UsageError, match="unknown metric 'top5'.*sqnr, cosine, top1, retrieval@1"):
        check_metric_name("top5")


@pytest.mark.parametrize("text, kind, op, value", [
    ("sqnr>=30", "sqnr", ">=", 30.0), ("cosine >= 0.999", "cosine", ">=", 0.999), ("drop<=1", "drop", "<=", 1.0),
    ("metric>=-0.5", "metric", ">=", -0.5), ("cosine>=1e-3", "cosine", ">=", 1e-3)])
def test_targets_are_read(text, kind, op, value):
    assert Target.parse(text) == Target(kind, op, value)


@pytest.mark.parametrize("text", ["sqnr<=30", "drop>=1", "accuracy>=0.9", "sqnr>=", "", "30"])
def test_a_target_that_means_nothing_is_refused(text):
    with pytest.raises(UsageError, match="target"):
        Target.parse(text)


def test_a_drop_is_in_top1_points_and_needs_a_float_score():
    t = Target.parse("drop<=1")
    assert t.score(MetricValue("top1", 0.95, 0.942)) == pytest.approx(0.8) and t.met(MetricValue("top1", 0.95, 0.942))
    assert not t.met(MetricValue("top1", 0.95, 0.93))
    with pytest.raises(UsageError, match="needs a metric the float model also scores"):
        t.score(MetricValue("cosine", None, 0.99))


@pytest.mark.parametrize("acc, classes, n, meaningful", [
    (0.992, 2, 256, True),  # a face / not-face detector: 99% is far above chance, though under twice 50%
    (0.55, 2, 256, False), (0.80, 2, 256, True), (0.20, 10, 400, True), (0.12, 10, 400, False)])
def test_accuracy_means_something_for_binary_classifiers_too(acc, classes, n, meaningful):
    from qtapp.core.analysis.metrics import classifier_accuracy_meaningful

    assert classifier_accuracy_meaningful(acc, classes, n) == meaningful
