#!/usr/bin/env python
"""torchao low-bit weights in ExecuTorch .pte files (issue 20, "Measured, in benchmarks/"), in one run.

1. Encoder: all-MiniLM-L6-v2 (benchmarks/real_models/minilm.py, 1x32 ids + 1x32 mask, its paraphrase
   retrieval task on 64 evaluation sentences). Through the qtapp CLI, each written as a .pte:
     float   `qtapp-cli export --format pte`
     8da8w   `quantize --backend torchao --method dynamic --weight-bits 8`
     8da4w   `quantize ... --weight-bits 4 --group-size 32`
     tuned   `tune ... --weight-bits 4 --target sqnr>=20 --budget size<=NMB` (N: halfway between the 8da4w and
             the 8da8w file, unless --tune-budget gives it)
   and written BY HAND with torchao + ExecuTorch's documented recipe (this file imports no qtapp code for it):
   the same layers with the same schemes (every nn.Linear: Int8DynamicActivationIntxWeightConfig, int8 per
   output channel or int4 in groups of 32, symmetric; every nn.Embedding: IntxWeightOnlyConfig, int8 per row
   or int4 in groups of 32, padding_idx None), torch.export -> to_edge_transform_and_lower(XnnpackPartitioner)
   -> to_executorch(do_quant_fusion_and_const_prop=True); and the float model the same way.
   For each file: the task metric and the output cosine against the float .pte, computed here from the .pte in
   ExecuTorch's runtime on the 64 evaluation samples; the app's own figures from report.json (its metric and
   cosine are of the eager quantized model); the size (os.path.getsize); latency from report.json and timed
   here, every file in one separate process, interleaved run by run, median of --runs, at each --threads.
2. Decoder: a tiny LlamaForCausalLM (benchmarks/real_models/tiny_llama.py, random weights), token ids in,
   float / 8da8w / 8da4w through the CLI at 1xN (--llm-len) and at 1x1: latency per token of a 1xN forward
   (median / N) and of a 1x1 forward, timed here the same way.
3. What sensitivity (`analyze --sensitivity`, 8da4w) and tune cost on the encoder: wall time of the CLI
   process and its peak resident memory (ru_maxrss from wait4: the largest process of its tree).

    .venv/bin/python benchmarks/bench_lowbit.py [--json benchmarks/results/lowbit.json] [--out /tmp/bench_lowbit]
    .venv/bin/python benchmarks/bench_lowbit.py --skip-llm --skip-sensitivity --skip-tune   # encoder rows only
    .venv/bin/python benchmarks/bench_lowbit.py --reuse        # keep the files a previous run wrote, time again

Each CLI run and each worker is a separate process, one at a time (nothing runs in parallel).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
RM = HERE / "real_models"
ENC_SPEC = f"{RM / 'minilm.py'}:build"
ENC_METRIC = f"{RM / 'task_metrics.py'}:pair_retrieval_at1"
ENC_SHAPE = "1,32;1,32"
LLM_SPEC = f"{RM / 'tiny_llama.py'}:build"
GROUP = 32


# ----------------------------------------------------------------------------------------------- helpers

def cli_path() -> str:
    exe = Path(sys.executable).parent / "qtapp-cli"
    return str(exe) if exe.exists() else shutil.which("qtapp-cli") or "qtapp-cli"


def run_proc(cmd: list[str], log: Path, env: dict | None = None) -> dict:
    """Run `cmd` to the end (stdout and stderr to `log`): wall time, peak RSS (wait4's ru_maxrss: the largest
    of the process and the children it reaped), exit code."""
    log.parent.mkdir(parents=True, exist_ok=True)
    shown = " ".join(c if c and " " not in c and ";" not in c and ">" not in c and "<" not in c else repr(c)
                     for c in cmd)
    print(f"  [{time.strftime('%H:%M:%S')}] $ {shown}", flush=True)
    with open(log, "w") as fh:
        t0 = time.perf_counter()
        p = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, cwd=ROOT,
                             env={**os.environ, "PYTHONWARNINGS": "ignore", **(env or {})})
        _pid, status, ru = os.wait4(p.pid, 0)
        wall = time.perf_counter() - t0
    rc = os.waitstatus_to_exitcode(status)
    p.returncode = rc
    out = {"cmd": shown, "rc": rc, "wall_s": round(wall, 1), "peak_rss_mb": round(ru.ru_maxrss / 1024, 0),
           "cpu_s": round(ru.ru_utime + ru.ru_stime, 1), "log": str(log)}
    tail = log.read_text(errors="replace").splitlines()[-3:]
    print(f"    rc {rc}, {wall:.0f} s, peak RSS {out['peak_rss_mb']:.0f} MB" + ("" if rc == 0 else f": {tail}"),
          flush=True)
    return out


def worker(kind: str, spec: dict, out_dir: Path) -> dict:
    """This file again in a fresh process (`--worker KIND SPEC.json`); its result JSON."""
    spec_path = out_dir / f"{kind}_spec.json"
    res_path = out_dir / f"{kind}_result.json"
    spec_path.write_text(json.dumps({**spec, "result": str(res_path)}, indent=1))
    res_path.unlink(missing_ok=True)
    run = run_proc([sys.executable, str(Path(__file__).resolve()), "--worker", kind, str(spec_path)],
                   out_dir / f"{kind}.log")
    if run["rc"] != 0 or not res_path.exists():
        raise SystemExit(f"worker {kind} failed (rc {run['rc']}): see {run['log']}")
    res = json.loads(res_path.read_text())
    res["process"] = run
    return res


def report_of(folder: Path) -> dict | None:
    p = folder / "report.json"
    return json.loads(p.read_text()) if p.exists() else None


def app_figures(folder: Path) -> dict:
    """What report.json says of a CLI run (the app's own figures)."""
    r = report_of(folder)
    if r is None:
        return {}
    out, lat, metric = r.get("output") or {}, r.get("latency_ms") or {}, (r.get("output") or {}).get("metric") or {}
    exp = next((e for e in r.get("exports", []) if e.get("format") == "pte"), {})
    bits = {}
    for layer in r.get("layers", []):
        if layer.get("quantized"):
            bits[layer["name"]] = layer.get("type")
    return {"metric_float": metric.get("float"), "metric_quantized": metric.get("quantized"),
            "cosine": out.get("cosine"), "sqnr_db": out.get("sqnr_db"),
            "size_float": (r.get("size_bytes") or {}).get("float"), "size_quantized": (r.get("size_bytes") or {}).get("quantized"),
            "latency_float_ms": lat.get("float"), "latency_quantized_ms": lat.get("quantized"),
            "latency_threads": lat.get("threads"), "latency_other_load": lat.get("other_load_cores"),
            "latency_runs": lat.get("runs"),
            "pte_verified": exp.get("verified"), "pte_sqnr_vs_float_db": exp.get("sqnr_vs_float_db"),
            "pte_notes": exp.get("notes"), "verdict": (r.get("verdict") or {}).get("reason"),
            "layers_quantized": len(bits), "layer_types": sorted(set(bits.values())),
            "points_kept_float": (r.get("points") or {}).get("kept_float")}


def overrides_of(folder: Path) -> dict:
    p = folder / "recipe.json"
    return json.loads(p.read_text()).get("overrides", {}) if p.exists() else {}


def md5(path) -> str:
    import hashlib

    h = hashlib.md5()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def mb(b) -> str:
    return "-" if b is None else f"{b / 1e6:.2f}"


def ms(v) -> str:
    return "-" if v is None else f"{v:.2f}"


# ----------------------------------------------------------------------------------------------- workers
# Run in their own processes. None imports qtapp.

def _quiet():
    import logging
    import warnings

    warnings.filterwarnings("ignore")
    logging.getLogger("torch").setLevel(logging.ERROR)


def w_hand(spec: dict) -> dict:
    """The encoder written by hand: float, 8da8w (+ int8 embeddings), 8da4w g32 (+ int4 g32 embeddings)."""
    _quiet()
    import copy

    import torch
    from torch import nn

    import executorch.kernels.quantized  # noqa: F401 - the quantized embedding kernels, at export and load
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir import ExecutorchBackendConfig, to_edge_transform_and_lower
    from torchao.quantization import (Int8DynamicActivationIntxWeightConfig, IntxWeightOnlyConfig, MappingType,
                                      quantize_)
    from torchao.quantization.granularity import PerAxis, PerGroup

    sys.path.insert(0, str(RM))
    import minilm  # benchmark code: the model factory, no qtapp

    torch.manual_seed(0)
    base = minilm.build().eval()
    example = (torch.zeros(1, minilm.SEQ, dtype=torch.int64), torch.zeros(1, minilm.SEQ, dtype=torch.int64))
    schemes = {
        "8da8w": (torch.int8, PerAxis(0)),
        "8da4w": (torch.int4, PerGroup(spec["group"])),
    }
    out = {}
    for name in spec["variants"]:
        model = copy.deepcopy(base)
        t0 = time.perf_counter()
        covered = {"linear": [], "embedding": []}
        if name != "float":
            dtype, gran = schemes[name]
            for fqn, m in model.named_modules():
                if isinstance(m, nn.Linear):
                    assert m.in_features % spec["group"] == 0, fqn
                    covered["linear"].append(fqn)
                elif isinstance(m, nn.Embedding):
                    covered["embedding"].append(fqn)
            with torch.no_grad():
                # every Embedding: weight-only, symmetric (the kernels ExecuTorch runs: embedding_byte/_4bit)
                quantize_(model, IntxWeightOnlyConfig(weight_dtype=dtype, granularity=gran,
                                                      mapping_type=MappingType.SYMMETRIC),
                          filter_fn=lambda m, fqn: isinstance(m, nn.Embedding))
                # every Linear: int8 dynamic activations (per token), symmetric weights
                quantize_(model, Int8DynamicActivationIntxWeightConfig(weight_dtype=dtype, weight_granularity=gran,
                                                                       weight_mapping_type=MappingType.SYMMETRIC))
            for fqn in covered["embedding"]:
                model.get_submodule(fqn).padding_idx = None  # else the fusion pattern misses the 3-arg embedding
        tq = time.perf_counter() - t0
        t0 = time.perf_counter()
        ep = torch.export.export(model, example)
        te = time.perf_counter() - t0
        t0 = time.perf_counter()
        edge = to_edge_transform_and_lower(ep, partitioner=[XnnpackPartitioner()])
        nodes = [n for n in edge.exported_program().graph.nodes if n.op == "call_function"]
        delegated = sum(1 for n in nodes if "call_delegate" in str(n.target))
        config = ExecutorchBackendConfig(do_quant_fusion_and_const_prop=True) if name != "float" else ExecutorchBackendConfig()
        et = edge.to_executorch(config)
        tl = time.perf_counter() - t0
        path = Path(spec["dir"]) / f"hand_{name}.pte"
        path.write_bytes(et.buffer)
        out[name] = {"path": str(path), "bytes": os.path.getsize(path), "quantize_s": round(tq, 2),
                     "export_s": round(te, 2), "lower_s": round(tl, 2), "delegated_subgraphs": delegated,
                     "linear_layers": len(covered["linear"]), "embedding_layers": covered["embedding"]}
        print(name, out[name], flush=True)
    return out


def _load_pte(path: str):
    from executorch.runtime import Runtime

    return Runtime.get().load_program(path).load_method("forward")


def _inputs_from(spec: dict):
    """A list of input tuples: the npz samples (batch 1 each) or seeded random ids of shape 1xN."""
    import numpy as np
    import torch

    if spec.get("npz"):
        with np.load(spec["npz"]) as z:
            keys = sorted(k for k in z.files if k.startswith("x"))
            xs = [torch.from_numpy(z[k]) for k in keys]
            y = z["y"] if "y" in z.files else None
        n = min(len(xs[0]), spec.get("samples") or len(xs[0]))
        return [tuple(x[i:i + 1].contiguous() for x in xs) for i in range(n)], y
    g = torch.Generator().manual_seed(spec.get("seed", 0))
    return [(torch.randint(0, spec["vocab"], (1, spec["length"]), generator=g, dtype=torch.int64),)
            for _ in range(spec.get("samples", 1))], None


def w_eval(spec: dict) -> dict:
    """Each .pte over the evaluation samples: its outputs against the float .pte's, the task metric."""
    _quiet()
    import numpy as np
    import torch

    import executorch.kernels.quantized  # noqa: F401

    sys.path.insert(0, str(RM))
    import task_metrics

    inputs, y = _inputs_from(spec)
    outs = {}
    for name, path in spec["files"].items():
        m = _load_pte(path)
        outs[name] = torch.cat([m.execute(list(x))[0].reshape(1, -1).float() for x in inputs])
    ref = outs[spec["reference"]]
    res = {}
    for name, o in outs.items():
        cos = torch.nn.functional.cosine_similarity(o, ref, dim=1)
        noise = ((o - ref) ** 2).sum().item()
        r = {"cosine_mean": float(cos.mean()), "cosine_min": float(cos.min()),
             "sqnr_db": None if noise == 0 else 10 * np.log10((ref ** 2).sum().item() / noise)}
        if spec.get("metric") and y is not None:
            r["metric"] = getattr(task_metrics, spec["metric"])(ref.numpy(), o.numpy(), y)
        if spec.get("argmax"):  # logits: how often the next-token argmax agrees with float's
            v = spec["vocab"]
            r["argmax_agreement"] = float((o.reshape(-1, v).argmax(1) == ref.reshape(-1, v).argmax(1)).float().mean())
        res[name] = r
    return {"samples": len(inputs), "files": res}


def _busy_seconds():
    with open("/proc/stat") as f:
        fields = [int(v) for v in f.readline().split()[1:]]
    t = os.times()
    return (sum(fields) - fields[3] - fields[4]) / os.sysconf("SC_CLK_TCK"), t.user + t.system


def w_time(spec: dict) -> dict:
    """Every file loaded in this one process, then timed interleaved run by run (the order rotates each
    round, and no file runs twice in a row), batch 1, ExecuTorch's threadpool at spec["threads"] (set before
    any program is loaded: resetting it once XNNPACK delegates hold it aborts the process)."""
    _quiet()
    import torch

    import executorch.kernels.quantized  # noqa: F401
    from executorch.extension.pybindings import portable_lib

    threads = int(spec["threads"])
    portable_lib._unsafe_reset_threadpool(threads)
    torch.set_num_threads(threads)
    got = portable_lib._threadpool_get_thread_count()
    inputs, _ = _inputs_from(spec)
    x = list(inputs[0])
    names = list(spec["files"])
    methods = {n: _load_pte(p) for n, p in spec["files"].items()}
    with torch.inference_mode():
        for _ in range(spec["warmup"]):
            for n in names:
                methods[n].execute(x)
        times = {n: [] for n in names}
        last = None
        b0, t0 = _busy_seconds(), time.perf_counter()
        for r in range(spec["runs"]):
            order = names[r % len(names):] + names[:r % len(names)]
            if order[0] == last and len(order) > 1:
                order[0], order[1] = order[1], order[0]
            for n in order:
                s = time.perf_counter()
                methods[n].execute(x)
                times[n].append((time.perf_counter() - s) * 1000)
            last = order[-1]
        b1, wall = _busy_seconds(), time.perf_counter() - t0
    other = max(0.0, ((b1[0] - b0[0]) - (b1[1] - b0[1])) / wall)
    qs = {}
    for n, t in times.items():
        t = sorted(t)
        qs[n] = {"median_ms": statistics.median(t), "p10_ms": t[len(t) // 10], "p90_ms": t[(9 * len(t)) // 10],
                 "runs": len(t)}
    print(threads, json.dumps({n: round(v["median_ms"], 3) for n, v in qs.items()}), f"other load {other:.2f}",
          flush=True)
    return {"threadpool": got, "other_load_cores": round(other, 2), "wall_s": round(wall, 2), "files": qs}


def time_all(spec: dict, threads: list, d: Path) -> dict:
    """One timing process per thread count."""
    return {str(t): worker(f"time{t}", {**spec, "threads": t}, d) for t in threads}


WORKERS = {"hand": w_hand, "eval": w_eval, "time": w_time}  # time1, time2, ...: w_time


# ----------------------------------------------------------------------------------------------- the run

def encoder(args, out: Path, res: dict) -> None:
    cli = cli_path()
    data = out / "data"
    evalf, calib = data / "minilm_eval.npz", data / "minilm_calib.npz"
    if not (args.reuse and evalf.exists()):
        print("encoder data (benchmarks/real_models/minilm.py)")
        r = run_proc([sys.executable, str(RM / "minilm.py"), "--data", str(data)], out / "logs" / "data.log")
        if r["rc"]:
            raise SystemExit("could not write MiniLM's data")
    common = [ENC_SPEC, "--input-shape", ENC_SHAPE, "--calib", str(calib), "--eval", str(evalf),
              "--metric", ENC_METRIC]
    enc = res.setdefault("encoder", {"runs": {}})
    runs = enc["runs"]
    d = out / "encoder"

    def cli_run(name, argv):
        folder = d / name
        if args.reuse and (folder / "model.pte").exists():
            print(f"  reuse {folder}")
            return runs.get(name, {}).get("process")
        shutil.rmtree(folder, ignore_errors=True)
        return run_proc([cli, *argv, "--out", str(folder)], out / "logs" / f"encoder_{name}.log")

    print("encoder: qtapp-cli runs")
    proc = cli_run("float", ["export", ENC_SPEC, "--input-shape", ENC_SHAPE, "--input-dtype", "int64",
                             "--format", "pte"])
    runs["float"] = {"process": proc, "pte": str(d / "float" / "model.pte")}
    for name, bits in (("8da8w", ["--weight-bits", "8"]), ("8da4w", ["--weight-bits", "4", "--group-size", str(GROUP)])):
        proc = cli_run(name, ["quantize", *common, "--backend", "torchao", "--method", "dynamic", *bits,
                              "--format", "pte"])
        runs[name] = {"process": proc, "pte": str(d / name / "model.pte"), "app": app_figures(d / name)}
    if not args.skip_tune:
        s4, s8 = (os.path.getsize(runs[n]["pte"]) for n in ("8da4w", "8da8w"))
        budget = args.tune_budget or f"size<={(s4 + s8) / 2 / 1e6:.1f}MB"
        proc = cli_run("tuned", ["tune", *common, "--backend", "torchao", "--method", "dynamic", "--weight-bits", "4",
                                 "--group-size", str(GROUP), "--target", args.tune_target, "--budget", budget,
                                 "--format", "pte"])
        tj = d / "tuned" / "tune.json"
        tune = json.loads(tj.read_text()) if tj.exists() else {}
        ov = overrides_of(d / "tuned")
        runs["tuned"] = {"process": proc, "pte": str(d / "tuned" / "model.pte"), "app": app_figures(d / "tuned"),
                         "target": tune.get("target", args.tune_target), "budget": tune.get("budget", budget),
                         "tune": {k: tune.get(k) for k in ("reached", "conversions", "seconds", "notes")}
                         | {"configurations": len(tune.get("steps", [])),
                            "estimated_sizes": sorted({s.get("size_bytes") for s in tune.get("steps", [])
                                                       if not s.get("measured")}),
                            "chosen_within_budget": next((s.get("within_budget") for s in reversed(tune.get("steps", []))
                                                          if s.get("accepted")), None)},
                         "overrides_8bit": sorted(n for n, o in ov.items() if o.get("weight_bits") == 8)}
    if not args.skip_hand:
        print("encoder: written by hand (torchao quantize_ + ExecuTorch, no qtapp code)")
        hd = d / "hand"
        hd.mkdir(parents=True, exist_ok=True)
        variants = ["float", "8da8w", "8da4w"]
        if args.reuse and all((hd / f"hand_{v}.pte").exists() for v in variants) and (hd / "hand_result.json").exists():
            print("  reuse", hd)
            enc["hand"] = json.loads((hd / "hand_result.json").read_text())
        else:
            enc["hand"] = worker("hand", {"dir": str(hd), "variants": variants, "group": GROUP}, hd)
    files = {n: r["pte"] for n, r in runs.items() if r.get("pte") and Path(r["pte"]).exists()}
    for v, h in (enc.get("hand") or {}).items():
        if isinstance(h, dict) and "path" in h:
            files[f"hand_{v}"] = h["path"]
    print("encoder: task metric and output of every .pte (ExecuTorch runtime, 64 evaluation samples)")
    enc["eval"] = worker("eval", {"files": files, "reference": "float", "npz": str(evalf),
                                  "metric": "pair_retrieval_at1"}, out / "encoder")
    print(f"encoder: latency, {args.runs} interleaved runs per file, threads {args.threads}")
    enc["time"] = time_all({"files": files, "npz": str(evalf), "samples": 1, "runs": args.runs, "warmup": 5},
                           args.threads, out / "encoder")
    enc["sizes"] = {n: os.path.getsize(p) for n, p in files.items()}
    enc["md5"] = {n: md5(p) for n, p in files.items()}


def decoder(args, out: Path, res: dict) -> None:
    cli = cli_path()
    kwargs = json.loads(args.llm_kwargs) if args.llm_kwargs else {}
    sys.path.insert(0, str(RM))
    import tiny_llama

    vocab = int(kwargs.get("vocab_size", tiny_llama.CONFIG["vocab_size"]))
    dec = res.setdefault("decoder", {"config": {**tiny_llama.CONFIG, **kwargs}, "lengths": {}})
    for length in args.llm_lengths:
        d = out / "decoder" / f"len{length}"
        runs = dec["lengths"].setdefault(str(length), {"runs": {}})["runs"]
        print(f"decoder 1x{length}: qtapp-cli runs")
        base = [LLM_SPEC, "--input-shape", f"1,{length}", "--input-dtype", "int64"]
        if kwargs:
            base += ["--kwargs", json.dumps(kwargs)]
        steps = [("float", ["export", *base, "--format", "pte"])]
        for name, bits in (("8da8w", ["--weight-bits", "8"]), ("8da4w", ["--weight-bits", "4", "--group-size", str(GROUP)])):
            steps.append((name, ["quantize", *base, "--calib", "random", "--batches", "1", "--batch-size", "4",
                                 "--backend", "torchao", "--method", "dynamic", *bits, "--format", "pte"]))
        for name, argv in steps:
            folder = d / name
            if args.reuse and (folder / "model.pte").exists():
                print(f"  reuse {folder}")
                proc = runs.get(name, {}).get("process")
            else:
                shutil.rmtree(folder, ignore_errors=True)
                proc = run_proc([cli, *argv, "--out", str(folder)], out / "logs" / f"decoder{length}_{name}.log")
            runs[name] = {"process": proc, "pte": str(folder / "model.pte"), "app": app_figures(folder),
                          "bytes": os.path.getsize(folder / "model.pte") if (folder / "model.pte").exists() else None}
        files = {n: r["pte"] for n, r in runs.items() if Path(r["pte"]).exists()}
        entry = dec["lengths"][str(length)]
        entry["eval"] = worker("eval", {"files": files, "reference": "float", "vocab": vocab, "length": length,
                                        "samples": max(4, 64 // length), "seed": 1, "argmax": True}, d)
        entry["time"] = time_all({"files": files, "vocab": vocab, "length": length, "samples": 1,
                                  "runs": args.runs, "warmup": 5}, args.threads, d)


def costs(args, out: Path, res: dict) -> None:
    """Sensitivity on the encoder (tune's cost is its run in encoder())."""
    cli = cli_path()
    data = out / "data"
    folder = out / "encoder" / "sensitivity"
    shutil.rmtree(folder, ignore_errors=True)
    print("encoder: qtapp-cli analyze --sensitivity (8da4w, metric sqnr: the task metric is 1.0 for every point)")
    proc = run_proc([cli, "analyze", ENC_SPEC, "--input-shape", ENC_SHAPE, "--calib", str(data / "minilm_calib.npz"),
                     "--eval", str(data / "minilm_eval.npz"), "--metric", "sqnr", "--backend", "torchao",
                     "--method", "dynamic", "--weight-bits", "4", "--group-size", str(GROUP), "--sensitivity",
                     "--out", str(folder)], out / "logs" / "encoder_sensitivity.log")
    rep = report_of(folder) or {}
    sens = rep.get("sensitivity") or {}
    points = sens.get("points", []) if isinstance(sens, dict) else []
    top = sorted((p for p in points if p.get("gain") is not None), key=lambda p: -p["gain"])[:5]
    res["sensitivity"] = {"process": proc, "metric": "sqnr (dB)", "seconds": sens.get("seconds"),
                          "conversions": sens.get("conversions"), "points": len(points),
                          "all_int8": sens.get("all_int8"), "all_float": sens.get("all_float"),
                          "top_gain_if_float": [(p["name"], round(p["gain"], 2)) for p in top]}


# ----------------------------------------------------------------------------------------------- table

def table(res: dict, threads: list) -> str:
    lines = []
    enc = res.get("encoder")
    t0 = str(threads[0])
    if enc:
        ev, tm = enc.get("eval", {}).get("files", {}), enc.get("time", {})
        runs, hand = enc["runs"], enc.get("hand") or {}
        tcols = " | ".join(f"ms, {t} thr (other load {tm.get(str(t), {}).get('other_load_cores', '?')})" for t in threads)
        lines += ["Encoder: all-MiniLM-L6-v2, 1x32 ids + mask, .pte (XNNPACK); metric = paraphrase retrieval@1 "
                  "on 64 sentences",
                  f"| file | made by | task metric (pte / app) | cosine vs float (pte mean, min / app) | MB | "
                  f"app ms float -> q | {tcols} |",
                  "|---|---|---|---|---|---|" + "---|" * len(threads)]
        order = [("float", "qtapp-cli export"), ("8da8w", "qtapp-cli quantize"), ("8da4w", "qtapp-cli quantize"),
                 ("tuned", "qtapp-cli tune"), ("hand_float", "by hand"), ("hand_8da8w", "by hand"),
                 ("hand_8da4w", "by hand")]
        for name, who in order:
            if name not in enc.get("sizes", {}):
                continue
            e, app = ev.get(name, {}), (runs.get(name) or {}).get("app") or {}
            met = f"{e.get('metric', float('nan')):.3f}" + (f" / {app['metric_quantized']:.3f}" if app.get("metric_quantized") is not None else "")
            cos = f"{e.get('cosine_mean', float('nan')):.5f}, {e.get('cosine_min', float('nan')):.5f}" + (
                f" / {app['cosine']:.5f}" if app.get("cosine") is not None else "")
            applat = f"{ms(app.get('latency_float_ms'))} -> {ms(app.get('latency_quantized_ms'))}" if app else "-"
            tms = " | ".join(ms(tm.get(str(t), {}).get("files", {}).get(name, {}).get("median_ms")) for t in threads)
            lines.append(f"| {name} | {who} | {met} | {cos} | {mb(enc['sizes'][name])} | {applat} | {tms} |")
        ratios = app_vs_hand(res, threads)
        if ratios:
            lines += ["", "App / hand (same layers, same schemes): size, and latency at each thread count",
                      "| scheme | app MB | hand MB | size ratio | same bytes (md5) | " + " | ".join(f"latency ratio {t} thr" for t in threads) + " |",
                      "|---|---|---|---|---|" + "---|" * len(threads)]
            for name, r in ratios.items():
                lines.append(f"| {name} | {mb(r['app_bytes'])} | {mb(r['hand_bytes'])} | {r['size_ratio']:.4f} | "
                             f"{'yes' if r.get('identical_bytes') else 'no'} | "
                             + " | ".join(f"{r['latency_ratio'][str(t)]:.3f}" for t in threads) + " |")
        if "tuned" in runs:
            tr = runs["tuned"]
            lines += ["", f"tune {tr['target']} {tr['budget']}: reached {tr['tune'].get('reached')}, "
                          f"{tr['tune'].get('configurations')} configurations in {tr['tune'].get('seconds')} s of search; "
                          f"{len(tr['overrides_8bit'])} layers 8-bit: {', '.join(tr['overrides_8bit'])}; "
                          f"file {mb(enc['sizes'].get('tuned'))} MB; chosen step within budget per tune.json: "
                          f"{tr['tune'].get('chosen_within_budget')}; the sizes tune.json estimated: "
                          f"{[mb(s) for s in tr['tune'].get('estimated_sizes') or []]} MB"]
    dec = res.get("decoder")
    if dec:
        lens = list(dec["lengths"])
        first = lens[0]
        for t in threads:
            loads = ", ".join(f"1x{n}: {dec['lengths'][n].get('time', {}).get(str(t), {}).get('other_load_cores', '?')}"
                              for n in lens)
            lines += ["", f"Decoder: tiny LlamaForCausalLM (random weights), .pte, ExecuTorch threadpool {t} "
                          f"(other load, cores: {loads}); per token = median of the 1xN forward / N",
                      "| file | MB (1x" + first + ") | logits SQNR vs float, pte (1x" + first + ") | argmax agreement | "
                      + " | ".join(f"1x{n} ms | per token" for n in lens) + " | app: "
                      + ", ".join(f"1x{n}" for n in lens) + " ms float -> q |",
                      "|---|---|---|---|" + "---|---|" * len(lens) + "---|"]
            for name in ("float", "8da8w", "8da4w"):
                e = dec["lengths"][first].get("eval", {}).get("files", {}).get(name, {})
                row = [name, mb(dec["lengths"][first]["runs"].get(name, {}).get("bytes")),
                       "-" if e.get("sqnr_db") is None else f"{e['sqnr_db']:.1f}",
                       "-" if e.get("argmax_agreement") is None else f"{e['argmax_agreement']:.3f}"]
                apps = []
                for n in lens:
                    entry = dec["lengths"][n]
                    m = entry.get("time", {}).get(str(t), {}).get("files", {}).get(name, {}).get("median_ms")
                    row += [ms(m), "-" if m is None else f"{m / int(n):.3f}"]
                    app = entry["runs"].get(name, {}).get("app") or {}
                    if app.get("latency_quantized_ms") is not None:
                        apps.append(f"{ms(app.get('latency_float_ms'))} -> {ms(app.get('latency_quantized_ms'))}")
                row.append("; ".join(apps) or "-")
                lines.append("| " + " | ".join(row) + " |")
    rows = []
    if "tuned" in (enc or {}).get("runs", {}) and (enc["runs"]["tuned"].get("process")):
        p = enc["runs"]["tuned"]["process"]
        rows.append(f"| tune (encoder, 8da4w start) | {p['wall_s']} s | {p['peak_rss_mb']:.0f} MB | "
                    f"{enc['runs']['tuned']['tune'].get('configurations')} configurations, search "
                    f"{enc['runs']['tuned']['tune'].get('seconds')} s |")
    if res.get("sensitivity", {}).get("process"):
        s = res["sensitivity"]
        rows.append(f"| analyze --sensitivity (encoder, 8da4w) | {s['process']['wall_s']} s | "
                    f"{s['process']['peak_rss_mb']:.0f} MB | {s.get('conversions')} conversions, {s.get('seconds')} s |")
    for name in ("8da8w", "8da4w"):
        p = ((enc or {}).get("runs", {}).get(name) or {}).get("process")
        if p:
            rows.append(f"| quantize {name} (encoder, with .pte) | {p['wall_s']} s | {p['peak_rss_mb']:.0f} MB | |")
    if rows:
        lines += ["", "| job | wall | peak RSS | |", "|---|---|---|---|", *rows]
    return "\n".join(lines)


def app_vs_hand(res: dict, threads: list) -> dict:
    enc = res.get("encoder") or {}
    sizes, tm = enc.get("sizes", {}), enc.get("time", {})
    out = {}
    for name in ("float", "8da8w", "8da4w"):
        if name in sizes and f"hand_{name}" in sizes:
            lat = {}
            for t in threads:
                f = tm.get(str(t), {}).get("files", {})
                a, h = f.get(name, {}).get("median_ms"), f.get(f"hand_{name}", {}).get("median_ms")
                lat[str(t)] = a / h if a and h else float("nan")
            hashes = enc.get("md5", {})
            out[name] = {"app_bytes": sizes[name], "hand_bytes": sizes[f"hand_{name}"],
                         "size_ratio": sizes[name] / sizes[f"hand_{name}"], "latency_ratio": lat,
                         "identical_bytes": hashes.get(name) is not None and hashes.get(name) == hashes.get(f"hand_{name}")}
    return out


def environment() -> dict:
    import importlib.metadata as md

    def v(p):
        try:
            return md.version(p)
        except md.PackageNotFoundError:
            return None

    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")), "?")
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    dirty = bool(subprocess.run(["git", "status", "--porcelain", "qtapp"], cwd=ROOT, capture_output=True, text=True).stdout.strip())
    return {"date": datetime.date.today().isoformat(), "cpu": cpu, "cpus": os.cpu_count(), "python": platform.python_version(),
            "torch": v("torch"), "torchao": v("torchao"), "executorch": v("executorch"), "transformers": v("transformers"),
            "qtapp_commit": commit, "qtapp_working_tree_modified": dirty, "loadavg_start": os.getloadavg()}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--worker", nargs=2, metavar=("KIND", "SPEC"), help=argparse.SUPPRESS)
    ap.add_argument("--out", default="/tmp/bench_lowbit", help="working folder (CLI run folders, .pte files, logs)")
    ap.add_argument("--json", default=str(HERE / "results" / "lowbit.json"))
    ap.add_argument("--runs", type=int, default=200, help="timed runs per file and thread count (median)")
    ap.add_argument("--threads", default="2,1", help="ExecuTorch threadpool sizes to time at (first = the tables')")
    ap.add_argument("--tune-target", default="sqnr>=20")
    ap.add_argument("--tune-budget", default=None, help="default: size<= halfway between the 8da4w and 8da8w files")
    ap.add_argument("--llm-lengths", default="64,1", help="1xN shapes of the decoder, each its own .pte")
    ap.add_argument("--llm-kwargs", default="", help="LlamaConfig fields over tiny_llama.CONFIG, JSON")
    ap.add_argument("--skip-encoder", action="store_true")
    ap.add_argument("--skip-tune", action="store_true")
    ap.add_argument("--skip-hand", action="store_true")
    ap.add_argument("--skip-llm", action="store_true")
    ap.add_argument("--skip-sensitivity", action="store_true")
    ap.add_argument("--table-only", action="store_true", help="print the tables of --json, run nothing")
    ap.add_argument("--reuse", action="store_true", help="keep run folders and .pte files of a previous run (--out)")
    args = ap.parse_args()
    if args.worker:
        kind, spec_path = args.worker
        spec = json.loads(Path(spec_path).read_text())
        result = WORKERS["time" if kind.startswith("time") else kind](spec)
        Path(spec["result"]).write_text(json.dumps(result, indent=1))
        return 0
    args.threads = [int(t) for t in args.threads.split(",")]
    args.llm_lengths = [int(n) for n in args.llm_lengths.split(",")]
    if args.table_only:
        print(table(json.loads(Path(args.json).read_text()), args.threads))
        return 0
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    prev = Path(args.json)
    res = json.loads(prev.read_text()) if args.reuse and prev.exists() else {}
    res["environment"] = environment()
    res["command"] = " ".join(sys.argv)
    print(json.dumps(res["environment"]))
    t0 = time.perf_counter()
    if not args.skip_encoder:
        encoder(args, out, res)
    if not args.skip_llm:
        decoder(args, out, res)
    if not args.skip_sensitivity:
        costs(args, out, res)
    res["app_vs_hand"] = app_vs_hand(res, args.threads)
    res["total_s"] = round(time.perf_counter() - t0, 1)
    res["environment"]["loadavg_end"] = os.getloadavg()
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(res, indent=1, default=str))
    print()
    print(table(res, args.threads))
    print(f"\ntotal {res['total_s']:.0f} s; results in {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
