"""A weighted point's local SQNR is what analysis/static.py says it is: the float (BN-folded) model's input at
that layer, its int8 weights, its output rounded to its calibrated range, against the float output. Checked
against that recomputation, by plain hooks, on the pattern that broke it on MobileNetV2's last conv
(net.features.18.0: 1x1 conv, BatchNorm, ReLU6(inplace=True), then two means):

- the conv read only by the ReLU6 has the clamped range [0, 6] (int8 keeps up to 12 on quint8): the float
  value at it is the clamped one, so its int8-weight output must be clamped too, not compared raw;
- a conv also read by something else keeps its whole range, and the ReLU6(inplace=True) after it must not
  change the float value kept for it (the raw conv output) before it is compared.
"""

from __future__ import annotations

import copy
import math
from pathlib import Path

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from qtapp.core.analysis.qparams import SAMPLES
from qtapp.core.base.progress import drive
from qtapp.core.config.recipe import DataSpec, QuantRecipe
from qtapp.core.run.session import QuantSession

HERE = Path(__file__).resolve()


class _Stem(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1, bias=False)
        self.stem_bn = nn.BatchNorm2d(8)
        self.stem_act = nn.ReLU6(inplace=True)
        self.conv = nn.Conv2d(8, 32, 1, bias=False)
        self.bn = nn.BatchNorm2d(32)
        self.act = nn.ReLU6(inplace=True)

    def loud(self) -> "_Stem":
        """BatchNorms as training leaves them: the 1x1 conv's outputs reach well past 6 (MobileNetV2's last
        conv reaches 31), so the ReLU6 clips many of them and int8 saturates some at twice its range."""
        with torch.no_grad():
            self.stem_bn.weight.fill_(3.0)
            self.stem_bn.bias.fill_(1.0)
            self.bn.weight.copy_(torch.linspace(0.5, 12.0, 32))
            self.bn.bias.copy_(torch.linspace(-2.0, 3.0, 32))
            self.bn.running_var.fill_(4.0)
        return self.eval()


class LastConv(_Stem):
    """MobileNetV2's end: conv -> BN -> ReLU6(inplace) -> mean(3) -> mean(2)."""

    example_input_shape = (1, 3, 12, 12)

    def forward(self, x):
        x = self.stem_act(self.stem_bn(self.stem(x)))
        return self.act(self.bn(self.conv(x))).mean(3).mean(2)


class ConvAlsoReadRaw(_Stem):
    """The conv's output is read raw (its mean) and then clamped in place by the ReLU6: no clamped range."""

    example_input_shape = (1, 3, 12, 12)

    def forward(self, x):
        x = self.stem_act(self.stem_bn(self.stem(x)))
        y = self.bn(self.conv(x))
        raw = y.mean((2, 3))
        return self.act(y).mean(3).mean(2) + raw


def build_last_conv():
    torch.manual_seed(0)
    return LastConv().loud()


def build_conv_also_read_raw():
    torch.manual_seed(0)
    return ConvAlsoReadRaw().loud()


def _quantized(factory):
    data = DataSpec(source="random", batches=2, batch_size=8)
    recipe = QuantRecipe(model=f"{HERE}:{factory}", calibration=data, evaluation=data)
    session = drive(QuantSession.open(recipe))
    return session, drive(session.quantize())


def _sqnr(ref, got) -> float:
    ref, got = ref.double(), got.double()
    return 10 * math.log10(float((ref ** 2).sum()) / float(((ref - got) ** 2).sum()))


def _by_hand(session, result, name: str, clamp):
    """(local SQNR, accumulated SQNR) of conv point `name`, recomputed without the app's analysis: the float
    model fused as convert_fx fuses it (BN folded), the int8 model's own weights and output grid."""
    from torch.ao.quantization.quantize_fx import fuse_fx

    fused = fuse_fx(copy.deepcopy(session.loaded.module).eval())
    qconv = result.quantized_model.get_submodule(name)
    seen = {}

    def keep(key):
        def hook(_m, args, out):  # copies: the ReLU6 after each conv clamps its output in place
            seen.setdefault(key, (args[0].clone(), out.dequantize() if out.is_quantized else out.clone()))
        return hook

    fused.get_submodule(name).register_forward_hook(keep("float"))
    qconv.register_forward_hook(keep("int8"))
    x = torch.cat([inputs[0] for inputs, _y in session.open_evaluation()])[:SAMPLES]
    with torch.no_grad():
        fused(x)
        result.quantized_model(x)
    qconv._forward_hooks.clear()
    inp, ref = seen["float"]
    with torch.no_grad():
        out = F.conv2d(inp, qconv.weight().dequantize(), qconv.bias(), qconv.stride, qconv.padding,
                       qconv.dilation, qconv.groups)
    got = torch.fake_quantize_per_tensor_affine(out, float(qconv.scale), int(qconv.zero_point), 0, 255)
    int8 = seen["int8"][1]
    if clamp is not None:  # every reader clamps: the value at the point is the clamped one, on both sides
        ref, got, int8 = ref.clamp(*clamp), got.clamp(*clamp), int8.clamp(*clamp)
    return _sqnr(ref, got), _sqnr(ref, int8), ref


def test_a_conv_read_only_by_relu6_is_compared_clamped_on_both_sides():
    session, result = _quantized("build_last_conv")
    point = next(p for p in result.layers if p.name == "conv")
    assert point.range.lo == 0.0 and point.range.hi > 6.0  # clamped range [0, 6], int8 keeps up to ~12
    local, accumulated, ref = _by_hand(session, result, "conv", (0.0, 6.0))
    # the test's own premise: many raw conv outputs go past the clamp
    assert float((ref == 6.0).float().mean()) > 0.05
    assert point.local_sqnr_db == pytest.approx(local, abs=1.0)
    assert point.accumulated_sqnr_db == pytest.approx(accumulated, abs=1.0)


def test_a_relu6_in_place_after_a_conv_does_not_change_the_value_kept_for_it():
    session, result = _quantized("build_conv_also_read_raw")
    point = next(p for p in result.layers if p.name == "conv")
    assert point.range.lo < 0.0  # its mean reads it raw: the whole range, no clamp
    local, accumulated, ref = _by_hand(session, result, "conv", None)
    assert float((ref > 6.0).float().mean()) > 0.05 and float((ref < 0.0).float().mean()) > 0.05
    assert point.local_sqnr_db == pytest.approx(local, abs=1.0)
    assert point.accumulated_sqnr_db == pytest.approx(accumulated, abs=1.0)
