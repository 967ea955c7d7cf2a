"""QConfig mappings built from a recipe (engine, observer, per-channel), for FX and eager mode."""

from __future__ import annotations

from ..model import rewrites
from ..model.rewrites import FloatEmbeddingBag, bag_mean_weights
from .observers import MultiObserver, NonZeroZeroPointObserver, SlopeObserver


def activation_observer(observer: str, engine: str):
    """Every range choice at once (observers.MultiObserver), `observer` chosen until a conversion
    chooses another per point."""
    import torch

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
    from torch.ao.quantization import observer as obs
    from torch.ao.quantization.fake_quantize import FakeQuantize, FusedMovingAvgObsFakeQuantize

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

    base = qat_qconfig(recipe) if qat else static_qconfig(recipe)
    return QConfig(activation=base.activation, weight=SlopeObserver)


def conv_transpose_qconfig(recipe, qat: bool = False):
    """The global qconfig, with a ConvTranspose's weights per tensor with a zero point that is never 0
    (observers.NonZeroZeroPointObserver): torch's x86 engine sends symmetric ones to oneDNN's int8
    transposed conv, which is wrong when a group's in and out channels differ, on every x86 process that
    loads the file. Per tensor: torch.ao has no per-channel ConvTranspose (its weight's channel axis is 1).
    A ConvTranspose has no QAT module: its weight is only observed when it is converted."""
    import torch
    from torch.ao.quantization import QConfig
    from torch.ao.quantization.fake_quantize import FakeQuantize

    base = qat_qconfig(recipe) if qat else static_qconfig(recipe)
    weight = NonZeroZeroPointObserver
    if qat:
        weight = FakeQuantize.with_args(observer=NonZeroZeroPointObserver, quant_min=-128, quant_max=127,
                                        dtype=torch.qint8, qscheme=torch.per_tensor_affine)
    return QConfig(activation=base.activation, weight=weight)


def _conv_transposes():
    import torch.nn as nn
    import torch.nn.functional as F

    return (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d, F.conv_transpose1d, F.conv_transpose2d,
            F.conv_transpose3d)


def float_conv_transposes(engine: str) -> tuple:
    """The ConvTranspose types kept float on `engine`, whose int8 kernel is wrong there and cannot be
    corrected: ConvTranspose3d on qnnpack (QNNPACK's 3-D transposed conv: -10 dB against its own int8
    input and weights; it cannot even unpack 3-D weights to save them) and every ConvTranspose on onednn
    (oneDNN's: wrong when a group's in and out channels differ, and it refuses weights with a zero point
    other than 0)."""
    import torch.nn as nn
    import torch.nn.functional as F

    if engine == "qnnpack":
        return (nn.ConvTranspose3d, F.conv_transpose3d)
    if engine == "onednn":
        return _conv_transposes()
    return ()


# Known int8 kernel defects and what the app does about each (named in every report whose model has them):
# {QuantPoint.op: ((what, applies), ...)}; `applies(point, converted, engine)` says whether that correction
# was made at the point in `converted` (the converted GraphModule, converted for `engine`); the first that
# applies is named. The corrections themselves live in fx_mapping (qconfigs) and torch_ao.kernel_rewrite
# (the copy about to be converted).
def _module(point, converted):
    if converted is None or point.kind != "module" or not isinstance(point.target, str):
        return None
    try:
        return converted.get_submodule(point.target)
    except AttributeError:
        return None


def _int8(point, converted, engine) -> bool:
    module = _module(point, converted)
    if module is None:  # a functional op: how the inventory's conversion ran it (same mapping)
        return point.runs == "int8" if point.runs else point.observed
    return type(module).__module__.startswith(("torch.ao.nn.quantized", "torch.ao.nn.intrinsic.quantized"))


def _float_conv_transpose(point, converted, engine) -> bool:
    names = {t.__name__ for t in float_conv_transposes(engine)}
    return point.op in names and not _int8(point, converted, engine)


def _int8_conv_transpose(point, converted, engine) -> bool:
    return engine in ("fbgemm", "x86", "qnnpack") and _int8(point, converted, engine)


def _swapped_to(type_name):
    return lambda point, converted, engine: type(_module(point, converted)).__name__ == type_name


def _float_functional_pool(point, converted, engine) -> bool:
    return converted is not None and point.kind == "op" and any(
        n.name == point.node and n.target in (rewrites.avg_pool1d, rewrites.avg_pool2d) for n in converted.graph.nodes)


def _weighted_mean(point, converted, engine) -> bool:
    if not _int8(point, converted, engine) or _module(point, converted) is None:
        return False
    return any(n.op == "call_module" and n.target == point.target and len(n.args) > 2
               and getattr(n.args[2], "target", None) is bag_mean_weights for n in converted.graph.nodes)


_CONV_T_INT8 = ("int8 ConvTranspose: weights with a zero point other than 0 (on an AVX512-VNNI CPU, torch's x86 engine "
                "sends symmetric ones to oneDNN's int8 transposed conv, which is wrong when a group's in and out "
                "channels differ, in any x86 process that loads the file, whatever engine made it)",
                _int8_conv_transpose)
_CONV_T_FLOAT = ("ConvTranspose kept float on this engine: its int8 kernel is wrong here (QNNPACK's 3-D transposed "
                 "conv; oneDNN's, when a group's in and out channels differ)", _float_conv_transpose)
_AVG_POOL = ("average pool computed in float on its int8 input, rounded back to the input's range: QNNPACK's int8 "
             "average pool (the qnnpack engine) ignores count_include_pad=False and divisor_override",
             _swapped_to("FloatAvgPool"))

KERNEL_CORRECTIONS = {
    "PReLU": (("int8 PReLU: its slopes' range widened to hold 0 and 1 (torch's quantized::prelu rounds the 1.0 of "
               "positive inputs with the slopes' parameters; with every slope below 1 it saturated and shrank every "
               "positive activation)", _int8),),
    **{name: (_CONV_T_FLOAT, _CONV_T_INT8) for name in ("ConvTranspose1d", "ConvTranspose2d", "ConvTranspose3d",
                                                         "conv_transpose1d", "conv_transpose2d", "conv_transpose3d")},
    "AvgPool1d": (_AVG_POOL,),
    "AvgPool2d": (_AVG_POOL,),
    "avg_pool1d": ((_AVG_POOL[0], _float_functional_pool),),
    "avg_pool2d": ((_AVG_POOL[0], _float_functional_pool),),
    "EmbeddingBag": (("int8 EmbeddingBag mode \"mean\": the int8 kernel's sum, with weights 1 / bag size (torch's int8 "
                      "EmbeddingBag sums whatever its mode)", _weighted_mean),
                     ("EmbeddingBag mode \"max\" kept float: torch's int8 EmbeddingBag sums whatever its mode",
                      _swapped_to("FloatEmbeddingBag"))),
}


def fx_mapping(recipe, float_heads=(), qat: bool = False, points=None):
    """The engine's default mapping (keeps its fixed-qparams entries for sigmoid, softmax, ...) with the
    recipe's global qconfig, weight-only int8 for embeddings, and None for every layer or functional op
    kept in float. `points` ({name: QuantPoint}) says where an op named `layer1.0/add` is called."""
    import torch.nn as nn
    from torch.ao.quantization import (
        float_qparams_weight_only_qconfig,
        get_default_qat_qconfig_mapping,
        get_default_qconfig_mapping,
    )

    base = (get_default_qat_qconfig_mapping if qat else get_default_qconfig_mapping)(recipe.engine)
    base.set_global(qat_qconfig(recipe) if qat else static_qconfig(recipe))
    if not qat:  # an embedding's int8 kernel takes float ids and int8 rows with a scale each (no QAT form)
        base.set_object_type(nn.Embedding, float_qparams_weight_only_qconfig)
        base.set_object_type(nn.EmbeddingBag, float_qparams_weight_only_qconfig)
    base.set_object_type(nn.PReLU, prelu_qconfig(recipe, qat))
    conv_t = conv_transpose_qconfig(recipe, qat)
    kept = float_conv_transposes(recipe.engine)
    for op in _conv_transposes():
        base.set_object_type(op, None if op in kept else conv_t)
    # What torch_ao.kernel_rewrite puts in the copy it converts: convert_fx, given a mapping (another float
    # set than prepare's), checks each node's qconfig against prepare's, found again by type.

    if not qat:
        base.set_object_type(FloatEmbeddingBag, float_qparams_weight_only_qconfig)  # prepared as an EmbeddingBag
    base.set_object_type(bag_mean_weights, None)  # a node the calibration never had
    for name in float_heads:
        point = (points or {}).get(name)
        if point is not None and point.toggle == "op":
            base.set_module_name_object_type_order(point.scope, point.target, point.order, None)
        else:
            base.set_module_name(name, None)
    return base
