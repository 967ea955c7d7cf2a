#!/usr/bin/env python
"""Sensitivity and tune: how long they take, how many conversions and calibrations they use, and what
the naive way (one calibration per configuration) would cost, measured side by side in one run.

  sensitivity  resnet18 (torchvision, weights=None, random calibration 8 x 16 and evaluation 4 x 16):
               every toggleable point both ways from one calibration (2 conversions per point, plus the
               all-int8 and all-float configurations)
  tune         the bundled demo, --target sqnr>=40 (and the outlier test model, sqnr>=30 and >=40)

For the naive count, one calibration of the same recipe is timed in the same run: naive seconds =
configurations x (one calibration + one conversion and comparison, the run's own mean).
    python benchmarks/bench_tune.py [--json benchmarks/results/tune.json] [--skip-resnet]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from qtapp.core.analysis.metrics import Target  # noqa: E402
from qtapp.core.base.progress import CancelToken, drive  # noqa: E402
from qtapp.core.config.recipe import DataSpec, QuantRecipe  # noqa: E402
from qtapp.core.deploy.measure import _cpu_seconds  # noqa: E402
from qtapp.core.run import jobs  # noqa: E402
from qtapp.core.run.calibrating import calibrate  # noqa: E402
from qtapp.core.run.session import QuantSession  # noqa: E402
from qtapp.core.tune.search import Budget  # noqa: E402

OUTLIER = f"{Path(__file__).resolve().parents[1] / 'tests' / 'fixtures' / 'point_kinds.py'}:build"


def busy(c0, c1, wall):
    if c0 is None or c1 is None or wall <= 0:
        return None
    return round(max(0.0, ((c1[0] - c0[0]) - (c1[1] - c0[1])) / wall), 2)


def one_calibration_s(session) -> float:
    snap = session.snapshot()
    t0 = time.perf_counter()
    drive(calibrate(snap, CancelToken()))
    return time.perf_counter() - t0


def sensitivity_run(recipe: QuantRecipe) -> dict:
    session = drive(QuantSession.open(recipe))
    calib_s = one_calibration_s(session)
    c0, t0 = _cpu_seconds(), time.perf_counter()
    outcome = drive(jobs.sensitivity(session.snapshot()))
    wall = time.perf_counter() - t0
    sens = outcome.result.sensitivity
    per_conversion = sens.seconds / max(sens.conversions, 1)
    return {"model": recipe.model, "points": len(sens.points), "conversions": sens.conversions, "calibrations": 1,
            "sensitivity_s": round(sens.seconds, 2), "whole_job_s": round(wall, 2),
            "one_calibration_s": round(calib_s, 2), "per_conversion_s": round(per_conversion, 3),
            "naive_calibrations": sens.conversions,
            "naive_s": round(sens.conversions * (calib_s + per_conversion), 1),
            "other_load_cores": busy(c0, _cpu_seconds(), wall),
            "top": [(p.name, round(sens.gain(p), 3) if sens.gain(p) is not None else None) for p in sens.points[:5]]}


def tune_run(recipe: QuantRecipe, target: str) -> dict:
    session = drive(QuantSession.open(recipe))
    calib_s = one_calibration_s(session)
    c0, t0 = _cpu_seconds(), time.perf_counter()
    outcome = drive(jobs.tune(session.snapshot(), Target.parse(target), Budget()))
    wall = time.perf_counter() - t0
    t = outcome.tune
    per_conversion = t.seconds / max(t.conversions, 1)
    return {"model": recipe.model, "kwargs": recipe.kwargs, "target": target, "reached": t.reached,
            "start": round(t.start.score, 2), "chosen": round(t.best.score, 2),
            "float_points": sorted(t.best.config.float_points), "equalize": t.best.config.equalize,
            "overrides": {n: o.to_dict() for n, o in t.best.config.overrides},
            "configurations": len(t.steps), "conversions": t.conversions, "calibrations": t.calibrations,
            "search_s": round(t.seconds, 2), "whole_job_s": round(wall, 2), "one_calibration_s": round(calib_s, 2),
            "naive_s": round(len(t.steps) * (calib_s + per_conversion), 1),
            "other_load_cores": busy(c0, _cpu_seconds(), wall)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--json", help="write every figure here")
    parser.add_argument("--skip-resnet", action="store_true", help="only the small models")
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    import torch

    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    out = {"torch": torch.__version__, "threads": torch.get_num_threads(), "sensitivity": [], "tune": []}
    if not args.skip_resnet:
        r = sensitivity_run(QuantRecipe(model="torchvision:resnet18", calibration=DataSpec(source="random"),
                                        evaluation=DataSpec(source="random", batches=4)))
        out["sensitivity"].append(r)
        print(f"sensitivity {r['model']}: {r['points']} points both ways, {r['conversions']} conversions of 1 "
              f"calibration in {r['sensitivity_s']} s (whole job {r['whole_job_s']} s); naive: "
              f"{r['naive_calibrations']} calibrations, ~{r['naive_s']} s; busy cores {r['other_load_cores']}")
    for recipe, target in ((QuantRecipe(model="demo"), "sqnr>=40"),
                           (QuantRecipe(model=OUTLIER, kwargs={"kind": "outlier"}), "sqnr>=30"),
                           (QuantRecipe(model=OUTLIER, kwargs={"kind": "outlier"}), "sqnr>=40")):
        r = tune_run(recipe, target)
        out["tune"].append(r)
        print(f"tune {r['model'].rpartition('/')[2]} {r['kwargs'] or ''} {target}: "
              f"{'reached' if r['reached'] else 'NOT reached'} {r['start']} -> {r['chosen']} dB, float "
              f"{r['float_points']}, equalize {r['equalize']}; {r['configurations']} configurations, "
              f"{r['conversions']} conversions, {r['calibrations']} calibration(s), search {r['search_s']} s, "
              f"whole job {r['whole_job_s']} s; naive ~{r['naive_s']} s; busy cores {r['other_load_cores']}")
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
