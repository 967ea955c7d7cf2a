#!/usr/bin/env python
"""Peak memory of quantize, sensitivity and tune on resnet18, as the window runs them: in sequence in one
session, each job's outcome adopted before the next starts (adopt, adopt, adopt_tuned).

For each step: the peak resident memory of this process while the step ran (VmHWM, reset before each step
through /proc/self/clear_refs), the resident memory after it, what glibc's heap holds in use and free
(mallinfo2; what it keeps free is resident until the heap is trimmed), and how many nn.Modules are alive.
The latency measurements run in a short-lived worker process of their own, not counted here.

  default   the core alone: a QuantSession driven by progress.drive
  --window  the same through the real window, offscreen (MainWindow: Open, Run, Sensitivity, Tune)
  --fresh   each step in a fresh process of its own (open + that one job), for comparison

torchvision resnet18 with random weights (--weights none), random calibration (--batches x 16) and
evaluation (4 x 16) data, the app's default recipe otherwise (FX static, fbgemm, histogram observer).
    python benchmarks/bench_memory.py [--window] [--fresh] [--target sqnr>=40] [--budget float<=3]
                                      [--batches 8] [--json benchmarks/results/memory.json]
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import json
import os
import re
import subprocess
import sys
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

STEPS = ("quantize", "sensitivity", "tune")


# -- what is measured --------------------------------------------------------------------------------------
def _status_mb(key: str) -> float:
    text = Path("/proc/self/status").read_text()
    return int(re.search(rf"{key}:\s+(\d+)", text).group(1)) / 1024


def reset_peak() -> bool:
    """Start VmHWM again from the current RSS (Linux 4.0+); False where that is not allowed."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


class _MallInfo2(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks",
                                                 "fsmblks", "uordblks", "fordblks", "keepcost")]


def heap_mb() -> tuple[float | None, float | None]:
    """(in use, free but kept) in glibc's heap, MB; (None, None) without glibc 2.33+."""
    try:
        info = ctypes.CDLL(None).mallinfo2
    except (OSError, AttributeError):
        return None, None
    info.restype = _MallInfo2
    m = info()
    return (m.uordblks + m.hblkhd) / 1e6, m.fordblks / 1e6


def live_modules() -> int:
    import torch

    return sum(issubclass(type(o), torch.nn.Module) for o in gc.get_objects())


def measured(name: str, t0: float, peak_reset: bool, **extra) -> dict:
    gc.collect()
    in_use, free = heap_mb()
    row = {"step": name, "peak_mb": round(_status_mb("VmHWM")), "peak_since_start": not peak_reset,
           "rss_mb": round(_status_mb("VmRSS")), "heap_in_use_mb": in_use and round(in_use),
           "heap_free_mb": free and round(free), "live_modules": live_modules(),
           "seconds": round(time.perf_counter() - t0, 1), **extra}
    mark = "*" if row["peak_since_start"] else " "
    print(f"{name:12s} peak {row['peak_mb']:6d} MB{mark}  after {row['rss_mb']:6d} MB"
          f"  heap in use {row['heap_in_use_mb']} MB, free {row['heap_free_mb']} MB  modules {row['live_modules']:5d}"
          f"  {row['seconds']:6.1f} s", flush=True)
    return row


# -- the core alone ----------------------------------------------------------------------------------------
def recipe(args):
    from qtapp.core.config.recipe import DataSpec, QuantRecipe

    return QuantRecipe(model="torchvision:resnet18", weights="none",
                       calibration=DataSpec(source="random", batches=args.batches, batch_size=16),
                       evaluation=DataSpec(source="random", batches=4, batch_size=16))


def run_core(args, steps=STEPS) -> list[dict]:
    from qtapp.core.analysis.metrics import Target
    from qtapp.core.base.progress import drive
    from qtapp.core.run import jobs
    from qtapp.core.run.session import QuantSession
    from qtapp.core.tune.search import Budget

    rows = []
    peak_reset, t0 = reset_peak(), time.perf_counter()
    session = drive(QuantSession.open(recipe(args)))
    rows.append(measured("open", t0, peak_reset))
    for step in steps:
        peak_reset, t0 = reset_peak(), time.perf_counter()
        if step == "quantize":
            session.adopt(drive(jobs.quantize(session.snapshot())))
            extra = {"sqnr_db": round(session.result.output.sqnr_db, 2)}
        elif step == "sensitivity":
            session.adopt(drive(jobs.sensitivity(session.snapshot())))
            extra = {"conversions": session.result.sensitivity.conversions}
        else:
            outcome = drive(jobs.tune(session.snapshot(), Target.parse(args.target), Budget.parse(args.budget)))
            session.adopt_tuned(outcome)
            del outcome
            t = session.result.tune
            extra = {"conversions": t.conversions, "reached": t.reached, "score": round(t.best.score, 2)}
        rows.append(measured(step, t0, peak_reset, **extra))
    return rows


def run_fresh(args) -> list[dict]:
    """Each step in a process of its own (this script again, with --only)."""
    rows = []
    for step in STEPS:
        cmd = [sys.executable, __file__, "--only", step, "--target", args.target, "--budget", args.budget,
               "--batches", str(args.batches)]
        out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
        print(out, end="", flush=True)
        rows.extend(json.loads(out.strip().splitlines()[-1]))
    return rows


# -- through the window ------------------------------------------------------------------------------------
def run_window(args) -> list[dict]:
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    import tempfile

    os.environ["QTAPP_SETTINGS_DIR"] = tempfile.mkdtemp(prefix="bench-memory-settings-")
    from PySide6.QtWidgets import QApplication

    from qtapp.core.analysis.metrics import Target
    from qtapp.core.tune.search import Budget
    from qtapp.ui.app import make_settings
    from qtapp.ui.main_window import MainWindow

    app = QApplication.instance() or QApplication([])
    peak_reset, t0 = reset_peak(), time.perf_counter()
    window = MainWindow(make_settings())
    window.resize(1480, 900)
    window.show()
    rows = [measured("window", t0, peak_reset)]

    def wait(done, timeout_s=3600):
        end = time.monotonic() + timeout_s
        while not done():
            app.processEvents()
            time.sleep(0.02)
            if time.monotonic() > end:
                raise TimeoutError("the job did not finish")
        for _ in range(20):  # the result's panels and plots
            app.processEvents()

    def idle():
        return not window.runner.busy and window.controller.waiting is None

    peak_reset, t0 = reset_peak(), time.perf_counter()
    window.open_recipe_object(recipe(args))
    wait(lambda: window.session is not None and idle())
    rows.append(measured("open", t0, peak_reset))
    for step in STEPS:
        before = window.session.result
        peak_reset, t0 = reset_peak(), time.perf_counter()
        if step == "quantize":
            window.run_quantize()
        elif step == "sensitivity":
            window.run_sensitivity()
        else:
            window.run_tune(Target.parse(args.target), Budget.parse(args.budget))
        wait(lambda: window.session.result is not before and idle())
        rows.append(measured(step, t0, peak_reset))
    window.close()
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--window", action="store_true", help="through the window, offscreen")
    parser.add_argument("--fresh", action="store_true", help="each step in a fresh process")
    parser.add_argument("--only", choices=STEPS, help=argparse.SUPPRESS)  # one step, for --fresh
    parser.add_argument("--target", default="sqnr>=40", help="the tune's target (default sqnr>=40)")
    parser.add_argument("--budget", default="float<=3", help="the tune's budget (default float<=3)")
    parser.add_argument("--batches", type=int, default=8, help="calibration batches of 16 (default 8)")
    parser.add_argument("--json", help="write every figure here")
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    import torch

    if args.only:
        print(json.dumps(run_core(args, (args.only,))[1:]))
        return 0
    mode = "window" if args.window else "fresh" if args.fresh else "core"
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; resnet18 random weights, calibration "
          f"{args.batches} x 16, evaluation 4 x 16; tune {args.target} within {args.budget}; {mode}", flush=True)
    rows = run_window(args) if args.window else run_fresh(args) if args.fresh else run_core(args)
    print("* peak since the process started (VmHWM could not be reset)" if any(r["peak_since_start"] for r in rows)
          else "peak: VmHWM while the step ran (reset before each)")
    if args.json:
        Path(args.json).write_text(json.dumps({"torch": torch.__version__, "threads": torch.get_num_threads(),
                                               "mode": mode, "target": args.target, "budget": args.budget,
                                               "batches": args.batches, "steps": rows}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
