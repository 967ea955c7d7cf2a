"""QConfig mappings built from a recipe (engine, observer, per-channel), for FX and eager mode."""

from __future__ import annotations


def activation_observer(observer: str, engine: str):
    """Every range choice at once (observers.MultiObserver), `observer` chosen until a conversion
    chooses another per point."""
    import torch

    from .observers import MultiObserver

    # fbgemm/x86 kernels need 7-bit activations to avoid overflow in their int16 accumulation
    # (what torch's own default qconfigs do); qnnpack and onednn use the full range.
    qmax = 127 if engine in ("fbgemm", "x86") else 255
    return MultiObserver.with_args(dtype=torch.quint8, quant_min=0, quant_max=qmax, chosen=observer)


def weight_observer(per_channel: bool):
    import torch
    from torch.ao.quantization import observer as obs

    if per_channel:
        return obs.PerChannelMinMaxObserver.with_args(dtype=torch.qint8, qscheme=torch.per_channel_symmetric)
    return obs.MinMaxObserver.with_args(dtype=torch.qint8, qscheme=torch.per_tensor_symmetric)


def static_qconfig(recipe):
    from torch.ao.quantization import QConfig

    return QConfig(activation=activation_observer(recipe.observer, recipe.engine),
                   weight=weight_observer(recipe.per_channel))


def qat_qconfig(recipe):
    import torch
    from torch.ao.quantization import QConfig
    from torch.ao.quantization.fake_quantize import FakeQuantize, FusedMovingAvgObsFakeQuantize
    from torch.ao.quantization import observer as obs

    qmax = 127 if recipe.engine in ("fbgemm", "x86") else 255
    act = FusedMovingAvgObsFakeQuantize.with_args(observer=obs.MovingAverageMinMaxObserver, quant_min=0,
                                                  quant_max=qmax, dtype=torch.quint8)
    if recipe.per_channel:
        weight = FakeQuantize.with_args(observer=obs.MovingAveragePerChannelMinMaxObserver, quant_min=-128,
                                        quant_max=127, dtype=torch.qint8, qscheme=torch.per_channel_symmetric)
    else:
        weight = FakeQuantize.with_args(observer=obs.MovingAverageMinMaxObserver, quant_min=-128, quant_max=127,
                                        dtype=torch.qint8, qscheme=torch.per_tensor_symmetric)
    return QConfig(activation=act, weight=weight)


def prelu_qconfig(recipe, qat: bool = False):
    """The global qconfig, with PReLU's slopes observed over a range holding 0 and 1 (observers.SlopeObserver:
    torch's int8 PReLU rounds its positive-side 1.0 with the slopes' parameters). PReLU has no QAT module:
    its weight is only observed when it is converted, so the same observer serves QAT."""
    from torch.ao.quantization import QConfig

    from .observers import SlopeObserver

    base = qat_qconfig(recipe) if qat else static_qconfig(recipe)
    return QConfig(activation=base.activation, weight=SlopeObserver)


# Known int8 kernel defects and what the app does about each (named in every report whose model has them).
KERNEL_CORRECTIONS = {
    "PReLU": ("int8 PReLU: its slopes' range widened to hold 0 and 1 (torch's quantized::prelu rounds the 1.0 of "
              "positive inputs with the slopes' parameters; with every slope below 1 it saturated and shrank every "
              "positive activation)"),
}


def fx_mapping(recipe, float_heads=(), qat: bool = False, points=None):
    """The engine's default mapping (keeps its fixed-qparams entries for sigmoid, softmax, ...) with the
    recipe's global qconfig, weight-only int8 for embeddings, and None for every layer or functional op
    kept in float. `points` ({name: QuantPoint}) says where an op named `layer1.0/add` is called."""
    import torch.nn as nn
    from torch.ao.quantization import (float_qparams_weight_only_qconfig, get_default_qat_qconfig_mapping,
                                       get_default_qconfig_mapping)

    base = (get_default_qat_qconfig_mapping if qat else get_default_qconfig_mapping)(recipe.engine)
    base.set_global(qat_qconfig(recipe) if qat else static_qconfig(recipe))
    if not qat:  # an embedding's int8 kernel takes float ids and int8 rows with a scale each (no QAT form)
        base.set_object_type(nn.Embedding, float_qparams_weight_only_qconfig)
        base.set_object_type(nn.EmbeddingBag, float_qparams_weight_only_qconfig)
    base.set_object_type(nn.PReLU, prelu_qconfig(recipe, qat))
    for name in float_heads:
        point = (points or {}).get(name)
        if point is not None and point.toggle == "op":
            base.set_module_name_object_type_order(point.scope, point.target, point.order, None)
        else:
            base.set_module_name(name, None)
    return base
