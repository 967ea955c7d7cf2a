"""Time exported files the way a deployment runs them: a fresh process that loads the files (float and
one or more int8 files of one format) in that format's runtime and nothing else, a fixed thread count, the
files interleaved run by run. Formats: pt (TorchScript), ptl (the lite interpreter), onnx (ONNX Runtime's CPU
provider), pte (the ExecuTorch runtime with its XNNPACK delegate), pt2 (torch.export.load's module, eager torch).

Run by measure.measure_files (not by users): `python -m qtapp.core.deploy.latency_worker SPEC.json`. Prints
a JSON line at most every REPORT_EVERY_S ({"round": rounds so far, "float_ms": [...], "quantized_ms":
[...]} for the rounds since the last line; with several int8 files, "quantized_ms" holds a list per file) and
a last line with the thread count the runtime ran on (fewer than asked when other processes keep cores busy:
see free_threads; for a .pte, read back from ExecuTorch's own threadpool, which is sized to it before loading),
the count asked, and how many CPU cores other processes kept busy meanwhile.
"""

from __future__ import annotations

import json
import sys
import time
import warnings

from .measure import _cpu_seconds
from .pt2 import load_pt2

MIN_WALL_S = 1.0
REPORT_EVERY_S = 0.1
PROBE_S = 0.3  # how long the other processes' load is sampled before choosing the thread count


def load(kind: str, path: str, threads: int):
    """A callable running the file at `path` on a tuple of tensors, as `kind`'s runtime runs it."""
    import torch

    if kind == "pt":
        model = torch.jit.load(path, map_location="cpu").eval()
        return lambda inputs: model(*inputs)
    if kind == "ptl":
        from torch.jit.mobile import _load_for_lite_interpreter

        model = _load_for_lite_interpreter(path)
        return lambda inputs: model(*inputs)
    if kind == "onnx":
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
        # Two sessions (float and int8) live in this process: ORT's idle workers spin by default and
        # would steal the cores the other session is timed on (the same file measured 4.5 and 7.1 ms).
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
        names = [i.name for i in session.get_inputs()]
        return lambda inputs: session.run(None, {n: t.numpy() for n, t in zip(names, inputs)})
    if kind == "pt2":
        model = load_pt2(path)
        return lambda inputs: model(*inputs)
    if kind == "pte":
        import executorch.kernels.quantized  # noqa: F401 - a torchao embedding's kernels (embedding_4bit)
        from executorch.runtime import Runtime

        method = Runtime.get().load_program(path).load_method("forward")
        return lambda inputs: method.execute(list(inputs))
    raise ValueError(f"unknown format {kind!r}")


def set_executorch_threads(threads: int) -> None:
    """Size ExecuTorch's own threadpool (XNNPACK's threads), which torch.set_num_threads does not touch: by
    default it holds one thread per core whatever the count asked. Done before any program is loaded:
    resetting the pool under a loaded program crashed the process (executorch 1.5.1)."""
    from executorch.extension.pybindings.portable_lib import _unsafe_reset_threadpool  # the executorch extra

    _unsafe_reset_threadpool(threads)


def executorch_threads() -> int:
    """The threads ExecuTorch's threadpool holds: what a .pte was timed on."""
    from executorch.extension.pybindings.portable_lib import _threadpool_get_thread_count  # the executorch extra

    return int(_threadpool_get_thread_count())


def free_threads(asked: int, probe_s: float = PROBE_S) -> int:
    """The threads to time on: `asked`, or as many as the cores other processes leave free. Threads that
    outnumber free cores wait on each other at every op (an OpenMP barrier waits for a thread that is not
    running): on 2 cores with 1 kept busy, 2 threads timed the demo at 76 ms where 1 thread takes 0.2 ms."""
    import os

    if asked <= 1:
        return asked
    before = _cpu_seconds()
    time.sleep(probe_s)
    after = _cpu_seconds()
    if before is None or after is None:
        return asked
    busy = max(0.0, ((after[0] - before[0]) - (after[1] - before[1])) / probe_s)
    return max(1, min(asked, int((os.cpu_count() or asked) - busy + 0.5)))


def _protocol_stream():
    """The parent reads this process's stdout as JSON lines: keep that stream for them alone. A model
    that prints (TorchScript's print writes to file descriptor 1) would break it, so descriptor 1 goes to
    /dev/null; errors still reach stderr."""
    import os

    sys.stdout.flush()
    out = os.fdopen(os.dup(1), "w", buffering=1)
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    os.close(devnull)
    return out


def main(argv: list[str]) -> int:
    with open(argv[0]) as f:
        spec = json.load(f)
    out = _protocol_stream()
    import torch

    asked = int(spec["threads"])
    threads = free_threads(asked)
    torch.set_num_threads(threads)
    kind = spec.get("kind", "pt")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # runtimes' deprecation notices: not this run's business
        if kind == "pte":  # before any program is loaded
            set_executorch_threads(threads)
        several = isinstance(spec["quantized"], list)
        quantized = spec["quantized"] if several else [spec["quantized"]]
        float_model = load(kind, spec["float"], threads)
        int8_models = [load(kind, path, threads) for path in quantized]
        inputs = tuple(torch.load(spec["inputs"], weights_only=True))

        def fresh():
            return {"float_ms": [], "quantized_ms": [[] for _ in int8_models]}

        def line(i, batch):
            q = batch["quantized_ms"] if several else batch["quantized_ms"][0]
            return json.dumps({"round": i + 1, "float_ms": batch["float_ms"], "quantized_ms": q}) + "\n"

        with torch.inference_mode():
            for _ in range(int(spec["warmup"])):
                for model in (float_model, *int8_models):
                    model(inputs)
            start = time.perf_counter()
            before = _cpu_seconds()
            # At least MIN_WALL_S of timed rounds, whatever max_runs says: the other-load figure counts CPU
            # time in clock ticks (10 ms), which a few milliseconds of a tiny model cannot resolve.
            limit = int(spec["max_runs"]) * 100
            batch, said = fresh(), start
            for i in range(limit):
                t0 = time.perf_counter()
                float_model(inputs)
                batch["float_ms"].append((time.perf_counter() - t0) * 1000)
                for k, model in enumerate(int8_models):
                    t0 = time.perf_counter()
                    model(inputs)
                    batch["quantized_ms"][k].append((time.perf_counter() - t0) * 1000)
                now = time.perf_counter()
                elapsed = now - start
                done = (i + 1 >= int(spec["min_runs"]) and elapsed > float(spec["budget_s"])) or \
                    (i + 1 >= int(spec["max_runs"]) and elapsed >= MIN_WALL_S)
                # Rounds go out in batches, at most ten lines a second: the parent reading one line per
                # round of a tiny model would itself keep a core busy, measured as other load.
                if done or now - said >= REPORT_EVERY_S:
                    out.write(line(i, batch))
                    batch, said = fresh(), now
                if done:
                    break
            if batch["float_ms"]:  # the round limit ended the loop between two lines
                out.write(line(i, batch))
    wall, after = time.perf_counter() - start, _cpu_seconds()
    other = None
    if before is not None and after is not None:  # machine CPU time minus this process's, per second
        other = max(0.0, ((after[0] - before[0]) - (after[1] - before[1])) / wall)
    used = executorch_threads() if kind == "pte" else threads
    out.write(json.dumps({"other_load": other, "threads": used, "threads_asked": asked}) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
