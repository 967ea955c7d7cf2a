#!/usr/bin/env python
"""What the per-point analysis costs over a plain quantize-and-compare run, side by side in one run.

For each model (torchvision, weights=None, random calibration and evaluation data, the app's default
recipe otherwise: FX static, fbgemm, histogram observer, 8 calibration batches of 16, 4 evaluation
batches of 16), one repetition times, in order:

  plain     calibrate (prepare_fx + the calibration batches) + convert + compare the outputs over the
            evaluation batches: what a quantize-and-compare run does without looking inside
  analysis  every point at once: the tapped float copy of the calibrated model, activation ranges over
            2 calibration batches, one pass of hooks over 2 evaluation batches (float and int8 side,
            local error with each point's int8 weights), and the diagnosis
  reconvert after a toggle: convert + compare (float outputs cached), then the analysis again (its
            ranges and local figures are cached per calibration: only the int8 side is re-read)

The ratio (plain + analysis) / plain is the cost of analysis. Medians over --reps repetitions; each
repetition records how busy other processes kept the CPU (/proc/stat), and says so when it was > 0.3.
    python benchmarks/bench_points.py [--models resnet18,efficientnet_b7] [--reps 3] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
import warnings
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from qtapp.core.analysis.compare import compare_outputs  # noqa: E402
from qtapp.core.base.progress import CancelToken, drive  # noqa: E402
from qtapp.core.config.recipe import DataSpec, QuantRecipe  # noqa: E402
from qtapp.core.deploy.measure import _cpu_seconds  # noqa: E402
from qtapp.core.run.calibrating import calibrate  # noqa: E402
from qtapp.core.run.jobs import analyse_points  # noqa: E402
from qtapp.core.run.session import QuantSession  # noqa: E402
from qtapp.core.run.snapshot import InventoryView  # noqa: E402


def other_load(before, after, wall: float) -> float | None:
    if before is None or after is None or wall <= 0:
        return None
    return max(0.0, ((after[0] - before[0]) - (after[1] - before[1])) / wall)


def timed(fn):
    t0, c0 = time.perf_counter(), _cpu_seconds()
    value = fn()
    wall = time.perf_counter() - t0
    return value, wall, other_load(c0, _cpu_seconds(), wall)


def one_rep(name: str) -> dict:
    recipe = QuantRecipe(model=f"torchvision:{name}", calibration=DataSpec(source="random"),
                         evaluation=DataSpec(source="random", batches=4))
    session = drive(QuantSession.open(recipe))
    snap = session.snapshot()
    evaluation, _ = snap.open_evaluation()
    loads = []

    calibrated, t_cal, l = timed(lambda: drive(calibrate(snap, CancelToken())))
    loads.append(l)
    qmodel, t_conv, l = timed(lambda: calibrated.convert(snap.inventory.float_layers))
    loads.append(l)
    outputs = []
    _, t_cmp, l = timed(lambda: drive(compare_outputs(session.loaded.module, qmodel, evaluation, None, outputs)))
    loads.append(l)
    snap = replace(snap, calibrated=calibrated)
    (points, side), t_ana, l = timed(lambda: drive(analyse_points(snap, calibrated, qmodel, evaluation,
                                                                           None, data_key="bench")))
    loads.append(l)
    # a toggle: the fourth layer kept float, reconverted from the same calibration
    head = snap.inventory.heads[3]
    snap2 = replace(snap, inventory=InventoryView(snap.inventory.heads, (head,),
                                                                     snap.inventory.quantized_heads,
                                                                     snap.inventory.points), point_side=side)
    qmodel2, t_conv2, l = timed(lambda: calibrated.convert([head]))
    loads.append(l)
    _, t_cmp2, l = timed(lambda: drive(compare_outputs(session.loaded.module, qmodel2, evaluation, None, outputs)))
    loads.append(l)
    _, t_ana2, l = timed(lambda: drive(analyse_points(snap2, calibrated, qmodel2, evaluation, None,
                                                                data_key="bench")))
    loads.append(l)
    return {"points": len(points), "bad": sum(1 for p in points if p.diagnosis),
            "calibrate_s": t_cal, "convert_s": t_conv, "compare_s": t_cmp, "analysis_s": t_ana,
            "reconvert_convert_s": t_conv2, "reconvert_compare_s": t_cmp2, "reconvert_analysis_s": t_ana2,
            "other_load_max": max((x for x in loads if x is not None), default=None)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="resnet18,efficientnet_b7")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", help="write every figure here")
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {args.threads} threads, {os.cpu_count()} CPUs")
    report = {"torch": torch.__version__, "threads": args.threads, "models": {}}
    for name in args.models.split(","):
        reps = [one_rep(name) for _ in range(args.reps)]
        med = {k: statistics.median(r[k] for r in reps) for k in reps[0] if k not in ("points", "bad", "other_load_max")}
        plain = med["calibrate_s"] + med["convert_s"] + med["compare_s"]
        replain = med["reconvert_convert_s"] + med["reconvert_compare_s"]
        summary = {"points": reps[0]["points"], "bad": reps[0]["bad"], "plain_s": plain,
                   "analysis_s": med["analysis_s"], "ratio": (plain + med["analysis_s"]) / plain,
                   "reconvert_plain_s": replain, "reconvert_analysis_s": med["reconvert_analysis_s"],
                   "reconvert_ratio": (replain + med["reconvert_analysis_s"]) / replain,
                   "other_load_max": max((r["other_load_max"] or 0.0) for r in reps), "medians": med, "reps": reps}
        report["models"][name] = summary
        busy = " (WARNING: other processes were busy: figures inflated)" if summary["other_load_max"] > 0.3 else ""
        print(f"{name}: {summary['points']} points ({summary['bad']} bad)\n"
              f"  quantize-and-compare {plain:6.2f} s, + analysis {med['analysis_s']:5.2f} s = "
              f"{summary['ratio']:.2f}x\n"
              f"  after a toggle:      {replain:6.2f} s, + analysis {med['reconvert_analysis_s']:5.2f} s = "
              f"{summary['reconvert_ratio']:.2f}x{busy}")
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
