"""Cross-layer equalisation (Nagel et al. 2019, "Data-Free Quantization"): in a pair of weighted layers
A -> (BatchNorm, ReLU) -> B, scale A's output channel c by 1/s_c and B's input channel c by s_c. ReLU is
positively homogeneous, so the float model computes the same outputs, while each channel's weight range
in A and in B meets at sqrt(r_A * r_B): channels far out of line (as BatchNorm folding makes them) stop
setting a whole tensor's scale. It matters most with one weight scale per tensor (qnnpack's, or
--no-per-channel), and it changes the calibration: the model is recalibrated after it.

torch.ao ships `_equalize.equalize` for eager models whose pairs are given by name. This works on the
points FX (or eager) found, on a copy of the float model, and works through BatchNorm by scaling its
affine parameters (the conv before it is folded with it at conversion). A pair is taken only where A's
only reader is B, through nothing but a ReLU, B computes over every channel (not grouped), and neither
module is called twice; afterwards the copy's outputs are checked against the original's.
"""

from __future__ import annotations

import contextlib
import copy
from dataclasses import dataclass

from ..base.errors import QtappError
from ..base.tensors import first_tensor

ITERATIONS = 20  # chains (A -> B -> C) share B: a few passes settle them
TOLERANCE = 1e-4  # relative change of the float outputs allowed: rounding, nothing more


@dataclass(frozen=True)
class Pair:
    first: str  # the module whose output channels are scaled down
    second: str  # the module whose input channels are scaled up
    batchnorm: str | None = None  # the BatchNorm after `first`, whose affine parameters carry the scale

    def __str__(self) -> str:
        return f"{self.first} -> {self.second}"


def find_pairs(model, inventory) -> list[Pair]:
    """The (A, B) pairs of the inventory's points that equalisation keeps exact."""
    import torch.nn as nn

    points = inventory.points
    modules = dict(model.named_modules())
    called_twice = {n.split("@", 1)[0] for n in points if "@" in n}
    readers: dict[str, list[str]] = {}
    for p in points.values():
        for source in p.inputs:
            readers.setdefault(source, []).append(p.name)

    def weighted(name):
        m = modules.get(name)
        return isinstance(m, (nn.Conv2d, nn.Linear)) and name not in called_twice

    pairs = []
    for p in points.values():
        if p.kind != "module" or not weighted(p.name) or len(p.inputs) != 1:
            continue
        second = modules[p.name]
        if isinstance(second, nn.Conv2d) and second.groups != 1:
            continue  # a grouped conv mixes no channels: its input channel c is not one range
        source = p.inputs[0]
        if source in points and points[source].kind == "op" and points[source].op == "relu":
            relu = points[source]  # A -> relu() -> B
            if len(relu.inputs) != 1 or readers.get(source) != [p.name]:
                continue
            source = relu.inputs[0]
            if readers.get(source) != [relu.name]:
                continue
        elif readers.get(source) != [p.name]:
            continue
        if source not in points or points[source].kind != "module" or not weighted(source):
            continue
        first = modules[source]
        group = inventory[source].group if source in inventory else []
        others = [modules.get(n) for n in group if n != source]
        if any(not isinstance(m, (nn.BatchNorm2d, nn.BatchNorm1d, nn.ReLU)) for m in others):
            continue  # ReLU6, Hardswish...: not positively homogeneous
        if points[source].fused and set(points[source].fused) - {"ReLU", "relu"}:
            continue
        bns = [n for n in group if isinstance(modules.get(n), (nn.BatchNorm2d, nn.BatchNorm1d))]
        out_channels = first.out_channels if isinstance(first, nn.Conv2d) else first.out_features
        in_channels = second.in_channels if isinstance(second, nn.Conv2d) else second.in_features
        if out_channels != in_channels or (isinstance(first, nn.Linear) != isinstance(second, nn.Linear)):
            continue
        pairs.append(Pair(source, p.name, bns[0] if bns else None))
    return pairs


def _output_change(model, changed, inputs, tolerance: float, what: str) -> float:
    """The largest change of `changed`'s first output from `model`'s on `inputs`, relative to the largest
    value; a QtappError starting with `what` when it is over `tolerance`."""
    import torch

    with torch.no_grad():
        ref, got = first_tensor(model(*inputs)).float(), first_tensor(changed(*inputs)).float()
    diff = float((ref - got).abs().max()) / (float(ref.abs().max()) or 1.0)
    if diff > tolerance:
        raise QtappError(f"{what} (by {diff:.2g} of their largest value): a pair of layers is not what the traced "
                         "graph says; not applied")
    return diff


def _first_range(first, bn):
    """Per output channel of A, the largest |weight| once its BatchNorm is folded in."""
    w = first.weight.detach().flatten(1).abs().amax(1)
    if bn is not None:
        w = w * (bn.weight.detach().abs() / (bn.running_var + bn.eps).sqrt())
    return w


def _second_range(second):
    w = second.weight.detach()
    return w.transpose(0, 1).flatten(1).abs().amax(1)  # per input channel


def equalize(model, pairs: list[Pair], example) -> tuple[object, dict]:
    """A copy of `model` with every pair equalised, and what it did: {"pairs", "max_ratio_before",
    "max_ratio_after"} (the largest ratio of a channel's range to the tensor's median, over the pairs'
    tensors). Raises QtappError if the copy's outputs differ from the original's (a pair that was not
    what the graph said)."""
    import torch

    out = copy.deepcopy(model).eval()
    modules = dict(out.named_modules())

    def spread():
        worst = 1.0
        for pair in pairs:
            first, bn = modules[pair.first], modules.get(pair.batchnorm) if pair.batchnorm else None
            for r in (_first_range(first, bn), _second_range(modules[pair.second])):
                med = float(r.median())
                if med > 0:
                    worst = max(worst, float(r.max()) / med)
        return worst

    before = spread()
    with torch.no_grad():
        for _ in range(ITERATIONS):
            moved = 0.0
            for pair in pairs:
                first, second = modules[pair.first], modules[pair.second]
                bn = modules.get(pair.batchnorm) if pair.batchnorm else None
                r1, r2 = _first_range(first, bn), _second_range(second)
                s = torch.where((r1 > 0) & (r2 > 0), (r1 / r2.clamp_min(1e-12)).sqrt(), torch.ones_like(r1))
                moved = max(moved, float((s - 1).abs().max()))
                if bn is not None:  # bn(x) / s: its affine parameters carry the scale
                    bn.weight.div_(s)
                    bn.bias.div_(s)
                else:
                    shape = (-1,) + (1,) * (first.weight.dim() - 1)
                    first.weight.div_(s.view(shape))
                    if first.bias is not None:
                        first.bias.div_(s)
                shape = (1, -1) + (1,) * (second.weight.dim() - 2)
                second.weight.mul_(s.view(shape))
            if moved < 1e-3:
                break
    diff = _output_change(model, out, example, TOLERANCE, "cross-layer equalisation changed the float model's outputs")
    return out, {"pairs": [str(p) for p in pairs], "max_ratio_before": before, "max_ratio_after": spread(),
                 "output_change": diff}


# -- depthwise input equalisation (data-aware) ---------------------------------------------------------
#
# A depthwise conv reads each input channel on its own, but torch.ao's int8 kernels take one activation
# range per tensor: a channel whose values stay a hundred times below the loudest one keeps a few int8
# levels (MobileNetV2's first block: 12.7 dB at the output from that one range). Peers quantize such an
# input per channel (NNCF on OpenVINO); fbgemm, x86 and qnnpack cannot. The same effect, in the float
# model: scale the channels of the layer feeding the depthwise conv up towards the loudest one (BatchNorm's
# affine parameters, or the layer's own weight rows, carry the factor) and the depthwise conv's weights for
# that channel down by the same factor. Its weights are quantized per output channel, which is its input
# channel, so that costs it nothing.
#
# Exact for the float model: through nothing or a ReLU, for any input; through a ReLU6 (or a Hardtanh from 0),
# for every value at or below the channel's calibrated maximum, since a channel scaled by s then clamps at
# 6/s >= its calibrated maximum. A larger value is cut there, as a per-channel int8 range would cut it.

DEPTHWISE_MAX_SCALE = 16.0  # at most 4 more bits for the quietest channels: a dead channel is not blown up


@dataclass(frozen=True)
class DepthwisePair:
    first: str  # the Conv2d or Linear whose output channels are scaled up
    depthwise: str  # the depthwise Conv2d reading them
    batchnorm: str | None = None  # the BatchNorm between them, which carries the scale when present
    clamp: str | None = None  # the ReLU/ReLU6/Hardtanh module between them (its output is what is measured)

    def __str__(self) -> str:
        return f"{self.first} -> {self.depthwise}"


def find_depthwise_pairs(model) -> list[DepthwisePair]:
    """(A, depthwise B) pairs in `model` joined by nothing but a BatchNorm and a ReLU/ReLU6/Hardtanh(0, x)
    module, each node read only by the next, every module called once. Found on an FX trace of the model;
    a model torch.fx cannot trace has none."""
    import torch.fx
    import torch.nn as nn

    try:
        graph = torch.fx.symbolic_trace(model).graph
    except Exception:  # noqa: BLE001 - any trace failure means: no graph to read pairs from
        return []
    modules = dict(model.named_modules())
    calls: dict[str, int] = {}
    for node in graph.nodes:
        if node.op == "call_module":
            calls[node.target] = calls.get(node.target, 0) + 1

    def module(node):
        if node.op != "call_module" or calls.get(node.target) != 1:
            return None
        return modules.get(node.target)

    def clamp_from_zero(m) -> bool:
        if isinstance(m, (nn.ReLU, nn.ReLU6)):
            return True
        return type(m) is nn.Hardtanh and float(m.min_val) == 0.0 and float(m.max_val) > 0

    pairs = []
    for node in graph.nodes:
        b = module(node)
        if not (isinstance(b, nn.Conv2d) and b.groups > 1 and b.groups == b.in_channels == b.out_channels):
            continue
        if not node.args or not isinstance(node.args[0], torch.fx.Node):
            continue
        src, clamp, bn = node.args[0], None, None
        if isinstance(module(src), nn.Module) and clamp_from_zero(module(src)) and len(src.users) == 1:
            clamp, src = src.target, src.args[0]
        if isinstance(module(src), nn.BatchNorm2d) and len(src.users) == 1 and module(src).affine:
            bn, src = src.target, src.args[0]
        a = module(src)
        if not isinstance(a, nn.Conv2d) or len(src.users) != 1 or a.out_channels != b.in_channels:
            continue
        pairs.append(DepthwisePair(src.target, node.target, bn, clamp))
    return pairs


@contextlib.contextmanager
def watching_depthwise_inputs(model, pairs: list[DepthwisePair]):
    """While open, every forward of `model` records, per pair, each channel's largest |value| reaching the
    depthwise conv; yields {depthwise name: tensor of maxima}."""
    import torch

    modules = dict(model.named_modules())
    peaks: dict = {}

    def watch(pair):
        def hook(_m, _inp, out):
            v = out.detach().abs().transpose(0, 1).flatten(1).amax(1).float()
            peaks[pair.depthwise] = v if pair.depthwise not in peaks else torch.maximum(peaks[pair.depthwise], v)
        return hook

    handles = [modules[p.clamp or p.batchnorm or p.first].register_forward_hook(watch(p)) for p in pairs]
    try:
        yield peaks
    finally:
        for h in handles:
            h.remove()


def depthwise_scales(peaks: dict) -> dict:
    """Per depthwise conv, the factor each input channel is scaled up by: the loudest channel's calibrated
    maximum over this channel's, at most DEPTHWISE_MAX_SCALE; 1 for a channel that never moved."""
    import torch

    scales = {}
    for name, peak in peaks.items():
        loudest = float(peak.max())
        s = torch.where(peak > 0, loudest / peak.clamp_min(1e-30), torch.ones_like(peak))
        scales[name] = s.clamp(1.0, DEPTHWISE_MAX_SCALE)
    return scales


def equalize_depthwise(model, pairs: list[DepthwisePair], scales: dict, check_inputs) -> tuple[object, dict]:
    """A copy of `model` with each pair's channels scaled (depthwise_scales), and what was done:
    {"pairs", "scaled_channels", "largest_scale", "output_change"}. Raises QtappError if the copy's outputs
    on `check_inputs` (calibration data, on which the scaling is exact) differ from the original's."""
    import torch

    out = copy.deepcopy(model).eval()
    modules = dict(out.named_modules())
    used, scaled, largest = [], 0, 1.0
    with torch.no_grad():
        for p in pairs:
            s = scales.get(p.depthwise)
            if s is None or float(s.max()) <= 1.0:
                continue
            if p.batchnorm is not None:
                bn = modules[p.batchnorm]
                bn.weight.mul_(s)
                bn.bias.mul_(s)
            else:
                a = modules[p.first]
                a.weight.mul_(s.view(-1, *([1] * (a.weight.dim() - 1))))
                if a.bias is not None:
                    a.bias.mul_(s)
            dw = modules[p.depthwise]
            dw.weight.div_(s.view(-1, *([1] * (dw.weight.dim() - 1))))
            used.append(str(p))
            scaled += int((s > 1.0).sum())
            largest = max(largest, float(s.max()))
    diff = _output_change(model, out, check_inputs, 1e-3,
                          "depthwise input equalisation changed the float model's outputs on calibration data")
    return out, {"pairs": used, "scaled_channels": scaled, "largest_scale": largest, "output_change": diff}
