"""The run report (report.json): what was done, with what data, and what it measured."""

from __future__ import annotations

import json
from pathlib import Path

from .. import __version__
from .recipe import atomic_write_text

SCHEMA_VERSION = 1


def _data_json(source) -> dict | None:
    if source is None:
        return None
    return {"source": source.description, "batches": source.n_batches, "samples": source.samples,
            "representative": source.representative, "labels": source.has_labels}


def build_report(session, exports=()) -> dict:
    import torch

    result = session.result
    recipe = session.recipe
    calib = session.calib_source if recipe.method != "dynamic" else None
    notes = list(dict.fromkeys(session.notes + session.inventory.notes))
    if calib is not None and not calib.representative:
        notes.append("calibration used random tensors, which are not representative of real inputs: "
                     "activation ranges (and so accuracy on real data) may be far off; calibrate on real samples")
    if recipe.engine == "qnnpack":
        notes.append("qnnpack targets Arm CPUs; its latency measured on this x86 machine says nothing about "
                     "a phone (on x86 it is typically slower than float)")
    stats = session.calibrated.stats if session.calibrated else {}
    lat = result.latency if result else None
    if stats.get("distilled"):
        notes.append("QAT data had no labels: fine-tuned by distillation from the float model's outputs")
    if result is not None:
        expected = set(session.inventory.quantized_heads)
        for layer in result.layers:
            if layer.name in expected and not layer.quantized:
                notes.append(f"{layer.name} was to be quantized, but the converted model runs it in float "
                             f"({layer.type}): the backend has no int8 pattern for it here")
        if result.script_note and result.script_note != "scripted":
            notes.append(f"TorchScript: {result.script_note}")
    out = result.output if result else None
    if out is not None and out.float_rms < 1e-4:
        notes.append(f"the float model's outputs are almost zero (RMS {out.float_rms:.2g}): typical of randomly "
                     "initialised weights, which collapse activations; error figures are meaningless here, "
                     "load trained weights")
    elif out is not None and out.cosine < 0.9:
        notes.append(f"the quantized output barely follows the float one (cosine {out.cosine:.3f}): keep the "
                     "worst layers float, calibrate on more representative data, or try QAT")
    if lat is not None and lat.other_load is not None and lat.other_load > 0.3:
        notes.append(f"other processes kept {lat.other_load:.1f} CPU cores busy while latency was measured: "
                     "the latency figures are inflated; measure again on a quiet machine")
    for e in exports:
        notes += [f"{e.format}: {n}" for n in e.notes]
    report = {
        "schema_version": SCHEMA_VERSION,
        "qtapp_version": __version__,
        "torch_version": torch.__version__,
        "model": recipe.model,
        "method": recipe.method,
        "mode": session.mode,
        "engine": recipe.engine,
        "dtype": recipe.dtype if recipe.method == "dynamic" else "qint8",
        "calibration": _data_json(calib) or {"source": "none (dynamic quantization)", "batches": 0,
                                             "samples": 0, "representative": True, "labels": False},
        "evaluation": _data_json(session.eval_source),
        "float_layers": session.inventory.float_layers,
        "size_bytes": {"float": result.size_float if result else None,
                       "quantized": result.size_quantized if result else None},
        "latency_ms": {"float": lat.float_ms if lat else None, "quantized": lat.quantized_ms if lat else None,
                       "batch": 1, "threads": lat.threads if lat else None, "runs": lat.runs if lat else None,
                       "other_load_cores": round(lat.other_load, 2) if lat and lat.other_load is not None else None},
        "output": result.output.to_json() if result else None,
        "layers": [layer.to_json() for layer in result.layers] if result else [],
        "exports": [e.to_json() for e in exports],
        "notes": notes,
    }
    if recipe.method == "qat":
        report["qat"] = {"epochs": recipe.qat.epochs, "lr": recipe.qat.lr,
                         "epoch_losses": stats.get("epoch_losses")}
    return report


def write_report(report: dict, path: Path) -> None:
    atomic_write_text(path, json.dumps(report, indent=2) + "\n")
