"""Float-versus-quantized metrics: SQNR, cosine, errors, agreement and accuracy, per-layer hooks."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn as nn

from qtapp.core.analysis.compare import compare_outputs, weight_data
from qtapp.core.base.inputs import InputSpec
from qtapp.core.base.progress import drive
from qtapp.core.base.tensors import first_tensor, sqnr_db
from qtapp.core.data.open import open_source

DIGITS = InputSpec(((1, 1, 8, 8),))


class Scaled(nn.Module):
    """The wrapped model's output times `factor`: a 'quantized' model with a known error."""

    def __init__(self, model, factor):
        super().__init__()
        self.model, self.factor = model, factor

    def forward(self, x):
        return self.model(x) * self.factor


def test_sqnr_formula():
    assert sqnr_db(100.0, 1.0) == pytest.approx(20.0)
    assert sqnr_db(1.0, 1.0) == 0.0
    assert sqnr_db(5.0, 0.0) is None  # identical: nothing to measure
    assert sqnr_db(0.0, 2.0) == -math.inf


def test_compare_outputs_with_a_known_error(demo_loaded):
    data = open_source("demo", DIGITS, batch_size=50, max_batches=2, split="eval")
    metrics = drive(compare_outputs(demo_loaded.module, Scaled(demo_loaded.module, 1.1), data))
    assert metrics.samples == 100
    assert metrics.sqnr_db == pytest.approx(20.0, abs=1e-3)  # noise = 0.1 x signal
    assert metrics.cosine == pytest.approx(1.0, abs=1e-6)
    assert metrics.top1_agreement == 1.0  # a positive scale keeps every argmax
    assert metrics.accuracy_float == metrics.accuracy_quantized >= 0.95
    with torch.no_grad():
        ref = torch.cat([demo_loaded.module(*inputs) for inputs, _ in data])
    assert metrics.max_abs_error == pytest.approx(0.1 * float(ref.abs().max()), rel=1e-4)
    assert len(metrics.ref_values) == len(metrics.q_values) == 1000  # 100 samples x 10 classes


def test_compare_outputs_of_identical_models(demo_loaded):
    data = open_source("demo", DIGITS, batch_size=20, max_batches=1)
    metrics = drive(compare_outputs(demo_loaded.module, demo_loaded.module, data))
    assert metrics.sqnr_db is None and metrics.max_abs_error == 0.0 and metrics.top1_agreement == 1.0
    assert set(metrics.to_json()) == {"sqnr_db", "cosine", "max_abs_error", "top1_agreement",
                                      "accuracy_float", "accuracy_quantized", "samples", "metric",
                                      "accuracy_withheld"}


def test_regression_outputs_have_no_agreement_or_accuracy():
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 1))
    data = open_source("demo", DIGITS, batch_size=8, max_batches=1)
    metrics = drive(compare_outputs(model, Scaled(model, 0.5), data))
    assert metrics.top1_agreement is None and metrics.accuracy_float is None
    assert metrics.sqnr_db == pytest.approx(20 * math.log10(2), abs=1e-3)


def test_output_shape_mismatch_is_reported():
    data = open_source("random", DIGITS, batch_size=2, max_batches=1)
    with pytest.raises(RuntimeError, match="differs from float"):
        drive(compare_outputs(nn.Flatten(), nn.Flatten(0), data))


@pytest.mark.filterwarnings("ignore:.*quantized tensor creation functions:UserWarning")
def test_first_tensor():
    t = torch.ones(2)
    assert first_tensor(t) is t
    assert first_tensor((t, torch.zeros(3))) is t and first_tensor({"logits": t}) is t
    assert first_tensor([]) is None and first_tensor("text") is None
    q = torch.quantize_per_tensor(torch.tensor([0.5, 1.0]), 0.5, 0, torch.quint8)
    assert torch.equal(first_tensor(q), torch.tensor([0.5, 1.0]))


def test_weight_data_of_a_float_layer(demo_loaded):
    data = weight_data(demo_loaded.module.block1[0], demo_loaded.module.block1[0])
    assert data.float_weight.shape == (32, 1, 3, 3) and data.dequantized is None  # float: nothing dequantized


def test_weight_data_of_a_float16_dynamic_layer():
    from torch.ao.quantization import quantize_dynamic

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 4))
    q = quantize_dynamic(model, {nn.Linear}, dtype=torch.float16)
    data = weight_data(model[0], q[0])
    assert data.qscheme == "float16"
    assert abs(data.dequantized - data.float_weight).max() < 1e-3


def test_float_rms_flags_a_dead_output():
    import torch

    from qtapp.core.analysis.compare import compare_outputs
    from qtapp.core.base.progress import drive
    from qtapp.core.data.source import DataSource

    x = torch.ones(4, 3)
    data = DataSource("ones", "tensor", True, 1, 4, False, lambda: iter([(x, None)]))
    scale = lambda k: (lambda t: t[:, :2] * k)  # noqa: E731 - tiny stand-in models
    live = drive(compare_outputs(scale(3.0), scale(3.0), data))
    dead = drive(compare_outputs(scale(1e-9), scale(0.0), data))
    assert abs(live.float_rms - 3.0) < 1e-6
    assert dead.float_rms < 1e-4 and dead.cosine == 0.0
