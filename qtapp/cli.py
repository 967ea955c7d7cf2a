"""qtapp-cli: the headless face of Quantization Studio. Same core, same recipe files as the window.

Exit codes: 0 success, 2 usage error (bad option, recipe, layer name, shape), 1 failure, 3 `tune` did not
reach its target within the budget (the best configuration it found is written all the same).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import time
from pathlib import Path

from . import __version__

DEFAULT_FORMATS = "pt,ptl"


class _ArgParser(argparse.ArgumentParser):
    def error(self, message):  # argparse exits 2 itself; keep its behaviour, shorter text
        self.print_usage(sys.stderr)
        self.exit(2, f"{self.prog}: error: {message}\n")


def _model_args(p: argparse.ArgumentParser, spec_required: bool = True) -> None:
    p.add_argument("spec", nargs=None if spec_required else "?",
                   help="demo | torchvision:NAME | package.module:callable | file.py:callable | model.pt"
                        + ("" if spec_required else " (default: demo, unless --recipe gives one)"))
    p.add_argument("--weights", help="none | DEFAULT (torchvision, downloads) | path to a state_dict")
    p.add_argument("--kwargs", help='JSON object of keyword arguments for the factory, e.g. \'{"num_classes": 10}\'')
    p.add_argument("--input-shape", help="input shape, e.g. 1,3,224,224 (';' between several inputs)")
    p.add_argument("--input-dtype", help="input dtype (default: the calibration file's integer dtype for token "
                                         "ids, else float32)")
    p.add_argument("--trust", action="store_true",
                   help="run code a file asks for: a pickled model with classes outside the safe allowlist, a "
                        "TorchScript or lite-interpreter (.ptl) model file (a program), or a Python factory named "
                        "by a --recipe file. EXECUTES that code")


def _quant_args(p: argparse.ArgumentParser) -> None:
    from .core.config.recipe import BACKENDS, DTYPES, ENGINES, METHODS, OBSERVERS, ONNX_QUANTIZERS, STATIC_MODES

    p.add_argument("--method", choices=METHODS)
    p.add_argument("--backend", choices=BACKENDS,
                   help="who quantizes: torch.ao (default; FX/eager/dynamic, ships .pt/.ptl/.onnx), pt2e (torchao's "
                        "PT2E with the XNNPACK quantizer, static and QAT; ships .pte and ONNX Runtime .onnx) or torchao "
                        "(quantize_: 4- or 8-bit weights per Linear/Embedding, --method dynamic or weight-only; "
                        "ships .pte)")
    p.add_argument("--weight-bits", dest="weight_bits", type=int, choices=(4, 8),
                   help="--backend torchao: the weights' bits (default 8); per layer in a recipe's overrides")
    p.add_argument("--group-size", dest="group_size", type=int,
                   help="--backend torchao, 4-bit weights: weights per scale along a row (default 32; 8-bit weights "
                        "have one scale per output channel)")
    p.add_argument("--onnx-quantizer", dest="onnx_quantizer", choices=ONNX_QUANTIZERS,
                   help="who makes the int8 .onnx: torch (the torch.ao model exported, default) or ort (onnxruntime's "
                        "quantize_static of the float model's ONNX, same calibration data and float layers)")
    p.add_argument("--static-mode", choices=STATIC_MODES, help="static only: auto (eager for quantized_* models, else fx)")
    p.add_argument("--engine", choices=ENGINES)
    p.add_argument("--dtype", choices=DTYPES, help="dynamic only: weight dtype")
    p.add_argument("--observer", choices=OBSERVERS, help="activation observer for static quantization")
    p.add_argument("--per-channel", dest="per_channel", action=argparse.BooleanOptionalAction, default=None,
                   help="per-channel weight scales (default on)")
    p.add_argument("--equalize", action=argparse.BooleanOptionalAction, default=None,
                   help="static and QAT: cross-layer equalisation of the float model before calibrating (evens out "
                        "per-channel weight ranges between layer pairs; helps most with one scale per tensor)")
    p.add_argument("--equalize-depthwise", dest="equalize_depthwise", action=argparse.BooleanOptionalAction,
                   default=None, help="static and QAT: scale the input channels of each depthwise conv towards "
                                      "the loudest on the calibration data, so one int8 range serves them all "
                                      "(default on; needs per-channel weights)")
    p.add_argument("--float", dest="float_layers", nargs="+", metavar="LAYER", action="extend",
                   help="keep these layers (or whole subtrees) in float")


def build_parser() -> argparse.ArgumentParser:
    parser = _ArgParser(prog="qtapp-cli", description="Quantize PyTorch models to int8 from the shell.")
    parser.add_argument("--version", action="version", version=f"qtapp {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks on failure")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_ArgParser)

    q = sub.add_parser("quantize", help="quantize, compare, measure and export a model")
    _model_args(q, spec_required=False)
    _quant_args(q)
    _run_args(q)
    q.add_argument("--format", default=DEFAULT_FORMATS, help=f"export formats, from pt,ptl,onnx,pte,pt2 (default {DEFAULT_FORMATS}; pte needs the executorch extra)")
    q.add_argument("--out", required=True, help="output folder for model.*, recipe.json and report.json")
    _time_files_arg(q)
    q.add_argument("--json", action="store_true", help="print report.json to stdout instead of a summary")
    q.add_argument("--html", action="store_true",
                   help="also write report.html: one self-contained page (plots included) to share")

    a = sub.add_parser("analyze", help="every quantization point: its error (local and accumulated), its "
                                       "activation range, and a diagnosis of the points worse than the rest")
    _model_args(a, spec_required=False)
    _quant_args(a)
    _run_args(a)
    a.add_argument("--out", help="also write report.json and recipe.json (report.html with --html) to this folder")
    a.add_argument("--top", type=int, default=8, help="how many of the worst points to print (default 8)")
    a.add_argument("--json", action="store_true", help="print report.json to stdout instead of the table")
    a.add_argument("--html", action="store_true", help="with --out: also write report.html")
    a.add_argument("--sensitivity", action="store_true",
                   help="also measure each toggleable point both ways, from the one calibration: the metric with "
                        "only it kept float, and with only it quantized (two conversions per point)")
    a.add_argument("--graph", action="store_true",
                   help="with --out: also write graph.pt2 (the float model, torch.export) and node_data*.json, each "
                        "point's local and accumulated SQNR and diagnosis on the node producing its value, for "
                        "Model Explorer (pip install \"qtapp[graph]\"): model-explorer DIR/graph.pt2 "
                        "--node_data_paths=DIR/node_data.json")

    t = sub.add_parser("tune", help="search for the configuration that reaches an accuracy target with the fewest "
                                    "points kept float, and write it as quantize would")
    _model_args(t, spec_required=False)
    _quant_args(t)
    _run_args(t)
    t.add_argument("--target", required=True, help="sqnr>=30 (output SQNR, dB), cosine>=0.999, drop<=1 (top-1 points "
                                                   "lost, needs labels; or your --metric's units) or metric>=X")
    t.add_argument("--budget", help="what the search may give up at most: float<=3 (points kept float), "
                                    "float<=10%% (a share of them), size<=5MB or latency<=8ms (estimates), "
                                    "bits<=4.5 (weight bits per value on average: torchao's 4- and 8-bit mixes)")
    t.add_argument("--format", default=DEFAULT_FORMATS, help=f"export formats, from pt,ptl,onnx,pte,pt2 (default {DEFAULT_FORMATS}; pte needs the executorch extra)")
    t.add_argument("--out", required=True, help="output folder: what quantize writes, and tune.json (every step tried)")
    _time_files_arg(t)
    t.add_argument("--json", action="store_true", help="print report.json to stdout instead of a summary")
    t.add_argument("--html", action="store_true", help="also write report.html, with the trade-off curve")

    i = sub.add_parser("inspect", help="list the layer inventory: types, sizes, shapes, fusion groups")
    _model_args(i)
    _quant_args(i)
    i.add_argument("--json", action="store_true", help="machine-readable output")

    b = sub.add_parser("bench", help="time every file of a result folder again, against the float model in the same "
                                     "format and runtime, each in a separate process")
    b.add_argument("folder", help="a folder qtapp-cli quantize --out wrote")
    b.add_argument("spec", nargs="?", help="the float model to time against (default: the one the folder's recipe "
                                           "names; giving it here is consent to run it)")
    b.add_argument("--trust", action="store_true", help="run the folder's TorchScript files (.pt, .ptl: programs) and "
                                                        "the Python factory its recipe names (EXECUTES that code)")
    b.add_argument("--json", action="store_true", help="print the timings as JSON")

    e = sub.add_parser("export", help="export the float model (TorchScript files too) without quantizing")
    _model_args(e)
    e.add_argument("--format", default=DEFAULT_FORMATS, help=f"from pt,ptl,onnx,pte,pt2 (default {DEFAULT_FORMATS})")
    e.add_argument("--out", required=True)
    return parser


def _time_files_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--time-files", dest="time_files", action=argparse.BooleanOptionalAction, default=True,
                   help="time each exported file against a float file of its format, in its runtime, in a separate "
                        "process (default on; about 2 s a format; --no-time-files skips it, `bench DIR` does it later)")


def _run_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--calib", help="demo | random | image folder | .npy/.npz/.pt file (default: the model's own data, else random)")
    p.add_argument("--eval", dest="eval_source", help="evaluation data, same forms as --calib (default: the demo's held-out split, else the calibration source)")
    p.add_argument("--batches", type=int, help="calibration batches (default 8)")
    p.add_argument("--batch-size", type=int, help="calibration and evaluation batch size (default 16)")
    p.add_argument("--epochs", type=int, help="QAT epochs (default 2)")
    p.add_argument("--lr", type=float, help="QAT learning rate (default 1e-4)")
    p.add_argument("--metric", help="what the report, sensitivity and tune score: sqnr (default), cosine, top1 "
                                    "(a classifier with class-id labels), retrieval@1 (embeddings), or your "
                                    "function as package.module:function or file.py:function, called as "
                                    "fn(float_outputs, quantized_outputs, labels) -> number, higher is better")
    p.add_argument("--recipe", help="run this recipe file; options given here override it")


def _kwargs(text: str | None) -> dict | None:
    from .core.base.errors import UsageError

    if text is None:
        return None
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise UsageError(f"--kwargs is not valid JSON: {exc}") from None
    except RecursionError:
        raise UsageError("--kwargs is nested too deeply to be keyword arguments") from None
    if not isinstance(value, dict):
        raise UsageError("--kwargs must be a JSON object, e.g. '{\"num_classes\": 10}'")
    return value


def recipe_from_args(args):
    """The recipe file (if any) with every option given on the command line laid over it."""
    from dataclasses import replace

    from .core.config.recipe import QuantRecipe

    recipe_file = getattr(args, "recipe", None)
    if recipe_file:
        recipe = QuantRecipe.load(recipe_file)
    else:  # no spec and no recipe: the bundled demo
        recipe = QuantRecipe(model=args.spec or "demo")
    top = {"model": args.spec, "weights": args.weights, "kwargs": _kwargs(args.kwargs),
           "input_shape": args.input_shape, "input_dtype": args.input_dtype, "method": args.method, "static_mode": args.static_mode,
           "engine": args.engine, "dtype": args.dtype, "observer": args.observer, "per_channel": args.per_channel,
           "equalize": getattr(args, "equalize", None),
           "equalize_depthwise": getattr(args, "equalize_depthwise", None), "backend": getattr(args, "backend", None),
           "onnx_quantizer": getattr(args, "onnx_quantizer", None), "weight_bits": getattr(args, "weight_bits", None),
           "group_size": getattr(args, "group_size", None),
           "float_layers": args.float_layers, "metric": getattr(args, "metric", None)}
    recipe = replace(recipe, **{k: v for k, v in top.items() if v is not None})
    if args.observer is not None and recipe.method != "static":
        from .core.base.errors import UsageError

        raise UsageError(f"--observer chooses the activation ranges of static quantization; {recipe.method} "
                         f"{'computes a range for every call' if recipe.method == 'dynamic' else 'trains its ranges'}: "
                         "drop --observer, or use --method static")
    calib = {"source": getattr(args, "calib", None), "batches": getattr(args, "batches", None),
             "batch_size": getattr(args, "batch_size", None)}
    recipe.calibration = replace(recipe.calibration, **{k: v for k, v in calib.items() if v is not None})
    ev = {"source": getattr(args, "eval_source", None), "batch_size": getattr(args, "batch_size", None)}
    recipe.evaluation = replace(recipe.evaluation, **{k: v for k, v in ev.items() if v is not None})
    qat = {"epochs": getattr(args, "epochs", None), "lr": getattr(args, "lr", None)}
    recipe.qat = replace(recipe.qat, **{k: v for k, v in qat.items() if v is not None})
    return recipe


def _named_by(args) -> Path | None:
    """The recipe file the model spec comes from, when the user did not type a SPEC (which is consent)."""
    recipe_file = getattr(args, "recipe", None)
    return Path(recipe_file) if recipe_file and not args.spec else None


def _metric_named_by(args) -> Path | None:
    """The recipe file the metric comes from, when the user did not type --metric."""
    recipe_file = getattr(args, "recipe", None)
    return Path(recipe_file) if recipe_file and not getattr(args, "metric", None) else None


class TextProgress:
    """A one-line progress bar on stderr (a plain line per stage when stderr is not a terminal)."""

    def __init__(self, stream=None) -> None:
        stream = stream if stream is not None else sys.stderr  # looked up now: callers may redirect it
        self.stream, self.tty = stream, stream.isatty()
        self._stage, self._last, self._done_said = None, 0.0, False

    def __call__(self, p) -> None:
        new_stage = p.stage != self._stage
        if new_stage and self._stage is not None and self.tty:
            self.stream.write("\n")
        if new_stage:
            self._done_said = False
        self._stage = p.stage
        finished = p.total and p.done >= p.total
        if self.tty:
            if not finished and time.monotonic() - self._last < 0.1 and not new_stage:
                return
            self._last = time.monotonic()
            frac = p.fraction or 0.0
            bar = "#" * int(frac * 30)
            eta = f" ~{p.eta_s:.0f}s left" if p.eta_s is not None and not finished else ""
            self.stream.write(f"\r{p.stage:>16} [{bar:<30}] {p.done}/{p.total or '?'} {p.message[:40]}{eta}\x1b[K")
        elif finished and not self._done_said:  # one line per stage, however many records say it is done
            self._done_said = True
            self.stream.write(f"{p.stage}: {p.message} ({p.elapsed_s:.1f}s)\n")
        self.stream.flush()

    def close(self) -> None:
        if self.tty and self._stage is not None:
            self.stream.write("\n")


def _command(args, **fields):
    """The core Command for these arguments (run.command), from the recipe the arguments make."""
    from .core.run.command import Command

    return Command(recipe_from_args(args), trust=args.trust, recipe_file=getattr(args, "recipe", None),
                   model_named_by=_named_by(args), metric_named_by=_metric_named_by(args), **fields)


def _cmd_quantize(args) -> int:
    from .core.base.progress import drive
    from .core.deploy.export import parse_formats
    from .core.report.render import report_dict, summary_text
    from .core.run.command import run_command

    formats = parse_formats(args.format)
    out = Path(args.out)
    command = _command(args, out=out, formats=tuple(formats), html=args.html, time_files=args.time_files,
                       method_given=_method_given(args))
    progress = TextProgress()
    try:
        result = drive(run_command(command), progress)
    finally:
        progress.close()
    if args.json:
        _print_json(report_dict(result))
    else:
        print(summary_text(result, out))
    if args.html and not args.json:
        print(f"  wrote       {out / 'report.html'}")
    return 0


def _cmd_analyze(args) -> int:
    from .core.base.errors import UsageError
    from .core.base.progress import drive
    from .core.report.render import points_text, report_dict, sensitivity_text, summary_text
    from .core.run.command import run_command

    if args.top <= 0:
        raise UsageError(f"--top must be a positive number of points, got {args.top}")
    if args.html and not args.out:
        raise UsageError("--html writes report.html into the result folder: give --out DIR too")
    if args.graph and not args.out:
        raise UsageError("--graph writes graph.pt2 and node_data.json into the result folder: give --out DIR too")
    command = _command(args, action="sensitivity" if args.sensitivity else "analyse",
                       out=Path(args.out) if args.out else None, html=args.html, measure=False, graph=args.graph)
    progress = TextProgress()
    try:
        result = drive(run_command(command), progress)
    finally:
        progress.close()
    if args.json:
        _print_json(report_dict(result))
        return 0
    summary = summary_text(result, Path(args.out) if args.out else None).splitlines()
    head = [line for line in summary if not line.startswith(("  worst points", "  diagnosis"))]
    tail = head[2:]
    if result.graph is not None:  # after what the summary says it wrote, before its verdict
        at = next((i for i, line in enumerate(tail) if line.startswith("verdict")), len(tail))
        tail[at:at] = _graph_lines(result.graph)
    print("\n".join([*head[:2], *points_text(result, args.top), *sensitivity_text(result, max(args.top, 12)),
                     *tail]))
    if args.out and args.html:
        print(f"  wrote       {Path(args.out) / 'report.html'}")
    elif not args.out:
        print("  (give --out DIR to write report.json and recipe.json)")
    return 0


def _graph_lines(files) -> list[str]:
    """What analyze --graph wrote (or why not), and how to open it."""
    if not files.written:
        return [f"  graph       {files.summary()}"]
    names = ", ".join(files.written[1:])
    return [f"  wrote       {files.folder / files.written[0]}, {names}",
            f"  graph       {files.summary()}",
            f"  open it     model-explorer {' '.join(files.model_explorer_args())}"]


def _method_given(args) -> bool:
    """The user chose the method: on the command line, or in a recipe file."""
    return args.method is not None or args.recipe is not None


def _cmd_tune(args) -> int:
    from .core.analysis.metrics import Target
    from .core.base.progress import drive
    from .core.deploy.export import parse_formats
    from .core.report.render import report_dict, summary_text, tune_text
    from .core.run.command import run_command
    from .core.tune.search import Budget

    target, budget = Target.parse(args.target), Budget.parse(args.budget)  # refused before any work
    formats = parse_formats(args.format)
    out = Path(args.out)
    command = _command(args, action="tune", target=target, budget=budget, out=out, formats=tuple(formats),
                       html=args.html, time_files=args.time_files, method_given=_method_given(args))
    progress = TextProgress()
    try:
        result = drive(run_command(command), progress)
    finally:
        progress.close()
    if args.json:
        _print_json(report_dict(result))
    else:
        summary = summary_text(result, out).splitlines()
        print("\n".join([summary[0], *tune_text(result), *summary[1:], f"  wrote       {out / 'tune.json'}"]))
        if args.html:
            print(f"  wrote       {out / 'report.html'}")
    if not result.tune.reached:
        print(f"qtapp-cli: target {result.tune.target} not reached within budget {result.tune.budget}; the best "
              f"configuration found is in {out}", file=sys.stderr)
        return 3
    return 0


def _cmd_inspect(args) -> int:
    from .core.base.progress import drive
    from .core.run.session import QuantSession

    recipe = recipe_from_args(args)
    session = drive(QuantSession.open(recipe, trust=args.trust, named_by=_named_by(args)), TextProgress())
    inv = session.inventory
    if args.json:
        _print_json({"model": recipe.model, "input": str(session.input_spec) if session.input_spec else None,
                     **inv.to_json()})
        return 0
    print(f"{recipe.model}: input {session.input_spec or 'unknown (give --input-shape)'}, method {inv.method} "
          f"({inv.mode}), engine {inv.engine}; {len(inv.heads)} quantizable layers, {len(inv.float_layers)} kept float")
    print(f"{'layer':<44} {'type':<22} {'params':>10} {'output':<16} quantize")
    for info in inv:
        if not info.name:
            continue
        depth, parent = 0, info.parent
        while parent:
            depth, parent = depth + 1, inv[parent].parent
        state = inv.state(info.name)
        mark = {"quantized": "[x]", "float": "[ ]", "partial": "[~]", None: "   "}[state]
        extra = ""
        if info.group and len(info.group) > 1:
            extra = f" fuses {'+'.join(n.rpartition('.')[2] for n in info.group)}"
        elif info.group_head and info.group_head != info.name:
            extra = f" (in {info.group_head})"
        elif state is None and info.reason and info.reason != "container":
            extra = f" - {info.reason}"
        name = "  " * depth + info.short_name
        print(f"{name:<44} {info.type:<22} {info.params:>10,} {(info.output_shape or ''):<16} {mark}{extra}")
    for note in [*session.notes, *inv.notes]:
        print(f"note: {note}")
    return 0


def _cmd_bench(args) -> int:
    from .core.base.progress import drive
    from .core.deploy.export import latency_json
    from .core.report.render import formats_table
    from .core.run.bench import bench_folder

    progress = TextProgress()
    try:
        exports = drive(bench_folder(Path(args.folder), trust=args.trust, spec=args.spec), progress)
    finally:
        progress.close()
    if args.json:
        _print_json({e.format: latency_json(e.latency) for e in exports})
        return 0
    print(f"{args.folder}: batch 1, {exports[0].latency.threads} threads, each format in its own runtime")
    print("\n".join(formats_table(exports, with_sqnr=False)))
    return 0


def _cmd_export(args) -> int:
    from .core.base.inputs import InputSpec
    from .core.base.progress import drive
    from .core.deploy.export import parse_formats
    from .core.run.exporting import export_float

    formats = parse_formats(args.format)
    spec = InputSpec.parse(args.input_shape, args.input_dtype or "float32") if args.input_shape else None
    progress = TextProgress()
    try:
        results = drive(export_float(args.spec, args.weights, _kwargs(args.kwargs), args.trust, spec, Path(args.out),
                                     formats), progress)
    finally:
        progress.close()
    for r in results:
        print(f"wrote {r.path} ({r.bytes / 1e6:.2f} MB, {'verified' if r.verified else 'NOT verified'})")
        for n in r.notes:
            print(f"  note: {n}")
    return 0


class Terminated(KeyboardInterrupt):
    """SIGTERM: stops the run and cleans up as Ctrl-C does (staging and scratch folders removed)."""


_JSON_OUT = None  # where --json output goes: the real stdout, while everything else printed goes to stderr
_SIGNALLED: list[int] = []  # signals received during this run: an interrupt is reported as one, whatever broke


def _print_json(obj) -> None:
    stream = _JSON_OUT if _JSON_OUT is not None else sys.stdout
    stream.write(json.dumps(obj, indent=2) + "\n")
    stream.flush()


@contextlib.contextmanager
def _stdout_kept_for_json(enabled: bool):
    """With --json, stdout carries the JSON alone: whatever a model or factory prints (Python's print, or
    C code writing to file descriptor 1) goes to stderr meanwhile."""
    global _JSON_OUT
    if not enabled:
        yield
        return
    real = sys.stdout
    saved_fd = None
    try:
        if real.fileno() == 1:
            real.flush()
            saved_fd = os.dup(1)
            os.dup2(2, 1)
            real = os.fdopen(os.dup(saved_fd), "w", encoding="utf-8")
    except (AttributeError, OSError, ValueError):  # a replaced stdout (StringIO) has no descriptor
        pass
    _JSON_OUT = real
    try:
        with contextlib.redirect_stdout(sys.stderr):
            yield
    finally:
        _JSON_OUT = None
        if saved_fd is not None:
            real.close()
            sys.stdout.flush()
            os.dup2(saved_fd, 1)
            os.close(saved_fd)


@contextlib.contextmanager
def _signals_reported():
    """Ctrl-C and SIGTERM raise in the main thread (so every cleanup runs) and are remembered: a library
    that half-imported a module when the interrupt came may fail later with an unrelated error."""
    import signal
    import threading

    _SIGNALLED.clear()
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def on_signal(signum, frame):
        _SIGNALLED.append(signum)
        raise Terminated() if signum == signal.SIGTERM else KeyboardInterrupt()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _interrupted_code() -> int | None:
    import signal

    if not _SIGNALLED:
        return None
    if _SIGNALLED[-1] == signal.SIGTERM:
        print("qtapp-cli: terminated (SIGTERM); nothing was left half-written", file=sys.stderr)
        return 143
    print("qtapp-cli: interrupted", file=sys.stderr)
    return 130


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    with _signals_reported(), _stdout_kept_for_json(bool(getattr(args, "json", False))):
        return _run(args)


def _run(args) -> int:
    from .core.base.errors import Cancelled, QtappError, UsageError, first_line

    handler = {"quantize": _cmd_quantize, "analyze": _cmd_analyze, "tune": _cmd_tune, "inspect": _cmd_inspect,
               "export": _cmd_export, "bench": _cmd_bench}[args.command]
    try:
        return handler(args)
    except KeyboardInterrupt:
        return _interrupted_code() or _said("qtapp-cli: interrupted", 130)
    except UsageError as exc:
        if _SIGNALLED:  # an interrupt that surfaced as another error is still an interrupt
            return _interrupted_code()
        if args.debug:
            raise
        return _said(f"qtapp-cli: error: {exc}", 2)
    except (QtappError, Cancelled) as exc:
        if _SIGNALLED:
            return _interrupted_code()
        if args.debug:
            raise
        return _said(f"qtapp-cli: error: {exc}", 1)
    except Exception as exc:  # noqa: BLE001 - a bug or a torch failure: short message, traceback with --debug
        if _SIGNALLED:
            return _interrupted_code()
        if args.debug:
            raise
        return _said(f"qtapp-cli: error: {type(exc).__name__}: {first_line(exc)} (run with --debug for the "
                     "traceback)", 1)


def _said(message: str, code: int) -> int:
    print(message, file=sys.stderr)
    return code


if __name__ == "__main__":
    sys.exit(main())
