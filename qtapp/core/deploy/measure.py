"""TorchScript conversion, and batch-1 latency of TorchScript files timed side by side in a clean process."""

from __future__ import annotations

import math
import statistics
import time
import warnings
from dataclasses import dataclass

from ..base.compat import quiet_ao
from ..base.errors import QtappError, first_line
from ..base.progress import CancelToken, Job, Stage
from ..base.scratch import scratch_dir


def to_torchscript(model, example: tuple):
    """Script the model (keeps control flow); fall back to tracing. Returns (module, how)."""
    import torch

    if isinstance(model, torch.jit.ScriptModule):
        return model, "already TorchScript"
    with quiet_ao(), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*torch\.jit\.(script|trace).*deprecated.*", category=FutureWarning)
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
        try:
            return torch.jit.script(model), "scripted"
        except Exception as script_exc:  # noqa: BLE001 - many models only trace; both failures are reported
            try:  # strict=False: outputs that hold a dict (logits, {"aux": ...}) trace as they are
                with torch.no_grad():
                    return (torch.jit.trace(model, example, check_trace=False, strict=False),
                            "traced (torch.jit.script failed)")
            except Exception as trace_exc:  # noqa: BLE001
                raise QtappError(f"cannot convert the model to TorchScript for .pt/.ptl files: torch.jit.script "
                                 f"failed ({first_line(script_exc, 200)}) and so did torch.jit.trace "
                                 f"({first_line(trace_exc, 200)})") from None


def _cpu_seconds() -> tuple[float, float] | None:
    """(CPU seconds used by the whole machine, by this process) so far; None off Linux."""
    import os

    try:
        with open("/proc/stat") as f:
            fields = [int(v) for v in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    busy = sum(fields) - fields[3] - (fields[4] if len(fields) > 4 else 0)  # minus idle and iowait
    t = os.times()
    return busy / os.sysconf("SC_CLK_TCK"), t.user + t.system


def worker_command(module: str, *args: str) -> list[str]:
    """`python -m module args` that imports nothing from the working folder: `-m` would put the current
    folder first on sys.path, and a `json.py` planted there would run (-P keeps it off, Python 3.11+;
    callers also start the worker in a folder of their own)."""
    import sys

    return [sys.executable, *(["-P"] if sys.version_info >= (3, 11) else []), "-m", module, *args]


def worker_env(**extra: str) -> dict:
    """The environment for a worker: this process's, with qtapp's own folder on PYTHONPATH (so a
    checkout run without installing still finds it) and no relative PYTHONPATH entries (which would
    name the working folder)."""
    import os
    from pathlib import Path

    root = str(Path(__file__).resolve().parents[3])  # the folder that holds qtapp/
    given = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p and os.path.isabs(p)]
    return {**os.environ, "PYTHONPATH": os.pathsep.join(dict.fromkeys([*given, root])), **extra}


@dataclass
class Latency:
    float_ms: float
    quantized_ms: float
    runs: int
    threads: int
    other_load: float | None = None  # CPU cores other processes kept busy while this measured
    format: str = "pt"  # the files timed: pt, ptl, onnx, pte or pt2, each in its own runtime
    threads_asked: int | None = None  # more than `threads` when busy cores left fewer free (latency_worker)

    @property
    def speedup(self) -> float:
        return self.float_ms / self.quantized_ms


RUNTIMES = {"pt": "TorchScript", "ptl": "the lite interpreter", "onnx": "ONNX Runtime", "pte": "the ExecuTorch runtime",
            "pt2": "torch.export's module"}


def measure_files(float_path, quantized_path, example: tuple, threads: int | None = None, warmup: int = 5,
                  min_runs: int = 10, max_runs: int = 50, budget_s: float = 4.0,
                  cancel: CancelToken | None = None, kind: str = "pt", label: str = "latency") -> Job[Latency]:
    """Batch-1 latency of two files of one format (`kind`: pt, ptl, onnx, pte, pt2), timed in a separate
    process that loads only them in that format's runtime (as a deployment would), with `threads`
    intra-op threads, float and int8 interleaved."""
    found = yield from measure_many(float_path, [quantized_path], example, threads, warmup, min_runs, max_runs,
                                    budget_s, cancel, kind, label)
    return found[0]


def measure_many(float_path, quantized_paths, example: tuple, threads: int | None = None, warmup: int = 5,
                 min_runs: int = 10, max_runs: int = 50, budget_s: float = 4.0,
                 cancel: CancelToken | None = None, kind: str = "pt", label: str = "latency") -> Job[list]:
    """measure_files for several int8 files against one float file, in one worker process (one start-up,
    every file interleaved run by run): a Latency per int8 file, in order."""
    import json
    import subprocess
    from pathlib import Path

    import torch

    threads = threads or torch.get_num_threads()
    with scratch_dir("latency") as tmp:
        inputs = Path(tmp) / "inputs.pt"
        torch.save(list(example), inputs)
        spec = Path(tmp) / "spec.json"
        quantized = [str(Path(p).absolute()) for p in quantized_paths]
        spec.write_text(json.dumps({"float": str(Path(float_path).absolute()),
                                    "quantized": quantized, "inputs": str(inputs),
                                    "threads": threads, "warmup": warmup, "min_runs": min_runs,
                                    "max_runs": max_runs, "budget_s": budget_s, "kind": kind}))
        proc = subprocess.Popen(worker_command("qtapp.core.deploy.latency_worker", str(spec)), stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, cwd=tmp,
                                env=worker_env(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads)))
        stage = Stage(label, max_runs, cancel)
        times, last = {"float": [], "quantized": [[] for _ in quantized]}, {}
        first, stage_start = 0, time.perf_counter()  # the first timed round, and when it was said
        try:
            yield stage.step(0, "starting a clean process")
            for line in proc.stdout:
                row = json.loads(line)
                if "round" not in row:
                    last = row
                    continue
                if not times["float"]:  # time left from the pace of the timed rounds, not the process start
                    stage, first = Stage(label, max_runs, cancel, paced_from=row["round"]), row["round"]
                    stage_start = time.perf_counter()
                times["float"] += row["float_ms"]
                for mine, more in zip(times["quantized"], row["quantized_ms"]):
                    mine += more
                if row["round"] > first:  # the worker stops at min_runs once budget_s has passed: runs to expect
                    per_round = (time.perf_counter() - stage_start) / (row["round"] - first)
                    stage.total = min(max_runs, max(min_runs, row["round"] + 1,
                                                    math.ceil(first + budget_s / max(per_round, 1e-9))))
                # the stage ends when the worker has said its last line, with the real count of runs
                yield stage.step(min(row["round"], stage.total - 1), f"{row['round']} runs in a separate process")
            try:  # its output ended: the worker is exiting (a cancel or an error above kills it at once)
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                pass
        finally:
            if proc.poll() is None:
                proc.kill()
            stderr = proc.stderr.read()
            proc.wait()
        if proc.returncode == 0 and times["float"]:
            yield stage.step(stage.total, f"{len(times['float'])} runs in a separate process")
        if proc.returncode != 0 or not times["float"]:
            said = [line for line in stderr.strip().splitlines() if "cpuinfo" not in line]
            tail = said[-1:] or ["no output"]
            raise QtappError(f"timing the {kind} files in {RUNTIMES.get(kind, kind)} in a separate process failed: "
                             f"{tail[0][:300]}")
    return [Latency(statistics.median(times["float"]), statistics.median(q), len(times["float"]),
                    int(last.get("threads", threads)), last.get("other_load"), kind,
                    int(last.get("threads_asked", threads))) for q in times["quantized"]]
