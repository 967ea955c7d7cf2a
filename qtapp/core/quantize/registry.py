"""(docstring)"""

from __future__ import annotations

from .base import QuantBackend
from .pt2e import Pt2eBackend, Pt2eQatBackend
from .torch_ao import DynamicBackend, EagerStaticBackend, FxQatBackend, FxStaticBackend


def backend_for(method: str, mode: str) -> QuantBackend:
    if method == "dynamic":
        return DynamicBackend()
    if mode == "pt2e":
        return Pt2eQatBackend() if method == "qat" else Pt2eBackend()
    if method == "qat":
        return FxQatBackend()
    return EagerStaticBackend() if mode == "eager" else FxStaticBackend()
