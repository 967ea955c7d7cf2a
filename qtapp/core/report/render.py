"""Renderings of a `RunResult`: report.json (a dict) and the CLI's text summary.

Both list exactly `notes.notes(result)`; neither interprets the figures on its own.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from ... import __version__
from ..analysis.diagnosis import worst_points
from ..config.recipe import atomic_write_text
from ..deploy.export import latency_json
from ..deploy.measure import RUNTIMES
from .notes import notes
from .verdict import judge

# 2: `layers` lists every quantization point (modules, functional ops, inputs) with its kind, its local,
# accumulated and normalised error, its activation range and its diagnosis; `sqnr_db` stays the accumulated
# figure. `points` summarises them.
# 3: `sensitivity` (analyze --sensitivity, the Sensitivity tab) and `tune` (the search that chose this
# configuration; every step in tune.json) when they were run.
# 5: `verdict` (usable/degraded/broken, why, the next step) and `corrections` (known int8 kernel defects
# the app corrected in this model).
SCHEMA_VERSION = 5
# Per-layer SQNR bands, the same in the window, the tree and report.html: red at or below POOR, amber
# at FAIR, green at or above GOOD.
SQNR_POOR_DB, SQNR_FAIR_DB, SQNR_GOOD_DB = 15.0, 25.0, 35.0
_SQNR_STOPS = ((SQNR_POOR_DB, (0xd6, 0x27, 0x28)), (SQNR_FAIR_DB, (0xf0, 0xa3, 0x0a)), (SQNR_GOOD_DB, (0x2c, 0xa0, 0x2c)))
NO_SQNR_COLOUR = "#b4b4b4"


def sqnr_colour(db) -> str:
    """The one SQNR colour scale (window, tree, report.html): red at or below SQNR_POOR_DB, amber at
    SQNR_FAIR_DB, green at or above SQNR_GOOD_DB, interpolated between; grey without a number (identical
    outputs, or not measured). A "#rrggbb" string."""
    if db is None or (isinstance(db, float) and math.isnan(db)):
        return NO_SQNR_COLOUR
    rgb = _SQNR_STOPS[-1][1]
    if db <= _SQNR_STOPS[0][0]:
        rgb = _SQNR_STOPS[0][1]
    else:
        for (lo, c0), (hi, c1) in zip(_SQNR_STOPS, _SQNR_STOPS[1:]):
            if db <= hi:
                t = (db - lo) / (hi - lo)
                rgb = tuple(round(a + (b - a) * t) for a, b in zip(c0, c1))
                break
    return "#%02x%02x%02x" % rgb


def json_safe(value):
    """`value` with every non-finite float as None: JSON has no Infinity (an SQNR of identical outputs)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value


def report_dict(result) -> dict:
    import torch

    lat, o, recipe = result.latency, result.output, result.recipe
    found = notes(result)
    report = {
        "schema_version": SCHEMA_VERSION,
        "qtapp_version": __version__,
        "torch_version": torch.__version__,
        "model": result.model,
        "input": result.input,
        "method": result.method,
        "mode": result.mode,
        "engine": result.engine,
        "dtype": result.dtype,
        "calibration": result.calibration.to_json() if result.calibration else
        {"source": "none (dynamic quantization)", "batches": 0, "samples": 0, "representative": True,
         "labels": False},
        "evaluation": result.evaluation.to_json() if result.evaluation else None,
        "float_layers": list(result.float_layers),
        "size_bytes": {"float": result.size_float, "quantized": result.size_quantized},
        "latency_ms": {"float": lat.float_ms if lat else None, "quantized": lat.quantized_ms if lat else None,
                       "batch": 1, "threads": lat.threads if lat else None, "runs": lat.runs if lat else None,
                       "other_load_cores": round(lat.other_load, 2) if lat and lat.other_load is not None else None,
                       "runtime": lat.format if lat else None,
                       # every exported file against its float counterpart, each in its own runtime
                       "per_format": {e.format: latency_json(e.latency) for e in result.exports if e.latency}},
        "output": o.to_json() if o is not None else None,
        "layers": [layer.to_json() for layer in result.layers],
        "points": points_summary(result),
        "exports": [e.to_json() for e in result.exports],
        "notes": [n.text for n in found],
        "diagnostics": [{"code": n.code, "level": n.level, "text": n.text} for n in found],
        "corrections": [dict(c) for c in result.corrections],
        "verdict": judge(result).to_json(),
    }
    if result.sensitivity is not None:
        report["sensitivity"] = json_safe(result.sensitivity.to_json())
    if result.tune is not None:
        report["tune"] = json_safe(tune_summary(result.tune))
    if result.method == "qat":
        report["qat"] = {"epochs": recipe.qat.epochs, "lr": recipe.qat.lr,
                         "epoch_losses": list(result.calib_stats.get("epoch_losses") or [])}
    return report


def tune_summary(tune) -> dict:
    best, start = tune.best, tune.start
    return {"target": str(tune.target), "budget": str(tune.budget), "metric": tune.metric, "reached": tune.reached,
            "start_score": start.score, "score": best.score, "float_points": sorted(best.config.float_points),
            "overrides": {n: o.to_dict() for n, o in best.config.overrides}, "configurations_tried": len(tune.steps),
            "conversions": tune.conversions, "calibrations": tune.calibrations, "seconds": round(tune.seconds, 2),
            "steps_file": "tune.json"}


def _fmt(value, spec="{:.2f}", none="n/a") -> str:
    return none if value is None else spec.format(value)


def _metric_text(name: str, value: float) -> str:
    if isinstance(value, float) and math.isinf(value):
        return "exact (the float outputs)" if value > 0 else "-inf"
    if name == "sqnr":
        return f"{value:.1f} dB"
    if name in ("top1", "retrieval@1"):
        return f"{value:.2%}"
    return f"{value:.5g}"


def formats_table(exports, with_sqnr: bool = True) -> list[str]:
    """One row per shipped file: who quantized it, its output against float (run in its own runtime), its
    size and its batch-1 latency against the float model in the same format and runtime."""
    lines = ["  files       format  runtime                 " + ("SQNR vs float*  " if with_sqnr else "")
             + "size      float ms  int8 ms  speed"]
    for e in exports:
        lat = e.latency
        speed = speed_text(lat.float_ms, lat.quantized_ms) if lat else "not timed"
        sq = f"{_fmt(e.sqnr_vs_float_db, '{:.1f} dB'):>13}   " if with_sqnr else ""
        lines.append(f"              .{e.format:<6} {RUNTIMES.get(e.format, e.format):<23} {sq}{e.bytes / 1e6:6.2f} MB "
                     f"{_fmt(lat.float_ms if lat else None, '{:9.3f}'):>9} {_fmt(lat.quantized_ms if lat else None, '{:8.3f}'):>8}  {speed}")
    if with_sqnr:
        lines.append("              * each file run in its runtime on the check samples (the first 8 evaluation samples)")
    quantizers = dict.fromkeys(e.quantizer for e in exports if e.quantizer)
    for q in quantizers:
        made = ", ".join(f".{e.format}" for e in exports if e.quantizer == q)
        lines.append(f"              {made}: quantized by {q}")
    return lines


def speed_text(float_ms: float, quantized_ms: float) -> str:
    ratio = float_ms / quantized_ms
    if 0.995 <= ratio < 1.005:
        return "as fast"
    return f"{ratio:.2f}x faster" if ratio >= 1 else f"{1 / ratio:.2f}x slower"


def worst_layers(result, n: int = 3) -> list:
    """The points that cost most by themselves (worst local SQNR, the bad ones first)."""
    return worst_points(result.layers, n)


def points_summary(result) -> dict:
    layers = result.layers
    return {
        "count": len(layers), "quantized": sum(1 for p in layers if p.quantized),
        "kept_float": [p.name for p in layers if p.kept_float],
        "bad": [p.name for p in layers if p.diagnosis],
        "worst": [{"name": p.name, "local_sqnr_db": p.local_sqnr_db, "accumulated_sqnr_db": p.accumulated_sqnr_db,
                   "diagnosis": p.diagnosis[0].text if p.diagnosis else None} for p in worst_points(layers, 10)],
        "local": "each point alone in int8 (its weights and its output rounded to its range) on the float "
                 "model's values; accumulated: the int8 model's tensor there against float",
    }


def points_text(result, n: int = 8) -> list[str]:
    """The worst points, one line each with its diagnosis (the CLI's `analyze`)."""
    worst = worst_layers(result, n)
    if not worst:
        if not any(p.quantized for p in result.layers):
            return ["  nothing to rank: no point of this model is quantized (see the notes)"]
        return ["  no point with a measurable error: the int8 outputs equal the float ones at every point"]
    width = min(max(len(p.name) for p in worst), 40)
    lines = [f"  {'point':<{width}}  {'local':>7} {'accum.':>7}  diagnosis"]
    for p in worst:
        text = p.diagnosis[0].text if p.diagnosis else "(no worse than the rest)"
        lines.append(f"  {p.name:<{width}}  {_fmt(p.local_sqnr_db, '{:.1f}'):>7} "
                     f"{_fmt(p.accumulated_sqnr_db, '{:.1f}'):>7}  {text}")
    bad = sum(1 for p in result.layers if p.diagnosis)
    dtype = "int8" if result.dtype == "qint8" else result.dtype
    lines.append(f"  {len(result.layers)} points, {sum(1 for p in result.layers if p.quantized)} in {dtype}, "
                 f"{bad} worse than the rest (dB; local: the point alone in {dtype}, accum.: the {dtype} model there)")
    return lines


def _score_text(tune_or_metric: str, target_kind: str, score: float) -> str:
    if target_kind == "drop":
        return f"drop {score:.3g}" + (" points" if tune_or_metric == "top1" else "")
    return _metric_text(target_kind if target_kind in ("sqnr", "cosine") else tune_or_metric, score)


def _delta_text(name: str, d: float | None, sign: bool = True) -> str:
    """A difference of two metric values, in the metric's units."""
    if d is None:
        return "n/a"
    spec = "+" if sign else ""
    if name == "sqnr":
        return f"{d:{spec}.1f} dB"
    if name in ("top1", "retrieval@1"):
        return f"{d * 100:{spec}.1f} pts"
    return f"{d:{spec}.3g}"


def sensitivity_text(result, n: int = 12) -> list[str]:
    """The points that matter most, both ways (the CLI's `analyze --sensitivity`); where a point can be
    quantized at more than one width (torchao's bits), only it quantized at each."""
    sens = result.sensitivity
    if sens is None:
        return []
    name = sens.metric
    lines = [f"  sensitivity {name}, from one calibration ({sens.conversions} conversions, {sens.seconds:.1f} s): "
             f"every toggleable point {sens.quantized} {_metric_text(name, sens.all_int8)}, every one float "
             f"{_metric_text(name, sens.all_float)}"]
    if not sens.points:
        return lines + ["  no point of this model can be kept float: nothing to rank"]
    width = max(min(max(len(p.name) for p in sens.points[:n]), 40), 5)
    labels = sens.width_labels or ["int8"]
    lines.append(f"  {'point':<{width}}  {'only it float':>13} {'gain':>9}"
                 + "".join(f"  {'only it ' + label:>13} {'cost':>9}" for label in labels))

    def cell(value):
        return "n/a" if value is None else _metric_text(name, value)

    for p in sens.points[:n]:
        if p.refused:
            lines.append(f"  {p.name:<{width}}  torch cannot keep it float: {p.refused}")
            continue
        at = dict(p.widths) if p.widths else {"int8": p.only_int8}
        costs = {label: sens.cost_at(p, label) for label in at} if p.widths else {"int8": sens.cost(p)}
        lines.append(f"  {p.name:<{width}}  {cell(p.only_float):>13} {_delta_text(name, sens.gain(p)):>9}"
                     + "".join(f"  {cell(at.get(label)):>13} {_delta_text(name, costs.get(label), sign=False):>9}"
                               for label in labels))
    if len(sens.points) > n:
        lines.append(f"  ... and {len(sens.points) - n} more in report.json (give --top to see more)")
    lines.append(f"  (gain: what keeping only it float gains on every toggleable point {sens.quantized}; cost: what "
                 "quantizing only it" + (" at that width" if len(labels) > 1 else "") + " loses against every one float)")
    return lines


def tune_text(result) -> list[str]:
    """What the search found and how (the CLI's `tune`, before the quantize summary)."""
    t = result.tune
    kind, metric = t.target.kind, t.metric
    floats = sorted(t.best.config.float_points)
    overrides = t.best.config.overrides
    verdict = "reached" if t.reached else "NOT reached"
    lines = [f"  target      {t.target} (budget {t.budget}): {verdict}, {_score_text(metric, kind, t.best.score)} "
             f"(as the recipe was: {_score_text(metric, kind, t.start.score)})"]
    chosen = [f"{len(floats)} point(s) kept float" + (f" ({', '.join(floats)})" if floats else "")]
    if t.best.config.equalize:
        chosen.append("cross-layer equalisation")
    chosen += [f"{n}: " + ", ".join(f"{k} {v}" for k, v in o.to_dict().items()) for n, o in overrides]
    if t.best.bits is not None and (t.budget.kind == "bits" or result.mode == "torchao"):
        chosen.append(f"{t.best.bits:.2f} weight bits per value on average")
    lines.append("  chosen      " + "; ".join(chosen))
    for i in t.path[1:]:
        step = t.steps[i]
        lines.append(f"  step        {step.move}: {_score_text(metric, kind, step.scored.score)}")
    if result.method == "dynamic":
        lines.append(f"  searched    {len(t.steps)} configurations in {t.seconds:.1f} s: {t.conversions} conversions "
                     "(dynamic quantization reads no calibration data)")
    else:
        lines.append(f"  searched    {len(t.steps)} configurations in {t.seconds:.1f} s: {t.conversions} conversions "
                     f"and {t.calibrations} calibration(s) (a calibration per configuration would be {len(t.steps)})")
    lines += [f"  note: {n}" for n in t.notes]
    return lines


def _torchao_bits(result) -> str:
    """'4-bit (2 layers 8-bit)': the recipe's weights, and the layers given other bits."""
    recipe = result.recipe
    other = sorted({o.weight_bits for o in recipe.overrides.values() if o.weight_bits not in (None, recipe.weight_bits)})
    text = f"{recipe.weight_bits}-bit" + (f", groups of {recipe.group_size or 32}" if recipe.weight_bits == 4 else "")
    for bits in other:
        n = sum(1 for o in recipe.overrides.values() if o.weight_bits == bits)
        text += f" ({n} layer(s) {bits}-bit)"
    return text


def summary_text(result, out: Path | None = None) -> str:
    o, lat = result.output, result.latency
    verb = "fine-tuned" if result.method == "qat" else "calibrated"
    calib = result.calibration
    head = f"{result.model}: {result.method}" + (f" ({result.mode})" if result.mode != result.method else "") + \
        (" with the XNNPACK quantizer" if result.mode == "pt2e" else
         f", {_torchao_bits(result)} weights for XNNPACK" if result.mode == "torchao" else f" on {result.engine}")
    head += f", {verb} on {calib.samples} samples ({calib.description})" if calib else ", no calibration needed"
    lines = [head,
             f"  output      SQNR {_fmt(o.sqnr_db, '{:.1f} dB')}, cosine {_fmt(o.cosine, '{:.5f}')}, "
             f"max abs error {_fmt(o.max_abs_error, '{:.4g}')}, top-1 agreement {_fmt(o.top1_agreement, '{:.1%}')}"]
    if o.accuracy_float is not None:
        lines.append(f"  accuracy    float {o.accuracy_float:.2%} -> quantized {o.accuracy_quantized:.2%} "
                     f"on {o.samples} samples")
    if o.metric is not None and not (o.metric.name == "top1" and o.accuracy_float is not None):
        m = o.metric
        own = f"float {_metric_text(m.name, m.float_value)} -> " if m.float_value is not None else ""
        lines.append(f"  metric      {m.name}: {own}quantized {_metric_text(m.name, m.quantized)}")
    if result.size_float:
        lines.append(f"  size        {result.size_float / 1e6:.2f} MB -> {result.size_quantized / 1e6:.2f} MB "
                     f"({result.size_quantized / result.size_float:.0%} of float, "
                     f"{'ExecuTorch .pte' if lat is not None and lat.format == 'pte' else 'TorchScript'})")
    if lat is not None:
        lines.append(f"  latency     {lat.float_ms:.2f} ms -> {lat.quantized_ms:.2f} ms "
                     f"({speed_text(lat.float_ms, lat.quantized_ms)}, batch 1, {lat.threads} threads, "
                     f"median of {lat.runs})")
    worst = worst_layers(result)
    if worst:
        lines.append("  worst points " + ", ".join(f"{p.name} {p.local_sqnr_db:.1f} dB" for p in worst
                                                   if p.local_sqnr_db is not None) + " (local SQNR)")
        lines += [f"  diagnosis   {p.name}: {p.diagnosis[0].text}" for p in worst if p.diagnosis]
    if result.float_layers:
        lines.append(f"  kept float  {', '.join(result.float_layers)}")
    for e in result.exports:
        against = (f"max abs diff {e.max_abs_diff:.3g} against the in-memory model" if e.max_abs_diff is not None
                   else "no in-memory twin to compare with: see its SQNR against float")
        lines.append(f"  wrote       {e.path} ({e.bytes / 1e6:.2f} MB, "
                     f"{'verified' if e.verified else 'NOT verified'}, {against})")
    if any(e.sqnr_vs_float_db is not None or e.latency is not None for e in result.exports):
        lines += formats_table(result.exports)
    if out is not None:
        lines.append(f"  wrote       {out / 'recipe.json'}, {out / 'report.json'}")
    lines += [f"  corrected   {c['what']} at {', '.join(c['points'])}" for c in result.corrections]
    lines += [f"  note: {n.text}" for n in notes(result)]
    lines.append(judge(result).line())  # the last line: what to make of it, and what to do next
    return "\n".join(lines)


def write_report(report: dict, path: Path) -> None:
    """report.json: `report` (a report_dict), written atomically."""
    atomic_write_text(path, json.dumps(report, indent=2) + "\n")


CSV_COLUMNS = ("point", "kind", "op", "type", "runs_as", "kept_float", "local_sqnr_db", "accumulated_sqnr_db",
               "normalised_error", "kernel_sqnr_db", "weight_sqnr_db", "range", "levels", "clipped_low",
               "clipped_high", "diagnosis")


def points_csv(result) -> str:
    """Every quantization point of the result as CSV (the table report.json's `layers` holds), one row a
    point in model order: for a spreadsheet."""
    import csv
    import io

    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for layer in report_dict(result)["layers"]:
        r = layer["range"] or {}
        writer.writerow([
            layer["name"], layer["kind"], layer["op"], layer["type"], "int8" if layer["quantized"] else "float",
            layer["kept_float"], layer["local_sqnr_db"], layer["accumulated_sqnr_db"], layer["normalised_error"],
            layer["kernel_sqnr_db"], layer["weight_sqnr_db"], r.get("range_text", ""), r.get("levels", ""),
            r.get("clipped_low", ""), r.get("clipped_high", ""), " | ".join(d["text"] for d in layer["diagnosis"])])
    return out.getvalue()
