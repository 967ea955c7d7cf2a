"""Check the float model against its data before any long work, and say plainly what does not fit.

The first samples of one batch through the float model, at batch 1 and 2: the output must be a
tensor (or a tuple/list/dict whose first leaf is one) with the batch first, and finite. Labels are not
checked against the output here: labels of another task are data (the comparison withholds accuracy where
they are not the classifier's class ids, and says why). QAT needs logits. Each failure names the model, the data source and what to do, instead of a torch error deep
inside calibration.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..base.compat import quiet_ao
from ..base.errors import QtappError, first_line
from ..base.tensors import first_tensor


@dataclass(frozen=True)
class ProbeResult:
    output_shape: tuple  # of the first output tensor, at the data's batch size
    classes: int | None  # the classifier's number of classes, when the output is (N, C)


def batch_inputs(x) -> tuple:
    """A data batch's model inputs as a tuple (one tensor per model input)."""
    return tuple(x) if isinstance(x, (tuple, list)) else (x,)


def describe_output(out) -> str:
    if out is None:
        return "None"
    if isinstance(out, (tuple, list)):
        return f"a {type(out).__name__} of {len(out)} items"
    if isinstance(out, dict):
        return f"a dict with keys {', '.join(map(str, list(out)[:5]))}"
    return f"a {type(out).__name__}"


def probe_model(model, source, model_name: str, method: str = "static") -> ProbeResult:
    import torch

    x, _ = next(iter(source))
    # One sample, then two: enough to see a model that only works at batch 1, at a small fraction of a
    # calibration batch's cost (NaN on later samples is caught where they are used).
    inputs = tuple(t[:2] for t in batch_inputs(x))
    n = len(inputs[0])
    where = f"on {source.description}"
    with torch.no_grad(), quiet_ao():
        if n > 1:
            try:
                model(*(t[:1] for t in inputs))
            except Exception as exc:  # noqa: BLE001 - the user's model: any failure is reported as such
                raise QtappError(f"{model_name} fails on one sample {where}: {type(exc).__name__}: "
                                 f"{first_line(exc)}") from None
        try:
            out = model(*inputs)
        except Exception as exc:  # noqa: BLE001
            if n > 1:
                raise QtappError(f"{model_name} runs on one sample but fails on a batch of {n} {where}: "
                                 f"{type(exc).__name__}: {first_line(exc)}. Calibration and evaluation run "
                                 "in batches: make the model batch-agnostic, or give --batch-size 1") from None
            raise QtappError(f"{model_name} fails {where}: {type(exc).__name__}: {first_line(exc)}") from None
    tensor = first_tensor(out)
    if tensor is None:
        raise QtappError(f"{model_name}'s forward returns {describe_output(out)}, not a tensor: the comparison "
                         "needs a tensor output (or a tuple/list/dict whose first item is one), batch first")
    if tensor.dim() == 0:
        raise QtappError(f"{model_name}'s forward returns a scalar (a 0-d tensor): the comparison needs one "
                         f"output per sample, batch first (N x ...); the batch here has {n} samples")
    if tensor.shape[0] != n:
        raise QtappError(f"{model_name}'s output has {tensor.shape[0]} rows for a batch of {n} samples "
                         f"(output shape {tuple(tensor.shape)}): the output must be batch first")
    if not tensor.is_floating_point() and not tensor.is_complex():
        raise QtappError(f"{model_name}'s output is {tensor.dtype}, not floating point: quantization error "
                         "is measured on float outputs (return logits or features, not argmax ids)")
    bad = int((~torch.isfinite(tensor)).sum())
    if bad:
        raise QtappError(f"{model_name}'s float outputs hold {bad} NaN/Inf values out of {tensor.numel()} "
                         f"{where}: the float model itself is broken on this data (check the weights and "
                         "the input scaling); quantization cannot be measured against it")
    classes = tensor.shape[1] if tensor.dim() == 2 and tensor.shape[1] > 1 else None
    if method == "qat" and classes is None:
        raise QtappError(f"QAT fine-tunes on classification logits (N x classes), but {model_name}'s output "
                         f"is {tuple(tensor.shape)}: use static quantization for this model")
    return ProbeResult(tuple(tensor.shape), classes)
