"""Size on disk (as TorchScript) and batch-1 latency, float and quantized measured side by side."""

from __future__ import annotations

import io
import statistics
import time
import warnings
from dataclasses import dataclass

from ._torchao_compat import quiet_ao
from .progress import CancelToken, Job, Stage


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
            try:
                with torch.no_grad():
                    return torch.jit.trace(model, example, check_trace=False), "traced (torch.jit.script failed)"
            except Exception as trace_exc:  # noqa: BLE001
                raise RuntimeError(f"cannot convert to TorchScript: script failed ({script_exc!s:.200}); "
                                   f"trace failed ({trace_exc!s:.200})") from trace_exc


def torchscript_bytes(scripted) -> int:
    import torch

    buf = io.BytesIO()
    with quiet_ao():
        torch.jit.save(scripted, buf)
    return buf.tell()


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


@dataclass
class Latency:
    float_ms: float
    quantized_ms: float
    runs: int
    threads: int
    other_load: float | None = None  # CPU cores other processes kept busy while this measured

    @property
    def speedup(self) -> float:
        return self.float_ms / self.quantized_ms


def measure_latency(float_model, q_model, example: tuple, warmup: int = 5, min_runs: int = 10,
                    max_runs: int = 50, budget_s: float = 4.0, cancel: CancelToken | None = None) -> Job[Latency]:
    """Median batch-1 latency, float and quantized interleaved run by run so that both see the
    same machine state (a background spike hits both, not one)."""
    import torch

    threads = torch.get_num_threads()
    times = {"f": [], "q": []}
    stage = Stage("latency", max_runs, cancel)
    with torch.no_grad(), quiet_ao():
        for _ in range(warmup):
            float_model(*example)
            q_model(*example)
        start = time.perf_counter()
        cpu_before = _cpu_seconds()
        for i in range(max_runs):
            for key, model in (("f", float_model), ("q", q_model)):
                t0 = time.perf_counter()
                model(*example)
                times[key].append((time.perf_counter() - t0) * 1000)
            yield stage.step(i + 1, f"{i + 1} runs")
            if i + 1 >= min_runs and time.perf_counter() - start > budget_s:
                break
    other_load = None
    cpu_after = _cpu_seconds()
    if cpu_before is not None and cpu_after is not None:
        wall = time.perf_counter() - start
        other_load = max(0.0, ((cpu_after[0] - cpu_before[0]) - (cpu_after[1] - cpu_before[1])) / wall)
    return Latency(statistics.median(times["f"]), statistics.median(times["q"]), len(times["f"]), threads,
                   other_load)
