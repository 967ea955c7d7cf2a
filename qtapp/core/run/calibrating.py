"""Calibration, the first half of quantizing: cross-layer and depthwise equalisation of a copy of the
float model when the recipe asks for them, then the backend's prepare-and-calibrate. The quantize job
calls it when the snapshot holds no calibration that fits the recipe; the export job calls it for a .pte
of a torch.ao run (a PT2E calibration of the same model on the same data)."""


from __future__ import annotations

from dataclasses import replace
from typing import Any

from ..analysis.probe import probe_model
from ..base.progress import CancelToken, Job, Stage
from ..quantize.base import Calibrated
from ..quantize.equalize import (
    depthwise_scales,
    equalize,
    equalize_depthwise,
    find_depthwise_pairs,
    watching_depthwise_inputs,
)
from ..quantize.registry import backend_for
from ..report.results import DataFacts
from .snapshot import RunSnapshot


def equalize_snapshot(snap: RunSnapshot) -> tuple[RunSnapshot, str]:
    """With the recipe's `equalize`, the snapshot with an equalised copy of the float model (which
    computes the same outputs) to calibrate, convert and analyse, and a sentence on what was done."""
    if not snap.recipe.equalize:
        return snap, ""

    pairs = list(snap.cle_pairs)
    if not pairs:
        return snap, ("cross-layer equalisation: no pair of layers in this model can be equalised exactly (a conv "
                      "or linear read only by another, through a ReLU at most): nothing changed")
    module, info = equalize(snap.loaded.module, pairs, snap.loaded.input_spec.example())
    note = (f"cross-layer equalisation of {len(pairs)} pair(s) of layers: the largest channel range over its "
            f"tensor's median went from {info['max_ratio_before']:.0f}x to {info['max_ratio_after']:.0f}x (float "
            f"outputs unchanged to {info['output_change']:.1g})")
    return replace(snap, loaded=replace(snap.loaded, module=module)), note


def calibrate_equalized(snap: RunSnapshot, equalized: str, cancel: CancelToken) -> Job[Calibrated]:
    calibrated = yield from calibrate(snap, cancel)
    if equalized:  # said with every result of this calibration
        calibrated.stats = {**calibrated.stats, "equalized": equalized}
    return calibrated


def calibrate(snap: RunSnapshot, cancel: CancelToken) -> Job[Calibrated]:
    recipe, loaded = snap.recipe, snap.loaded
    calib = snap.open_calibration()
    if recipe.method != "dynamic":  # dynamic quantization never reads calibration data
        probe_model(loaded.module, calib, loaded.spec, recipe.method)
    backend = backend_for(recipe.method, snap.mode)
    example = loaded.input_spec.example()
    module, note = yield from _depthwise_equalized(snap, calib, cancel)
    calibrated = yield from backend.prepare_and_calibrate(module, recipe, snap.inventory, example, calib, cancel)
    calibrated.data, calibrated.key = DataFacts.of(calib), recipe.calibration_key()
    if note:  # said with every result of this calibration
        calibrated.stats = {**calibrated.stats, "depthwise_equalized": note}
    return calibrated


def _depthwise_equalized(snap: RunSnapshot, calib, cancel: CancelToken) -> Job[tuple[Any, str]]:
    """With the recipe's `equalize_depthwise` (static and QAT, per-channel weights): the float model with
    the input channels of its depthwise convs evened out on the calibration data (equalize.equalize_depthwise),
    to calibrate, convert and analyse, and a sentence on it. The results still compare against the model as
    loaded."""
    module, recipe = snap.loaded.module, snap.recipe
    if not recipe.equalize_depthwise or recipe.method == "dynamic" or not recipe.per_channel:
        return module, ""
    import torch

    pairs = find_depthwise_pairs(module)
    if not pairs:
        return module, ""
    stage = Stage("depthwise ranges", len(calib), cancel)
    yield stage.step(0, f"{len(pairs)} depthwise conv(s): measuring their input channels")
    first = None
    with watching_depthwise_inputs(module, pairs) as peaks, torch.no_grad():
        for i, (inputs, _y) in enumerate(calib):
            cancel.check()
            first = first or inputs
            module(*inputs)
            yield stage.step(i + 1, f"{i + 1}/{len(calib)} batches")
    equalized, info = equalize_depthwise(module, pairs, depthwise_scales(peaks), first)
    if not info["pairs"]:
        return module, ""
    note = (f"depthwise input equalisation: the input channels of {len(info['pairs'])} depthwise conv(s) scaled "
            f"up towards each tensor's loudest channel ({info['scaled_channels']} channels, by up to "
            f"{info['largest_scale']:.0f}x; the depthwise weights scaled down to match), so one int8 range serves "
            f"them all; float outputs on calibration data unchanged to {info['output_change']:.1g}. "
            "--no-equalize-depthwise turns it off")
    return equalized, note
