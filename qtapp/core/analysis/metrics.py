"""Output metrics that mean something: built in, or a function of the user's; and tuning targets.

A metric takes the float model's outputs, the quantized model's outputs and the labels (or None) over
the evaluation set and returns a number, higher is better:
  sqnr         output SQNR of int8 against float, dB
  cosine       mean cosine similarity of each sample's int8 output to its float one
  top1         int8 top-1 accuracy: only where the output is a classifier's and the labels are its class ids
  retrieval@1  embeddings: the share of samples whose int8 embedding's nearest float embedding is their own
  module:function / file.py:function   the user's: fn(float_outputs, quantized_outputs, labels) -> number

A target is `sqnr>=30`, `cosine>=0.999`, `drop<=1` (top-1 points lost, or the user metric's own units
lost) or `metric>=X` (the chosen metric's int8 value).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Callable

from ..base.errors import QtappError, UsageError, first_line
from ..config.metric_names import BUILTIN
from ..model.loading import import_callable

MAX_RETRIEVAL = 20_000  # samples: retrieval@1 compares every int8 embedding with every float one


def load_metric(name: str) -> Callable | None:
    """The user's metric function (None for a built-in). Importing it runs code: the caller has the
    user's consent (a name typed on the command line, or --trust for one a recipe names)."""
    if name in BUILTIN:
        return None

    return import_callable(name, "metric")[0]


def classifier_accuracy_meaningful(acc_float: float, classes: int, n: int) -> bool:
    """The float model's top-1 on these labels is clearly above chance (3 standard errors): its outputs
    are class scores for them. Embeddings or a model unrelated to the labels stay near chance."""
    chance = 1.0 / max(classes, 1)
    # Twice chance, or halfway to perfect where twice chance cannot be reached (two classes: 75%, not 100%).
    floor = min(2 * chance, (1 + chance) / 2)
    return acc_float >= chance + 3.0 * math.sqrt(chance * (1 - chance) / max(n, 1)) and acc_float >= floor


@dataclass(frozen=True)
class MetricValue:
    name: str
    float_value: float | None  # the float model's own score (None where it means nothing: sqnr, cosine)
    quantized: float

    def to_json(self) -> dict:
        return {"name": self.name, "float": self.float_value, "quantized": self.quantized,
                "higher_is_better": True}


def compute(name: str, fn, ref, q, y, accuracy: tuple | None) -> MetricValue:
    """`ref`, `q`: the whole evaluation set's outputs (N x ...); `accuracy`: (float, int8) top-1 when
    it means something (compare_outputs decides), else None."""
    import torch

    if name == "sqnr":
        noise = float(((ref - q) ** 2).sum())
        return MetricValue(name, None, math.inf if noise == 0 else 10 * math.log10(float((ref * ref).sum()) / noise))
    if name == "cosine":
        cos = torch.nn.functional.cosine_similarity(ref.flatten(1), q.flatten(1), dim=1)
        return MetricValue(name, None, float(cos.mean()))
    if name == "top1":
        if accuracy is None:
            raise QtappError("metric top1 needs a classifier's outputs and labels that are its class ids: the "
                             "evaluation data has no labels, or the float model's top-1 on them is at chance level")
        return MetricValue(name, accuracy[0], accuracy[1])
    if name == "retrieval@1":
        if len(ref) > MAX_RETRIEVAL:
            raise QtappError(f"retrieval@1 compares all {len(ref)} samples with each other: at most {MAX_RETRIEVAL}")
        a = torch.nn.functional.normalize(q.flatten(1), dim=1)
        b = torch.nn.functional.normalize(ref.flatten(1), dim=1)
        hits = (a @ b.T).argmax(1) == torch.arange(len(ref))
        return MetricValue(name, None, float(hits.float().mean()))
    try:
        own, got = fn(ref, ref, y), fn(ref, q, y)
        own, got = float(own), float(got)
    except Exception as exc:  # noqa: BLE001 - the user's code: its failure is named as such
        raise QtappError(f"metric {name} failed: {type(exc).__name__}: {first_line(exc)} (it is called as "
                         "fn(float_outputs, quantized_outputs, labels) and must return a number)") from None
    if not (math.isfinite(own) and math.isfinite(got)):
        raise QtappError(f"metric {name} returned {got!r} (and {own!r} for the float model): it must return a finite number")
    return MetricValue(name, own, got)


_TARGET = re.compile(r"^\s*(sqnr|cosine|drop|metric)\s*(>=|<=)\s*(-?[0-9]+(?:\.[0-9]*)?(?:e-?[0-9]+)?)\s*$")


@dataclass(frozen=True)
class Target:
    kind: str  # sqnr | cosine | drop | metric
    op: str  # >= | <=
    value: float

    @classmethod
    def parse(cls, text: str) -> "Target":
        m = _TARGET.match(text or "")
        if not m:
            raise UsageError(f"cannot read target {text!r}: use sqnr>=30, cosine>=0.999, drop<=1 (accuracy points) "
                             "or metric>=X (with --metric)")
        kind, op, value = m.group(1), m.group(2), float(m.group(3))
        if (kind == "drop") != (op == "<="):
            raise UsageError(f"target {text!r}: write drop<=X (at most X lost) and sqnr/cosine/metric>=X")
        return cls(kind, op, value)

    def metric_name(self, chosen: str | None) -> str:
        """The metric this target reads: sqnr and cosine their own; drop and metric the chosen one
        (top1 by default)."""
        if self.kind in ("sqnr", "cosine"):
            return self.kind
        return chosen or "top1"

    def score(self, value: MetricValue) -> float:
        """The figure compared with the target: the metric's int8 value, or the drop from float."""
        if self.kind != "drop":
            return value.quantized
        if value.float_value is None:
            raise UsageError(f"target drop<=X needs a metric the float model also scores (top1 or yours), not {value.name}")
        scale = 100.0 if value.name == "top1" else 1.0  # top-1 in points
        return (value.float_value - value.quantized) * scale

    def met(self, value: MetricValue) -> bool:
        s = self.score(value)
        return s <= self.value if self.op == "<=" else s >= self.value

    def __str__(self) -> str:
        return f"{self.kind}{self.op}{self.value:g}"


def check_labels_for(target: Target, metric: str | None, source) -> None:
    """Refuse, before any work, a target or metric that needs class-id labels the evaluation data lacks."""
    name = target.metric_name(metric) if target is not None else metric
    if name != "top1":
        return
    if not source.has_labels:
        raise UsageError(f"{'target ' + str(target) if target is not None else '--metric top1'} needs labels (top-1 "
                         "accuracy): the evaluation data has none; give --eval with labels (an image folder, or a "
                         ".npz/.pt with y), or use sqnr>=X or cosine>=X")
    if not getattr(source, "class_ids", False):
        raise UsageError(f"{'target ' + str(target) if target is not None else '--metric top1'} needs labels that "
                         f"are class ids, and {getattr(source, 'labels_are', '') or 'these are not'}: give class ids "
                         "0..C-1, or a --metric function of yours, which gets the labels as stored")
