"""Float versus quantized: output metrics, and a layer's float and int8 weights (the per-point errors are
static.py's and dynamic.py's)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from ..base.compat import quiet_ao
from ..base.errors import QtappError
from ..base.progress import CancelToken, Job, Stage
from ..base.tensors import first_tensor, sqnr_db
from .metrics import classifier_accuracy_meaningful, compute

SCATTER_POINTS = 4096


@dataclass
class OutputMetrics:
    sqnr_db: float | None
    cosine: float
    max_abs_error: float
    top1_agreement: float | None
    accuracy_float: float | None
    accuracy_quantized: float | None
    samples: int
    float_rms: float = 0.0  # root-mean-square of the float outputs: tells a dead (all ~0) output
    # Subsampled output values for plots (not in the JSON report).
    ref_values: object = field(default=None, repr=False)
    q_values: object = field(default=None, repr=False)
    metric: object = None  # metrics.MetricValue of the recipe's metric, if it names one
    accuracy_withheld: str | None = None  # why no accuracy is shown although there are labels
    # A classifier's distinct top-1 classes over the evaluation set, float and int8: an int8 model that
    # answers one class for every sample has collapsed, whatever its SQNR says.
    classes_float: int | None = None
    classes_quantized: int | None = None

    def to_json(self) -> dict:
        out = {k: getattr(self, k) for k in ("sqnr_db", "cosine", "max_abs_error", "top1_agreement",
                                             "accuracy_float", "accuracy_quantized", "samples")}
        out["metric"] = self.metric.to_json() if self.metric is not None else None
        out["accuracy_withheld"] = self.accuracy_withheld
        return out


MAX_METRIC_VALUES = 50_000_000  # output values kept for a metric over the whole evaluation set


def compare_outputs(float_model, q_model, data, cancel: CancelToken | None = None,
                    float_cache: list | None = None, metric: tuple | None = None) -> Job[OutputMetrics]:
    """`float_cache`, when given, holds the float model's output per batch: filled on the first
    comparison over `data`, reused by later ones (a reconversion only re-runs the int8 model).
    `metric`: (name, the user's function or None for a built-in), computed over the whole set.
    Accuracy is given only where it means something: labels, a classifier's (N, C) outputs, and a
    float top-1 clearly above chance on those labels."""
    import torch

    stage = Stage("evaluate", len(data), cancel)
    sig = noise = 0.0
    cos_sum, max_err, n, elems = 0.0, 0.0, 0, 0
    agree = correct_f = correct_q = 0
    classify, labelled = True, data.has_labels and getattr(data, "class_ids", False)
    refs, qs = [], []
    seen_f, seen_q = set(), set()
    whole_ref, whole_q, whole_y, kept = [], [], [], 0
    yield stage.step(0, "comparing outputs")
    with torch.no_grad(), quiet_ao():
        for i, (inputs, y) in enumerate(data):
            if float_cache is not None and i < len(float_cache):
                ref = float_cache[i]
            else:
                ref = first_tensor(float_model(*inputs)).float()
                if not bool(torch.isfinite(ref).all()):
                    raise QtappError(f"the float model's outputs hold {int((~torch.isfinite(ref)).sum())} NaN/Inf "
                                     f"values on batch {i + 1} of {data.description}: quantization error cannot "
                                     "be measured against them; check the model's weights and the input scaling")
                if float_cache is not None:
                    float_cache.append(ref)
            q = first_tensor(q_model(*inputs)).float()
            if ref.shape != q.shape:
                raise RuntimeError(f"quantized output shape {tuple(q.shape)} differs from float {tuple(ref.shape)}")
            diff = ref - q
            sig += float((ref * ref).sum())
            elems += ref.numel()
            noise += float((diff * diff).sum())
            max_err = max(max_err, float(diff.abs().max()))
            cos_sum += float(torch.nn.functional.cosine_similarity(ref.flatten(1), q.flatten(1), dim=1).sum())
            n += len(ref)
            classify = classify and ref.dim() == 2 and ref.shape[1] > 1
            if classify:
                agree += int((ref.argmax(1) == q.argmax(1)).sum())
                seen_f.update(ref.argmax(1).tolist())
                seen_q.update(q.argmax(1).tolist())
                if labelled and y is not None:
                    ids = y.to(torch.int64)
                    correct_f += int((ref.argmax(1) == ids).sum())
                    correct_q += int((q.argmax(1) == ids).sum())
            refs.append(ref.flatten())
            qs.append(q.flatten())
            if metric is not None:
                kept += ref.numel()
                if kept > MAX_METRIC_VALUES:
                    raise QtappError(f"metric {metric[0]} needs every output of the evaluation set, and "
                                     f"{data.description} gives more than {MAX_METRIC_VALUES:,} values: use fewer "
                                     "evaluation batches (a recipe's evaluation.batches)")
                whole_ref.append(ref)
                whole_q.append(q)
                whole_y.append(y)
            yield stage.step(i + 1, f"{n} samples")
    ref_all, q_all = torch.cat(refs), torch.cat(qs)
    if len(ref_all) > SCATTER_POINTS:
        idx = torch.randperm(len(ref_all), generator=torch.Generator().manual_seed(0))[:SCATTER_POINTS]
        ref_all, q_all = ref_all[idx], q_all[idx]
    accuracy, withheld = None, None
    classes = int(ref.shape[1]) if classify else None
    if data.has_labels and not labelled:  # labels of another task: data, but not what top-1 needs
        withheld = (f"no accuracy shown: {getattr(data, 'labels_are', '') or 'the labels are not class ids'} "
                    "(labels of another task); they reach a --metric function of yours as stored")
    elif classify and labelled and data.label_max is not None and data.label_max >= classes:
        withheld = (f"no accuracy shown: the labels go up to {data.label_max}, but the model outputs {classes} "
                    f"classes (ids 0..{classes - 1}): they are not its class ids; pass --metric with a metric that fits")
    elif classify and labelled:
        if classifier_accuracy_meaningful(correct_f / n, classes, n):
            accuracy = (correct_f / n, correct_q / n)
        else:
            withheld = (f"no accuracy shown: the float model's top-1 on these labels is {correct_f / n:.1%}, "
                        f"at chance level for {classes} outputs, so they are not its class ids (an embedding, or "
                        "labels of another task); pass --metric with a metric that fits")
    value = None
    if metric is not None and metric[0] == "top1" and accuracy is None:
        why = withheld.removeprefix("no accuracy shown: ") if withheld else (
            "the evaluation data has no labels" if not data.has_labels else
            f"the output ({'x'.join(map(str, ref.shape))}) is not a classifier's N x classes")
        raise QtappError(f"metric top1 cannot be scored: {why}")
    if metric is not None:
        labels = torch.cat(whole_y) if whole_y and all(t is not None for t in whole_y) else None
        value = compute(metric[0], metric[1], torch.cat(whole_ref), torch.cat(whole_q), labels, accuracy)
    return OutputMetrics(
        sqnr_db(sig, noise), cos_sum / n, max_err,
        agree / n if classify else None,
        accuracy[0] if accuracy else None, accuracy[1] if accuracy else None,
        n, math.sqrt(sig / max(elems, 1)), ref_all.numpy(), q_all.numpy(), value, withheld,
        len(seen_f) if classify else None, len(seen_q) if classify else None)


@dataclass
class WeightData:
    float_weight: object  # numpy, the (fused) float layer's weight
    dequantized: object | None  # numpy, None when the layer stays float
    qscheme: str | None = None
    scales: object | None = None  # numpy: one per output channel, or a single value
    zero_points: object | None = None
    axis: int | None = None
    qmin: int = -128
    qmax: int = 127


def _float_weight(m):
    import torch

    w = getattr(m, "weight", None)
    if isinstance(w, torch.Tensor):
        return w
    first = next(iter(m.children()), None)
    return _float_weight(first) if first is not None else None


def weight_data(ref_module, q_module) -> WeightData | None:
    import torch

    fw = _float_weight(ref_module)
    if fw is None:
        return None
    fw_np = fw.detach().float().numpy()
    w = getattr(q_module, "weight", None)
    if is_torchao_weight(w):
        return _torchao_weight(fw_np, w)
    if not callable(w) or isinstance(w, torch.Tensor):
        return WeightData(fw_np, None)
    with quiet_ao():
        qw = w()
    if not isinstance(qw, torch.Tensor):
        return WeightData(fw_np, None)
    if not qw.is_quantized:  # float16 dynamic: weights stored in half precision
        return WeightData(fw_np, qw.detach().float().numpy(), qscheme="float16")
    if qw.qscheme() in (torch.per_channel_affine, torch.per_channel_symmetric, torch.per_channel_affine_float_qparams):
        scales, zps, axis = qw.q_per_channel_scales().numpy(), qw.q_per_channel_zero_points().numpy(), qw.q_per_channel_axis()
    else:
        import numpy as np

        scales, zps, axis = np.array([qw.q_scale()]), np.array([qw.q_zero_point()]), None
    info = torch.iinfo(qw.int_repr().dtype)
    return WeightData(fw_np, qw.dequantize().numpy(), str(qw.qscheme()).replace("torch.", ""),
                      scales, zps, axis, info.min, info.max)


def is_torchao_weight(w) -> bool:
    """A weight torchao's quantize_ made (an IntxUnpackedToInt8Tensor: int values, scales, block size)."""
    return hasattr(w, "qdata") and hasattr(w, "block_size") and hasattr(w, "dequantize")


def _torchao_weight(fw_np, w) -> WeightData:
    """torchao's low-bit weight: what it computes with (dequantized), its bits and its scales (one per
    output channel, or one per group of `block_size[1]` weights along a row)."""
    import numpy as np
    import torch

    bits = int(str(getattr(w, "target_dtype", "torch.int8")).removeprefix("torch.int") or 8)
    group = int(w.block_size[-1])
    per_channel = group == w.shape[-1]
    rows = int(w.shape[0])
    scales = w.scale.detach().float().reshape(rows, -1)
    # one range per output channel to show: a row's own, or (in groups) its widest group's, said so; the
    # weights are symmetric (XNNPACK drops a zero point), so each range is +-scale * levels
    scales = scales.max(dim=1).values.numpy()
    zps = np.zeros(rows)
    scheme = f"int{bits} " + ("per channel" if per_channel else f"groups of {group}, each row's widest group shown")
    with torch.no_grad():
        deq = w.dequantize().detach().float().numpy()
    return WeightData(fw_np, deq, scheme, scales, zps, 0, -(1 << (bits - 1)),
                      (1 << (bits - 1)) - 1)
