"""The known int8 kernel defects (qconfigs.KERNEL_CORRECTIONS) that this run corrected, read off the
points and the converted model, for the report."""

from __future__ import annotations

from .qconfigs import KERNEL_CORRECTIONS


def kernel_corrections(mode: str, points, float_layers, converted=None, engine: str | None = None) -> tuple:
    """The known int8 kernel defects (qconfigs.KERNEL_CORRECTIONS) corrected at this run's points: each
    correction with the points where `converted` (the int8 GraphModule, converted for `engine`) has it.
    Without `converted`, only what the points themselves say (an int8 point of a corrected op)."""
    import torch

    if mode == "dynamic":
        return _dynamic_bag_corrections(points, float_layers, converted)
    if mode != "fx":  # the corrections live in the FX qconfig mapping and conversion (static and QAT)
        return ()
    engine = engine or torch.backends.quantized.engine
    kept = set(float_layers)
    found: dict = {}
    for p in points:
        if p.name in kept:
            continue
        for what, applies in KERNEL_CORRECTIONS.get(p.op, ()):
            if applies(p, converted, engine):
                found.setdefault((p.op, what), []).append(p.name)
                break
    return tuple({"op": op, "what": what, "points": found[(op, what)]}
                 for op, variants in KERNEL_CORRECTIONS.items() for what, _ in variants if (op, what) in found)


def _dynamic_bag_corrections(points, float_layers, converted) -> tuple:
    """Dynamic quantization's EmbeddingBags: a mean bag weighted to a mean, a max bag kept float."""
    if converted is None:
        return ()
    mean_what, max_what = (what for what, _ in KERNEL_CORRECTIONS["EmbeddingBag"])
    kept, found = set(float_layers), {mean_what: [], max_what: []}
    for p in points:
        if p.op != "EmbeddingBag" or p.name in kept:
            continue
        module = converted.get_submodule(p.name)
        if type(module).__name__ == "MeanEmbeddingBag":
            found[mean_what].append(p.name)
        elif getattr(module, "mode", None) == "max" and type(module).__module__.startswith("torch.nn"):
            found[max_what].append(p.name)
    return tuple({"op": "EmbeddingBag", "what": what, "points": names} for what, names in found.items() if names)
