"""Which backend quantizes a recipe: one table from (method, graph mode) to a backend class, the only
place that choice is made. A new backend is a class with the `base.QuantBackend` methods and a row here."""

from __future__ import annotations

from ..base.errors import UsageError
from .base import QuantBackend
from .pt2e import Pt2eBackend, Pt2eQatBackend
from .torch_ao import DynamicBackend, EagerStaticBackend, FxQatBackend, FxStaticBackend

BACKENDS: dict[tuple[str, str], type] = {
    # (recipe method, graph mode as session.graph_mode resolves it): the backend
    ("static", "fx"): FxStaticBackend,
    ("static", "eager"): EagerStaticBackend,
    ("static", "pt2e"): Pt2eBackend,
    ("qat", "fx"): FxQatBackend,
    ("qat", "pt2e"): Pt2eQatBackend,
    ("dynamic", "dynamic"): DynamicBackend,  # torch.ao's, whatever the recipe's backend
}


def backend_for(method: str, mode: str) -> QuantBackend:
    """A new backend for `method` in graph `mode`."""
    backend = BACKENDS.get((method, mode))
    if backend is None:
        pairs = ", ".join(f"{m} in {g} mode" for m, g in BACKENDS)
        raise UsageError(f"no backend quantizes {method} in {mode} mode; there are: {pairs}")
    return backend()
