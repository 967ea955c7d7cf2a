"""torch.ao's backends: FX static, FX QAT, eager static (torchvision's quantizable models) and dynamic.
The PT2E backends are in pt2e.py; registry.py chooses among them all.

A backend does two things (base.QuantBackend):
  prepare_and_calibrate(...)  a job (generator) that yields Progress per batch and returns a
                              `Calibrated` state; the float model is never modified
  convert(calibrated, float_heads)
                              an int8 model with exactly `float_heads` kept in float; called again
                              with another set it reconverts WITHOUT recalibrating.
"""

from __future__ import annotations

import contextlib
import copy

from ..base.compat import forgetting_ao_models, quiet_ao
from ..base.errors import Cancelled, QtappError, UsageError, first_line
from ..base.progress import Stage
from ..model import rewrites
from ..model.rewrites import FloatAvgPool, FloatEmbeddingBag, FloatPReLU, MeanEmbeddingBag, bag_mean_weights
from .base import Calibrated, batchnorms_without_stats, feed_batches, qat_train, set_engine
from .observers import bound_clamped_observers, choose
from .points import eager_points, fx_points, merge_classification
from .qconfigs import fx_mapping, static_qconfig, weight_observer


@contextlib.contextmanager
def _untraceable_named(model=None):
    """torch.fx's trace errors, said as what they mean for the user."""
    try:
        yield
    except (QtappError, Cancelled):
        raise
    except Exception as exc:  # noqa: BLE001 - any trace failure of the user's model means the same
        no_stats = batchnorms_without_stats(model) if model is not None else []
        if no_stats:  # fusion asserts on them before tracing says anything useful
            one = len(no_stats) == 1
            raise QtappError(
                f"{', '.join(no_stats[:3])}{' and more' if len(no_stats) > 3 else ''} keep{'s' if one else ''} no "
                f"running statistics (track_running_stats=False): {'it normalises' if one else 'they normalise'} each "
                "batch by its own mean and variance, which int8 "
                "cannot do (static and QAT quantization fold a BatchNorm's running mean and variance into the layer "
                "before it). Give the model running statistics (track_running_stats=True, then a pass over "
                "training data in train mode), or use --method dynamic (Linear, LSTM and GRU layers only)") from None
        raise QtappError(f"FX graph mode cannot trace this model ({type(exc).__name__}: {first_line(exc)}): static "
                         "and QAT quantization need a forward that torch.fx can follow (no Python if/for on "
                         "tensor values); --method dynamic quantizes its Linear, LSTM and GRU layers without "
                         "tracing") from None


class FxStaticBackend:
    name = "fx"
    qat = False

    def prepare_and_calibrate(self, model, recipe, inventory, example, calib, cancel):
        from torch.ao.quantization.quantize_fx import prepare_fx

        set_engine(recipe.engine)
        # Observe every candidate layer, so any float set can be converted later without recalibrating.
        with quiet_ao(), _untraceable_named(model), forgetting_ao_models():
            prepared = prepare_fx(copy.deepcopy(model).eval(), fx_mapping(recipe), example)
        bound_clamped_observers(prepared)  # a conv before a ReLU6 ranges over [0, 6] at most
        with quiet_ao():
            points = _fx_calibrated_points(prepared, inventory)
            stats = yield from feed_batches(prepared, calib, cancel)
        return Calibrated(self, recipe, model, tuple(inventory.heads), prepared, frozenset(), stats, points=points)

    def convert(self, calibrated, float_heads, recipe):
        from torch.ao.quantization.quantize_fx import convert_fx

        set_engine(calibrated.recipe.engine)
        # Given a mapping, convert_fx deep-copies the model once more and re-checks every qconfig
        # (~+40% on resnet18); when the float set is the one prepared with, prepare's own mapping
        # already says the same thing, so pass none. The mapping is the calibration's own: convert_fx
        # refuses a qconfig other than the one prepared with; the range choice lives in the observers.
        mapping = None if set(float_heads) == set(calibrated.float_at_prepare) else \
            fx_mapping(calibrated.recipe, sorted(float_heads), qat=self.qat, points=calibrated.point_map)
        model = copy.deepcopy(calibrated.prepared)
        choose(model, calibrated.points, recipe.observer, recipe.overrides)
        float_rewrite(model, float_heads)
        with quiet_ao(), forgetting_ao_models():
            qmodel = convert_fx(model, qconfig_mapping=mapping)
        return requantize_weights(qmodel, model, calibrated.points, recipe, float_heads)

    def reference(self, model):
        from torch.ao.quantization.quantize_fx import fuse_fx

        with quiet_ao():
            return fuse_fx(copy.deepcopy(model).eval())


def float_rewrite(prepared, float_heads) -> None:
    """Rewrite, in place, the copy about to be converted (never the stored calibration), so that convert_fx
    makes what float computes:

    - each float-kept module torch.ao would convert to int8 anyway (points.FLOAT_REWRITES: PReLU, whose
      float setting convert_fx ignores) is swapped for one of another type computing the same: convert_fx
      then leaves it float between a dequantize and a quantize;
    - the known int8 kernel defects that a conversion corrects (qconfigs.KERNEL_CORRECTIONS; the others
      live in the qconfig mapping): see `kernel_rewrite`.
    """
    import torch.nn as nn

    for name in float_heads:
        try:
            module = prepared.get_submodule(name)
        except AttributeError:
            continue
        if type(module) is nn.PReLU:
            _set_submodule(prepared, name, FloatPReLU(module.weight))
    kernel_rewrite(prepared, float_heads)


def kernel_rewrite(prepared, float_heads, engine: str | None = None) -> None:
    """The int8 kernel defects corrected at conversion, on the copy about to be converted (`engine`: the
    one it is converted for, default torch's current one, which convert sets):

    - AvgPool1d/2d with count_include_pad=False (and padding) or divisor_override, on qnnpack: QNNPACK's
      average pool ignores both; swapped for rewrites.FloatAvgPool (float pool on the dequantized int8
      input, rounded back to the input's own scale and zero point: exact); F.avg_pool1d/2d calls likewise
      call rewrites.avg_pool1d/2d;
    - EmbeddingBag mode "max" (all engines; the int8 kernel sums whatever the mode): swapped for
      rewrites.FloatEmbeddingBag, so it stays float;
    - EmbeddingBag mode "mean" (all engines): stays int8, called with per-sample weights 1 / bag size
      (rewrites.bag_mean_weights), so the kernel's sum is the bag's mean.
    A module kept float (in `float_heads`) is left to convert_fx."""
    import torch
    import torch.nn as nn

    engine = engine or torch.backends.quantized.engine
    kept = set(float_heads)
    means, retargeted = [], False
    for node in prepared.graph.nodes:
        if node.op == "call_function" and engine == "qnnpack":
            retargeted = _float_functional_avg_pool(node) or retargeted
        if node.op != "call_module":
            continue
        module = prepared.get_submodule(node.target)
        if engine == "qnnpack" and type(module) in (nn.AvgPool1d, nn.AvgPool2d) and qnnpack_avg_pool_differs(module):
            _set_submodule(prepared, node.target, FloatAvgPool(module))
        elif type(module) is nn.EmbeddingBag and node.target not in kept \
                and getattr(module, "qconfig", None) is not None:  # converted to int8: not kept float
            if module.mode == "max":
                _set_submodule(prepared, node.target, FloatEmbeddingBag(module))
            elif module.mode == "mean":
                means.append((node, module))
    for node, module in means:
        _weigh_bag_mean(prepared, node, module)
    for node, module in means:
        module.mode = "sum"  # what it computes now, with the weights
    if means or retargeted:
        prepared.graph.lint()
        prepared.recompile()


def qnnpack_avg_pool_differs(pool) -> bool:
    """True when QNNPACK's int8 average pool (the qnnpack engine's, taken when ceil_mode is False) computes
    something else than `pool` (an nn.AvgPool1d/2d): it divides every window by its full size, so
    count_include_pad=False with padding, and any divisor_override, are lost."""
    if pool.ceil_mode:
        return False
    padding = pool.padding if isinstance(pool.padding, (tuple, list)) else (pool.padding,)
    return (not pool.count_include_pad and any(int(p) != 0 for p in padding)) \
        or getattr(pool, "divisor_override", None) is not None


def _float_functional_avg_pool(node) -> bool:
    """F.avg_pool1d/2d calls that QNNPACK computes wrong (qnnpack_avg_pool_differs) call the same pool
    under rewrites.avg_pool1d/2d instead, every argument given: torch.ao has no int8 pattern for those,
    so convert_fx leaves them float between a dequantize and a quantize (with the shared input range).
    A call whose arguments are computed in the graph is left as it is."""
    import types

    import torch.fx
    import torch.nn.functional as F

    if node.target is F.avg_pool2d:
        dims, names, target = 2, ("input", "kernel_size", "stride", "padding", "ceil_mode", "count_include_pad",
                                  "divisor_override"), rewrites.avg_pool2d
    elif node.target is F.avg_pool1d:
        dims, names, target = 1, ("input", "kernel_size", "stride", "padding", "ceil_mode",
                                  "count_include_pad"), rewrites.avg_pool1d
    else:
        return False
    args = {"stride": None, "padding": 0, "ceil_mode": False, "count_include_pad": True, "divisor_override": None,
            **dict(zip(names, node.args)), **node.kwargs}
    if any(isinstance(v, torch.fx.Node) for k, v in args.items() if k != "input") or "kernel_size" not in args:
        return False

    def ints(v):
        return [int(v)] * dims if isinstance(v, int) else [int(i) for i in v]

    kernel, padding = ints(args["kernel_size"]), ints(args["padding"])
    stride = ints(args["stride"]) if args["stride"] not in (None, [], ()) else kernel
    pool = types.SimpleNamespace(ceil_mode=bool(args["ceil_mode"]), padding=tuple(padding),
                                 count_include_pad=bool(args["count_include_pad"]),
                                 divisor_override=args.get("divisor_override"))
    if not qnnpack_avg_pool_differs(pool):
        return False
    node.target = target
    node.args = (args["input"], kernel, stride, padding, pool.ceil_mode, pool.count_include_pad) \
        + ((pool.divisor_override,) if dims == 2 else ())
    node.kwargs = {}
    return True


def _weigh_bag_mean(prepared, node, bag) -> None:
    """Call the EmbeddingBag of `node` with per-sample weights that make its sum each bag's mean."""
    args, kwargs = list(node.args), dict(node.kwargs)
    ids = args[0] if args else kwargs.get("input")
    offsets = args[1] if len(args) > 1 else kwargs.get("offsets")
    padding = -1 if bag.padding_idx is None else int(bag.padding_idx)
    with prepared.graph.inserting_before(node):
        weights = prepared.graph.call_function(bag_mean_weights, (ids, offsets, padding, bool(bag.include_last_offset)))
    node.args, node.kwargs = (ids, offsets, weights), {}
    # convert_fx looks every node up in the observed model's tables: the new one runs float, where the bag is
    # (qconfigs.fx_mapping says None for it too, for a conversion given a mapping).
    attrs = prepared.meta.get("_observed_graph_module_attrs")
    if attrs is not None:
        caller = node.target.rpartition(".")[0]  # the call is made in the bag's parent module
        attrs.node_name_to_scope = {**attrs.node_name_to_scope,
                                    weights.name: (caller, type(prepared.get_submodule(caller)))}
        attrs.node_name_to_qconfig = {**attrs.node_name_to_qconfig, weights.name: None}


def _set_submodule(root, path: str, module) -> None:
    parent, _, leaf = path.rpartition(".")
    setattr(root.get_submodule(parent) if parent else root, leaf, module)


class FxQatBackend(FxStaticBackend):
    """Quantization-aware training: FX prepare_qat, a short fine-tune, then convert."""

    name = "qat"
    qat = True

    def prepare_and_calibrate(self, model, recipe, inventory, example, calib, cancel):
        import torch
        from torch.ao.quantization import disable_observer
        from torch.ao.quantization.quantize_fx import prepare_qat_fx

        set_engine(recipe.engine)
        float_heads = frozenset(inventory.float_layers)
        teacher = model.eval()
        points = {p.name: p for p in inventory.points}
        with quiet_ao(), _untraceable_named(model), forgetting_ao_models():
            prepared = prepare_qat_fx(copy.deepcopy(model).train(),
                                      fx_mapping(recipe, sorted(float_heads), qat=True, points=points), example)
        with quiet_ao():
            calibrated_points = _fx_calibrated_points(prepared, inventory)

        def settle():  # last epoch: settle BN statistics and quantization ranges (the usual QAT schedule)
            prepared.apply(torch.ao.nn.intrinsic.qat.freeze_bn_stats)
            prepared.apply(disable_observer)

        stats = yield from qat_train(prepared, teacher, calib, recipe, cancel, settle, quiet_ao)
        prepared.eval()
        return Calibrated(self, recipe, model, tuple(inventory.heads), prepared, float_heads, stats,
                          points=calibrated_points)


class EagerStaticBackend:
    """Eager mode for torchvision's quantizable models: fuse_model(), prepare, calibrate, convert.
    A float island is wrapped as DeQuantStub -> layer -> QuantStub, the stub reusing the layer's own
    calibrated output observer, so islands change without recalibrating."""

    name = "eager"
    qat = False

    def prepare_and_calibrate(self, model, recipe, inventory, example, calib, cancel):
        from torch.ao.quantization import prepare

        set_engine(recipe.engine)
        prepared = self.reference(model)
        prepared.qconfig = static_qconfig(recipe)
        with quiet_ao():
            prepare(prepared, inplace=True)
            # Listing the points runs one example: on a copy, so calibration sees only calibration data.
            points = merge_classification(eager_points(copy.deepcopy(prepared), example), inventory.points)
            stats = yield from feed_batches(prepared, calib, cancel)
        return Calibrated(self, recipe, model, tuple(inventory.heads), prepared, frozenset(), stats,
                          points=tuple(points))

    def convert(self, calibrated, float_heads, recipe):
        import torch.nn as nn
        from torch.ao.quantization import DeQuantStub, QuantStub, convert

        set_engine(calibrated.recipe.engine)
        model = copy.deepcopy(calibrated.prepared)
        choose(model, calibrated.points, recipe.observer, recipe.overrides)
        qconfig = model.qconfig
        for name in float_heads:
            parent_name, _, attr = name.rpartition(".")
            parent = model.get_submodule(parent_name) if parent_name else model
            layer = getattr(parent, attr)
            observer = layer.activation_post_process
            del layer.activation_post_process
            layer._forward_hooks.clear()
            layer._forward_pre_hooks.clear()
            _clear_qconfig(layer)
            dq, q = DeQuantStub(), QuantStub()
            dq.qconfig = q.qconfig = qconfig
            q.activation_post_process = observer
            setattr(parent, attr, nn.Sequential(dq, layer, q))
        reference = copy.deepcopy(model)  # the float (fused) weights, for a per-point weight override
        with quiet_ao():
            qmodel = convert(model, inplace=False)
        return requantize_weights(qmodel, reference, calibrated.points, recipe, float_heads, eager=True)

    def reference(self, model):
        fused = copy.deepcopy(model).eval()
        with quiet_ao():
            fused.fuse_model(is_qat=False)
        return fused


def _clear_qconfig(module) -> None:
    for m in module.modules():
        m.qconfig = None


class DynamicBackend:
    """Dynamic quantization: weights int8 (or float16), activations quantized on the fly."""

    name = "dynamic"
    qat = False

    def prepare_and_calibrate(self, model, recipe, inventory, example, calib, cancel):
        set_engine(recipe.engine)
        yield Stage("calibrate", 1, cancel).step(1, "dynamic quantization needs no calibration")
        return Calibrated(self, recipe, model, tuple(inventory.heads), None, frozenset(), {"batches": 0, "samples": 0},
                          points=tuple(inventory.points))

    def convert(self, calibrated, float_heads, recipe):
        import torch
        from torch.ao.quantization import (
            default_dynamic_qconfig,
            float16_dynamic_qconfig,
            float_qparams_weight_only_qconfig,
            per_channel_dynamic_qconfig,
            quantize_dynamic,
        )

        set_engine(recipe.engine)
        modules = dict(calibrated.model.named_modules())
        embedding = (torch.nn.Embedding, torch.nn.EmbeddingBag)

        def qconfig_of(head):
            o = recipe.overrides.get(head)
            dtype = o.dtype if o is not None and o.dtype else recipe.dtype
            # the recipe's per-channel setting, as for static weights (a transformer's Linear with one
            # channel 43x the median: 10.0 -> 13.3 dB)
            per_channel = o.per_channel if o is not None and o.per_channel is not None else recipe.per_channel
            if isinstance(modules[head], embedding):
                # int8 rows with a float scale each; float16 has no embedding kernel: they stay float. A bag
                # of mode "max" too: torch's int8 EmbeddingBag sums whatever its mode (qconfigs.KERNEL_CORRECTIONS)
                if dtype == "float16" or getattr(modules[head], "mode", "sum") == "max":
                    return None
                return float_qparams_weight_only_qconfig
            if dtype == "float16":
                return float16_dynamic_qconfig
            return per_channel_dynamic_qconfig if per_channel else default_dynamic_qconfig

        spec = {h: qconfig_of(h) for h in calibrated.heads if h not in set(float_heads)}
        spec = {h: q for h, q in spec.items() if q is not None}
        dtype = torch.float16 if recipe.dtype == "float16" else torch.qint8
        with quiet_ao():
            quantized = quantize_dynamic(copy.deepcopy(calibrated.model).eval(), spec, dtype=dtype)
        _mean_bags_weighted(quantized, {h: modules[h] for h in spec})
        if any(isinstance(m, torch.nn.MultiheadAttention) for m in quantized.modules()):
            # The attention fast path reads its Linear layers' weights as tensors; dynamically quantized
            # Linears hold packed params instead ("'function' object has no attribute 'device'").
            torch.backends.mha.set_fastpath_enabled(False)
        return quantized

    def reference(self, model):
        return model


def _mean_bags_weighted(quantized, floats: dict) -> None:
    """Each int8 EmbeddingBag of mode "mean" wrapped so its (summing) kernel gets weights 1 / bag size."""
    import torch.nn as nn

    for name, float_module in floats.items():
        if type(float_module) is nn.EmbeddingBag and float_module.mode == "mean":
            parent, _, leaf = name.rpartition(".")
            owner = quantized.get_submodule(parent) if parent else quantized
            setattr(owner, leaf, MeanEmbeddingBag(getattr(owner, leaf), float_module.padding_idx,
                                                  float_module.include_last_offset))


def requantize_weights(qmodel, reference, points, recipe, float_heads, eager: bool = False):
    """Layers whose override asks for other weight scales than the recipe's (per-channel or one per
    tensor): their int8 weights rounded again from `reference`'s float (BatchNorm-folded) weights."""
    import torch

    for p in points:
        o = recipe.overrides.get(p.name)
        if o is None or o.per_channel is None or o.per_channel == recipe.per_channel or not p.weighted \
                or p.name in float_heads:
            continue
        path = p.name if eager else p.target
        qmod, fmod = qmodel.get_submodule(path), reference.get_submodule(path)
        if not hasattr(qmod, "set_weight_bias"):
            raise UsageError(f"override {p.name!r}: {type(qmod).__name__} takes no other weight scales")
        w = fmod.weight if isinstance(getattr(fmod, "weight", None), torch.Tensor) else next(iter(fmod.children())).weight
        observer = weight_observer(o.per_channel)()
        with quiet_ao():
            observer(w.detach())
            scale, zp = observer.calculate_qparams()
            if o.per_channel:
                qw = torch.quantize_per_channel(w.detach(), scale.double(), zp.long(), 0, torch.qint8)
            else:
                qw = torch.quantize_per_tensor(w.detach(), float(scale), int(zp), torch.qint8)
            qmod.set_weight_bias(qw, qmod.bias())
    return qmodel


def _fx_calibrated_points(prepared, inventory) -> tuple:
    """The points of the model being calibrated, classified as the inventory found them."""
    return tuple(merge_classification(fx_points(prepared), inventory.points))


