"""What every backend shares: the `Calibrated` model a backend returns (converted again for each float
set without recalibrating), the `QuantBackend` interface, the engine switch, feeding calibration batches
and the QAT training loop."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Any, Protocol

from ..base.compat import quiet_ao
from ..base.errors import QtappError, UsageError, first_line
from ..base.progress import CancelToken, Job, Stage
from ..base.tensors import first_tensor
from .observers import freeze_all


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

    def convert(self, float_heads, recipe=None):
        """The int8 model with `float_heads` float; `recipe` (default: the calibration's) gives what a
        conversion may choose without recalibrating: the activation range and the per-point overrides."""
        unknown = sorted(set(float_heads) - set(self.heads))
        if unknown:
            raise UsageError(f"not layers of this model's inventory: {', '.join(unknown)}")
        trained_float = sorted(self.float_at_prepare - set(float_heads)) if self.backend.qat else []
        if trained_float:  # QAT trained them in float: their int8 ranges and weights were never learned
            raise UsageError(f"QAT trained {', '.join(trained_float)} in float; quantizing it needs another QAT run")
        return self.backend.convert(self, float_heads, recipe or self.recipe)

    def convert_checked(self, float_heads, check_inputs=None, recipe=None) -> tuple[Any, dict[str, str]]:
        """Convert with `float_heads` float; where torch fails to keep a point float (convert or the first
        forward raises), find which, convert that one in int8 instead, and say why:
        (model, {point: reason it stayed int8})."""

        def attempt(heads):
            model = self.convert(heads, recipe)
            if check_inputs is not None:
                _run_silently(model, check_inputs)
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
        if refused:
            try:
                return attempt([h for h in float_heads if h not in refused]), refused
            except Exception as exc:  # noqa: BLE001 - named below like any other int8 model that cannot run
                first_error = exc
        where = getattr(first_error, "qtapp_where", None)
        raise QtappError(f"the int8 model torch.ao built for this model fails to run: {type(first_error).__name__}: "
                         f"{first_line(first_error)}" + (f" (at `{where}` of its int8 graph)" if where else "")
                         + ". Keep the layers around that op float (--float), or use --method dynamic") from None


class QuantBackend(Protocol):
    name: str
    qat: bool  # trains: the layers float at prepare time stay float (Calibrated.convert refuses otherwise)

    def prepare_and_calibrate(self, model, recipe, inventory, example, calib, cancel: CancelToken) -> Job[Calibrated]: ...

    def convert(self, calibrated: Calibrated, float_heads, recipe) -> Any: ...

    def reference(self, model) -> Any:
        """The float model the converted one is compared with, layer by layer (fused where fusion applies)."""


def batchnorms_without_stats(model) -> list[str]:
    import torch.nn as nn

    return [f"{name} ({type(m).__name__})" for name, m in model.named_modules()
            if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.running_mean is None]


def _run_silently(model, inputs):
    """Run an FX GraphModule with torch's own "Call using an FX-traced Module" print kept out of the
    user's terminal; a failure is raised with the generated line that failed."""
    import io

    import torch

    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err), torch.no_grad(), quiet_ao():
            model(*inputs)
    except Exception as exc:  # noqa: BLE001 - re-raised with where it failed
        lines = [line.strip() for line in err.getvalue().splitlines()]
        here = next((i for i, line in enumerate(lines) if "<--- HERE" in line), None)  # torch marks the line
        code = [line for line in lines[:here] if "=" in line and "(" in line] if here is not None else []
        exc.qtapp_where = code[-1].split(";")[0] if code else None
        raise


def set_engine(engine: str) -> None:
    import torch

    if engine not in torch.backends.quantized.supported_engines:
        raise QtappError(f"engine {engine!r} is not available in this torch build "
                         f"(available: {', '.join(torch.backends.quantized.supported_engines)})")
    torch.backends.quantized.engine = engine


def feed_batches(model, calib, cancel, stage_name="calibrate") -> Job[dict]:
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

    freeze_all(model)  # every range choice worked out once, not at each conversion
    return {"batches": batches, "samples": samples}


def qat_train(prepared, teacher, calib, recipe, cancel, before_last_epoch=None, quiet=contextlib.nullcontext):
    """The QAT fine-tune both backends run: SGD over the calibration batches for recipe.qat.epochs, on
    the labels, or without labels by distillation from the float `teacher`; the stats of the run."""
    import torch
    import torch.nn.functional as F

    opt = torch.optim.SGD(prepared.parameters(), lr=recipe.qat.lr, momentum=0.9)
    epochs, per_epoch = recipe.qat.epochs, len(calib)
    stage = Stage("QAT fine-tune", epochs * per_epoch, cancel)
    losses, samples, step, labelled = [], 0, 0, None
    yield stage.step(0, f"epoch 1/{epochs}")
    for epoch in range(epochs):
        if before_last_epoch is not None and epochs > 1 and epoch == epochs - 1:
            before_last_epoch()
        running = 0.0
        for inputs, y in calib:
            cancel.check()
            with quiet():  # a model returning (logits, extras) trains on its first output, the one compared
                out = first_tensor(prepared(*inputs), dequantize=False)
            if labelled is None:  # labels of another task (or ids past the outputs): distil instead
                labelled = bool(calib.has_labels and getattr(calib, "class_ids", False)
                                and (calib.label_max is None or calib.label_max < out.shape[-1]))
            if labelled and y is not None:
                loss = F.cross_entropy(out, y.to(torch.int64))
            else:  # no labels: distil from the float model's own outputs
                with torch.no_grad():
                    target = F.softmax(first_tensor(teacher(*inputs), dequantize=False), dim=-1)
                loss = F.kl_div(F.log_softmax(out, dim=-1), target, reduction="batchmean")
            opt.zero_grad()
            loss.backward()
            opt.step()
            running += loss.item()
            samples += len(inputs[0])
            step += 1
            yield stage.step(step, f"epoch {epoch + 1}/{epochs}, loss {loss.item():.4f}")
        losses.append(running / max(per_epoch, 1))
    return {"batches": step, "samples": samples, "epoch_losses": losses, "distilled": not labelled}
