"""Which backend quantizes a recipe, decided in one place: the graph mode a recipe resolves to for a
model (`graph_mode`), and one table from (method, graph mode) to a backend class. A new backend is a
class with the `base.QuantBackend` methods and a row here."""

from __future__ import annotations

from ..base.errors import UsageError
from .base import QuantBackend
from .pt2e import Pt2eBackend, Pt2eQatBackend
from .torch_ao import DynamicBackend, EagerStaticBackend, FxQatBackend, FxStaticBackend
from .torchao_lowbit import TorchaoBackend

BACKENDS: dict[tuple[str, str], type] = {
    # (recipe method, graph mode as graph_mode resolves it): the backend
    ("static", "fx"): FxStaticBackend,
    ("static", "eager"): EagerStaticBackend,
    ("static", "pt2e"): Pt2eBackend,
    ("qat", "fx"): FxQatBackend,
    ("qat", "pt2e"): Pt2eQatBackend,
    ("dynamic", "dynamic"): DynamicBackend,  # torch.ao's (with --backend torch.ao or pt2e)
    ("dynamic", "torchao"): TorchaoBackend,  # quantize_: int8 dynamic activations, 4- or 8-bit weights
    ("weight-only", "torchao"): TorchaoBackend,
}


def backend_for(method: str, mode: str) -> QuantBackend:
    """A new backend for `method` in graph `mode`."""
    backend = BACKENDS.get((method, mode))
    if backend is None:
        pairs = ", ".join(f"{m} in {g} mode" for m, g in BACKENDS)
        raise UsageError(f"no backend quantizes {method} in {mode} mode; there are: {pairs}")
    return backend()


def graph_mode(recipe, loaded) -> str:
    """The graph mode `recipe` (a QuantRecipe) resolves to for `loaded` (a LoadedModel): fx, eager, dynamic
    pt2e (the PT2E backend; dynamic quantization is torch.ao's with either) or torchao (quantize_'s low-bit
    weights). An impossible combination is refused."""
    if recipe.backend == "torchao":
        if recipe.method not in ("dynamic", "weight-only"):
            raise UsageError(f"--backend torchao quantizes weights (--method dynamic or weight-only), not "
                             f"{recipe.method}: use --backend torch.ao or pt2e")
        return "torchao"
    if recipe.method == "weight-only":
        raise UsageError("--method weight-only is torchao's: add --backend torchao")
    if recipe.method == "dynamic":
        return "dynamic"
    if recipe.backend == "pt2e":
        if recipe.static_mode == "eager":
            raise UsageError("--backend pt2e captures the model with torch.export, not eager mode: use "
                             "static_mode auto or fx, or --backend torch.ao")
        return "pt2e"
    if recipe.method == "qat" or recipe.static_mode == "fx":
        return "fx"
    if recipe.static_mode == "eager" and not loaded.eager_quantizable:
        raise UsageError("eager mode needs one of torchvision's quantizable models (torchvision:quantized_NAME), "
                         "or use --method dynamic; "
                         "use static_mode fx for this model")
    return "eager" if loaded.eager_quantizable else "fx"
