"""Quantization backends behind one interface, so a torchao / PT2E backend can be added later.

A backend does two things:
  prepare_and_calibrate(...)  a job (generator) that yields Progress per batch and returns a
                              `Calibrated` state; the float model is never modified
  convert(calibrated, float_heads)
                              an int8 model with exactly `float_heads` kept in float; called again
                              with another set it reconverts WITHOUT recalibrating.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any, Protocol

from ._torchao_compat import quiet_ao
from .errors import QtappError, UsageError, first_line
from .progress import CancelToken, Job, Stage


@dataclass
class Calibrated:
    backend: "QuantBackend"
    recipe: Any
    model: Any  # the float model it came from (untouched)
    heads: tuple  # every toggle target of the inventory it was calibrated with
    prepared: Any  # observed (or fake-quantized, for QAT) model; None for dynamic
    float_at_prepare: frozenset = frozenset()
    stats: dict = field(default_factory=dict)  # batches, samples, train losses ...
    key: str = ""  # the recipe's calibration_key(): a recipe with another key needs a new calibration
    data: Any = None  # DataFacts of the calibration source
    points: tuple = ()  # QuantPoint of the prepared model, in graph order

    @property
    def point_map(self) -> dict:
        return {p.name: p for p in self.points}

    def convert(self, float_heads):
        unknown = sorted(set(float_heads) - set(self.heads))
        if unknown:
            raise UsageError(f"not layers of this model's inventory: {', '.join(unknown)}")
        return self.backend.convert(self, float_heads)

    def convert_checked(self, float_heads, check_inputs=None) -> tuple[Any, dict[str, str]]:
        """Convert with `float_heads` float; where torch fails to keep a point float (convert or the first
        forward raises), find which, convert that one in int8 instead, and say why:
        (model, {point: reason it stayed int8})."""
        import torch

        def attempt(heads):
            model = self.convert(heads)
            if check_inputs is not None:
                with torch.no_grad(), quiet_ao():
                    model(*check_inputs)
            return model

        float_heads = list(float_heads)
        try:
            return attempt(float_heads), {}
        except UsageError:
            raise
        except Exception as exc:  # noqa: BLE001 - torch's failure, traced to the point that caused it below
            first_error = exc
        refused = {}
        for name in float_heads:
            try:
                attempt([name])
            except Exception as exc:  # noqa: BLE001 - this point cannot be kept float: say so on it
                refused[name] = f"torch could not keep it float ({type(exc).__name__}: {first_line(exc)})"
        if not refused:
            raise first_error
        return attempt([h for h in float_heads if h not in refused]), refused


class QuantBackend(Protocol):
    name: str

    def prepare_and_calibrate(self, model, recipe, inventory, example, calib, cancel: CancelToken) -> Job[Calibrated]: ...

    def convert(self, calibrated: Calibrated, float_heads) -> Any: ...

    def reference(self, model) -> Any:
        """The float model the converted one is compared with, layer by layer (fused where fusion applies)."""


def set_engine(engine: str) -> None:
    import torch

    if engine not in torch.backends.quantized.supported_engines:
        raise QtappError(f"engine {engine!r} is not available in this torch build "
                         f"(available: {', '.join(torch.backends.quantized.supported_engines)})")
    torch.backends.quantized.engine = engine


def _feed(model, calib, cancel, stage_name="calibrate") -> Job[dict]:
    import torch

    stage = Stage(stage_name, len(calib), cancel)
    samples = batches = 0
    yield stage.step(0, f"0/{len(calib)} batches")
    with torch.no_grad():
        for inputs, _y in calib:
            cancel.check()
            try:
                model(*inputs)
            except RuntimeError as exc:
                if "finite" not in str(exc) and "nan" not in str(exc).lower():
                    raise
                # A histogram observer meets NaN/Inf activations: the model, not the data (checked on
                # reading), produced them on this batch.
                raise QtappError(f"batch {batches + 1} of {calib.description} makes the float model produce "
                                 "NaN/Inf activations, which cannot be calibrated: check the model's weights "
                                 "and the input scaling") from None
            batches += 1
            samples += len(inputs[0])
            yield stage.step(batches, f"{batches}/{len(calib)} batches, {samples} samples")
    return {"batches": batches, "samples": samples}


class FxStaticBackend:
    name = "fx"

    def prepare_and_calibrate(self, model, recipe, inventory, example, calib, cancel):
        from torch.ao.quantization.quantize_fx import prepare_fx

        from .qconfigs import fx_mapping

        set_engine(recipe.engine)
        # Observe every candidate layer, so any float set can be converted later without recalibrating.
        with quiet_ao():
            prepared = prepare_fx(copy.deepcopy(model).eval(), fx_mapping(recipe), example)
            points = _fx_calibrated_points(prepared, inventory)
            stats = yield from _feed(prepared, calib, cancel)
        return Calibrated(self, recipe, model, tuple(inventory.heads), prepared, frozenset(), stats, points=points)

    def convert(self, calibrated, float_heads):
        from torch.ao.quantization.quantize_fx import convert_fx

        from .qconfigs import fx_mapping

        recipe = calibrated.recipe
        set_engine(recipe.engine)
        # Given a mapping, convert_fx deep-copies the model once more and re-checks every qconfig
        # (~+40% on resnet18); when the float set is the one prepared with, prepare's own mapping
        # already says the same thing, so pass none.
        mapping = None if set(float_heads) == set(calibrated.float_at_prepare) else \
            fx_mapping(recipe, sorted(float_heads), qat=self.name == "qat", points=calibrated.point_map)
        with quiet_ao():
            return convert_fx(copy.deepcopy(calibrated.prepared), qconfig_mapping=mapping)

    def reference(self, model):
        from torch.ao.quantization.quantize_fx import fuse_fx

        with quiet_ao():
            return fuse_fx(copy.deepcopy(model).eval())


class FxQatBackend(FxStaticBackend):
    """Quantization-aware training: FX prepare_qat, a short fine-tune, then convert."""

    name = "qat"

    def prepare_and_calibrate(self, model, recipe, inventory, example, calib, cancel):
        import torch
        import torch.nn.functional as F
        from torch.ao.quantization import disable_observer
        from torch.ao.quantization.quantize_fx import prepare_qat_fx

        from .qconfigs import fx_mapping

        set_engine(recipe.engine)
        float_heads = frozenset(inventory.float_layers)
        teacher = model.eval()
        points = {p.name: p for p in inventory.points}
        with quiet_ao():
            prepared = prepare_qat_fx(copy.deepcopy(model).train(),
                                      fx_mapping(recipe, sorted(float_heads), qat=True, points=points), example)
            calibrated_points = _fx_calibrated_points(prepared, inventory)
        opt = torch.optim.SGD(prepared.parameters(), lr=recipe.qat.lr, momentum=0.9)
        epochs, per_epoch = recipe.qat.epochs, len(calib)
        stage = Stage("QAT fine-tune", epochs * per_epoch, cancel)
        losses, samples, step = [], 0, 0
        yield stage.step(0, f"epoch 1/{epochs}")
        for epoch in range(epochs):
            if epochs > 1 and epoch == epochs - 1:
                # Last epoch: settle BN statistics and quantization ranges (the usual QAT schedule).
                prepared.apply(torch.ao.nn.intrinsic.qat.freeze_bn_stats)
                prepared.apply(disable_observer)
            running = 0.0
            for inputs, y in calib:
                cancel.check()
                with quiet_ao():
                    out = prepared(*inputs)
                if y is not None:
                    loss = F.cross_entropy(out, y)
                else:  # no labels: distil from the float model's own outputs
                    with torch.no_grad():
                        target = F.softmax(teacher(*inputs), dim=-1)
                    loss = F.kl_div(F.log_softmax(out, dim=-1), target, reduction="batchmean")
                opt.zero_grad()
                loss.backward()
                opt.step()
                running += loss.item()
                samples += len(inputs[0])
                step += 1
                yield stage.step(step, f"epoch {epoch + 1}/{epochs}, loss {loss.item():.4f}")
            losses.append(running / max(per_epoch, 1))
        prepared.eval()
        return Calibrated(self, recipe, model, tuple(inventory.heads), prepared, float_heads,
                          {"batches": step, "samples": samples, "epoch_losses": losses,
                           "distilled": not calib.has_labels}, points=calibrated_points)

    def convert(self, calibrated, float_heads):
        missing = sorted(calibrated.float_at_prepare - set(float_heads))
        if missing:
            raise UsageError(f"QAT trained {', '.join(missing)} in float; quantizing it needs another QAT run")
        return super().convert(calibrated, float_heads)


class EagerStaticBackend:
    """Eager mode for torchvision's quantizable models: fuse_model(), prepare, calibrate, convert.
    A float island is wrapped as DeQuantStub -> layer -> QuantStub, the stub reusing the layer's own
    calibrated output observer, so islands change without recalibrating."""

    name = "eager"

    def prepare_and_calibrate(self, model, recipe, inventory, example, calib, cancel):
        from torch.ao.quantization import prepare

        from .qconfigs import static_qconfig

        from .points import eager_points, merge_classification

        set_engine(recipe.engine)
        prepared = self.reference(model)
        prepared.qconfig = static_qconfig(recipe)
        with quiet_ao():
            prepare(prepared, inplace=True)
            # Listing the points runs one example: on a copy, so calibration sees only calibration data.
            points = merge_classification(eager_points(copy.deepcopy(prepared), example), inventory.points)
            stats = yield from _feed(prepared, calib, cancel)
        return Calibrated(self, recipe, model, tuple(inventory.heads), prepared, frozenset(), stats,
                          points=tuple(points))

    def convert(self, calibrated, float_heads):
        import torch.nn as nn
        from torch.ao.quantization import DeQuantStub, QuantStub, convert

        set_engine(calibrated.recipe.engine)
        model = copy.deepcopy(calibrated.prepared)
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
        with quiet_ao():
            return convert(model, inplace=False)

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

    def prepare_and_calibrate(self, model, recipe, inventory, example, calib, cancel):
        set_engine(recipe.engine)
        yield Stage("calibrate", 1, cancel).step(1, "dynamic quantization needs no calibration")
        return Calibrated(self, recipe, model, tuple(inventory.heads), None, frozenset(), {"batches": 0, "samples": 0},
                          points=tuple(inventory.points))

    def convert(self, calibrated, float_heads):
        import torch
        from torch.ao.quantization import default_dynamic_qconfig, float16_dynamic_qconfig, quantize_dynamic

        recipe = calibrated.recipe
        set_engine(recipe.engine)
        from torch.ao.quantization import float_qparams_weight_only_qconfig

        qconfig = float16_dynamic_qconfig if recipe.dtype == "float16" else default_dynamic_qconfig
        modules = dict(calibrated.model.named_modules())
        # Embeddings: int8 rows with a float scale each (float16 has no embedding kernel: they stay float).
        embedding = (torch.nn.Embedding, torch.nn.EmbeddingBag)
        spec = {h: float_qparams_weight_only_qconfig if isinstance(modules[h], embedding) else qconfig
                for h in calibrated.heads if h not in set(float_heads)
                and not (recipe.dtype == "float16" and isinstance(modules[h], embedding))}
        dtype = torch.float16 if recipe.dtype == "float16" else torch.qint8
        with quiet_ao():
            quantized = quantize_dynamic(copy.deepcopy(calibrated.model).eval(), spec, dtype=dtype)
        if any(isinstance(m, torch.nn.MultiheadAttention) for m in quantized.modules()):
            # The attention fast path reads its Linear layers' weights as tensors; dynamically quantized
            # Linears hold packed params instead ("'function' object has no attribute 'device'").
            torch.backends.mha.set_fastpath_enabled(False)
        return quantized

    def reference(self, model):
        return model


def _fx_calibrated_points(prepared, inventory) -> tuple:
    """The points of the model being calibrated, classified as the inventory found them."""
    from .points import fx_points, merge_classification

    return tuple(merge_classification(fx_points(prepared), inventory.points))


def backend_for(method: str, mode: str) -> QuantBackend:
    if method == "dynamic":
        return DynamicBackend()
    if method == "qat":
        return FxQatBackend()
    return EagerStaticBackend() if mode == "eager" else FxStaticBackend()
