"""The metric names a recipe may hold (built-in names, or a user's `module:function`), checked without
importing anything."""

from __future__ import annotations

from ..base.errors import UsageError
from ..base.specs import looks_like_factory

BUILTIN = ("sqnr", "cosine", "top1", "retrieval@1")


def is_callable_spec(name: str) -> bool:
    return name not in BUILTIN and looks_like_factory(name)


def check_metric_name(name: str) -> None:
    if name in BUILTIN or is_callable_spec(name):
        return
    raise UsageError(f"unknown metric {name!r}: use one of {', '.join(BUILTIN)}, or a function as "
                     "package.module:function or file.py:function (fn(float_outputs, quantized_outputs, labels) -> number)")
