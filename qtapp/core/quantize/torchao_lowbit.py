"""torchao's `quantize_` backend: 4- or 8-bit weights per layer for Linear and Embedding layers, with int8
dynamic activations ("8da4w", "8da8w": what ExecuTorch's XNNPACK runs) or float ones (weight-only).

Which scheme each layer gets is the recipe's `weight_bits` / `group_size`, or its per-point override; a
layer kept float gets none. Facts this relies on (torchao 0.18, executorch 1.5.1, measured here):
- Linear: `Int8DynamicActivationIntxWeightConfig` with SYMMETRIC weights (XNNPACK drops an asymmetric
  weight's zero point without a word: cosine 0.93), int4 in groups (the group must divide in_features,
  else one scale per output channel) or int8 per output channel (XNNPACK takes groups of 4-bit only).
- Embedding: `IntxWeightOnlyConfig` (int4 in groups along a row, or int8 per row); ExecuTorch runs it with
  its quantized kernels (not XNNPACK), which need `padding_idx` None (the forward is the same).
- Weight-only Linear (`IntxWeightOnlyConfig` on nn.Linear) lowers to XNNPACK without an error but computes
  wrong outputs (cosine 0.58): weight-only runs are not shipped as .pte (run.exporting refuses it).
- A quantized weight is an `IntxUnpackedToInt8Tensor`: the module stays nn.Linear / nn.Embedding, forward
  hooks fire, `.dequantize()` gives the float weight it computes with."""

from __future__ import annotations

import copy

from ..base.errors import UsageError
from ..base.progress import Stage
from .base import Calibrated

DEFAULT_GROUP = 32  # weights per scale for 4 bits when the recipe names none (ExecuTorch's LLM export uses 32)


def require_torchao(what: str) -> None:
    try:
        import torchao  # noqa: F401 - an optional extra: imported where it is used
    except ImportError:
        raise UsageError(f"{what} needs torchao: pip install \"qtapp[executorch]\" (torchao 0.18)") from None


def scheme_of(recipe, name: str) -> tuple[int, int | None]:
    """(bits, group size or None for one scale per output channel / row) of layer `name`."""
    o = recipe.overrides.get(name)
    bits = o.weight_bits if o is not None and o.weight_bits is not None else recipe.weight_bits
    group = o.group_size if o is not None and o.group_size is not None else recipe.group_size
    if bits == 8:
        return 8, None  # XNNPACK takes groups of 4-bit weights only
    return 4, group or DEFAULT_GROUP


def scheme_text(bits: int, group: int | None) -> str:
    return f"int{bits}" + (f", groups of {group}" if group else ", per channel")


def layer_config(module, bits: int, group: int | None, weight_only: bool):
    """The torchao config for one layer. A group that does not split the layer's rows becomes one scale per
    output channel; the layer's weights then say so themselves (analysis.compare reads the block size)."""
    import torch
    from torchao.quantization import Int8DynamicActivationIntxWeightConfig, IntxWeightOnlyConfig, MappingType
    from torchao.quantization.granularity import PerAxis, PerGroup

    dtype = torch.int4 if bits == 4 else torch.int8
    width = module.weight.shape[1]
    if group is not None and width % group:
        group = None
    granularity = PerGroup(group) if group else PerAxis(0)
    if isinstance(module, torch.nn.Embedding) or weight_only:
        return IntxWeightOnlyConfig(weight_dtype=dtype, granularity=granularity,
                                    mapping_type=MappingType.SYMMETRIC)
    return Int8DynamicActivationIntxWeightConfig(weight_dtype=dtype, weight_granularity=granularity,
                                                 weight_mapping_type=MappingType.SYMMETRIC)


class TorchaoBackend:
    """`quantize_` per layer; nothing to calibrate (the activations are quantized per call, or not at all)."""

    name = "torchao"
    qat = False

    def prepare_and_calibrate(self, model, recipe, inventory, example, calib, cancel):
        require_torchao("--backend torchao")
        yield Stage("calibrate", 1, cancel).step(1, "torchao's low-bit weights need no calibration")
        return Calibrated(self, recipe, model, tuple(inventory.heads), None, frozenset(), {"batches": 0, "samples": 0},
                          points=tuple(inventory.points))

    def convert(self, calibrated, float_heads, recipe):
        import torch
        from torchao.quantization import FqnToConfig, quantize_

        model = copy.deepcopy(calibrated.model).eval()
        modules = dict(model.named_modules())
        weight_only = recipe.method == "weight-only"
        configs = {}
        for head in calibrated.heads:
            if head in set(float_heads):
                continue
            bits, group = scheme_of(recipe, head)
            configs[head] = layer_config(modules[head], bits, group, weight_only)
        with torch.no_grad():
            quantize_(model, FqnToConfig(configs), filter_fn=None)
        for head in configs:
            if isinstance(modules[head], torch.nn.Embedding):
                modules[head].padding_idx = None  # ExecuTorch's quantized embedding pattern has no padding index
        return model

    def reference(self, model):
        return model


def is_torchao_model(model) -> bool:
    """Whether any weight of `model` is a torchao tensor (TorchScript must never see one: tracing asserts
    inside torch, scripting writes zero weights)."""
    try:
        from torchao.utils import TorchAOBaseTensor
    except ImportError:
        return False
    return any(isinstance(p, TorchAOBaseTensor) for p in model.parameters())
