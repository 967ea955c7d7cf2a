"""Core messages say what to do in the CLI's words (--input-shape, --trust ...). The window names its
own controls instead: this module rewrites a message for the window, in one place."""

from __future__ import annotations

import re

from ..core.data.open import SPECIAL_SOURCES

# Longest flags first, so that --input-shape is not read as --input.
WINDOW_WORDS = {
    "--input-shape": "the Input shape field (File ▸ Open Python factory)",
    "--input-dtype": "an input_dtype in a recipe",
    "--static-mode": "Static mode",
    "--batch-size": "Batch size (Calibration data)",
    "--batches": "Batches (Calibration data)",
    "--weights": "the Weights field (File ▸ Open from torchvision / Python factory)",
    "--kwargs": "the kwargs field (File ▸ Open Python factory)",
    "--method": "Method",
    "--engine": "Engine",
    "--dtype": "Dynamic dtype",
    "--calib": "the calibration Source",
    "--eval": "an evaluation source in a recipe",
    "--float": "the Int8 checkboxes of the layer tree",
    "--trust": "the consent dialog",
    "--out": "the output folder",
    "--format": "the formats of File ▸ Export",
    "--debug": "Show Details",
    "--metric": "the Metric of the Tune panel (or a metric in a recipe)",
    "--sensitivity": "the Sensitivity button of the Tune panel",
    "--graph": "View ▸ Show on graph",
    "--weight-bits": "Weight bits (Backend torchao)",
    "--group-size": "Group size (Backend torchao)",
    "--top": "the Sensitivity tab",
    "--target": "the Target of the Tune panel",
    "--no-per-channel": "unticking per-channel weight scales",
    "--per-channel": "per-channel weight scales",
    "--equalize": "cross-layer equalisation (Quantization settings)",
    "--no-equalize-depthwise": "unticking \"even out depthwise conv inputs\" (Quantization settings)",
    "--equalize-depthwise": "\"even out depthwise conv inputs\" (Quantization settings)",
    "--budget": "the Budget of the Tune panel",
    "--backend": "the Backend (Quantization settings)",
    "--observer": "the Observer (Quantization settings)",
    "--onnx-quantizer": "the ONNX quantizer (Quantization settings)",
}
_FLAG = re.compile("|".join(re.escape(f) for f in sorted(WINDOW_WORDS, key=len, reverse=True)) + r"\b")
_PHRASES = (
    (re.compile(r"Run `qtapp-cli inspect` to list layers\."), "The layer tree lists them."),
    (re.compile(r"give the model yourself as SPEC on the command line"), "open the model yourself (File menu)"),
    (re.compile(r"on the command line"), "in the window"),
    (re.compile(r"\(qtapp-cli bench DIR\)"), "(File ▸ Export, timing each file)"),
    (re.compile(r"\bSPEC\b"), "the model"),
)


def for_window(text: str) -> str:
    for pattern, words in _PHRASES:
        text = pattern.sub(words, text)
    return _FLAG.sub(lambda m: WINDOW_WORDS[m.group(0)], text)


def point_at_control(text: str, recipe) -> str:
    """A message about a data file the recipe names also says which control of the window sets that file
    (a path alone does not tell the user where to change it)."""
    if recipe is None:
        return text
    calibration, evaluation = recipe.calibration.source, recipe.evaluation.source
    if calibration and calibration not in SPECIAL_SOURCES and calibration in text:
        return text + "\n\nThat file is the one set in Calibration data ▸ Source / Path."
    if evaluation and evaluation not in SPECIAL_SOURCES and evaluation in text:
        return text + "\n\nThat file is the evaluation source the recipe names (File ▸ Open recipe…)."
    return text
