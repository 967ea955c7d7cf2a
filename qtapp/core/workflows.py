"""User actions as core workflows: generators that yield progress and return an immutable outcome.

A workflow reads a snapshot the owner (CLI or window) took on its own thread, never the owner's live
state, and writes nothing to it: the owner adopts the outcome when the job returns. Cancelling a job
therefore leaves the owner exactly as it was.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable

from .backends import Calibrated, backend_for
from .compare import compare_outputs
from .data import DataSource
from .errors import Cancelled
from .export import export_model
from .html_report import to_html
from .measure import measure_files, measure_many, to_torchscript
from .probe import probe_model
from .progress import CancelToken, Job, Stage, drive
from .recipe import QuantRecipe
from .render import json_safe, report_dict
from .render import write_report
from .results import DataFacts, RunResult
from .resultset import ResultSet, write_bytes_atomic
from .scratch import scratch_dir


@dataclass(frozen=True)
class InventoryView:
    """What a backend needs of the layer inventory, frozen at the moment the job was started."""

    heads: tuple[str, ...]
    float_layers: tuple[str, ...]
    quantized_heads: tuple[str, ...]
    points: tuple = ()  # QuantPoint, as the inventory classified them


@dataclass(frozen=True)
class RunSnapshot:
    """Everything a quantize job reads, captured by the owner before the job starts."""

    loaded: Any  # LoadedModel: its module is read, never modified
    recipe: Any  # a private copy of the QuantRecipe
    mode: str
    inventory: InventoryView
    calibrated: Calibrated | None  # reused when its key matches the recipe's
    float_side: tuple | None  # (key, float outputs per batch, fused float reference), reused when the key matches
    open_calibration: Callable[[], DataSource]
    open_evaluation: Callable[[], tuple[DataSource, list[str]]]  # the source and notes about the choice
    notes: tuple[str, ...] = ()
    point_side: tuple | None = None  # (Calibrated, range choices, StaticAnalysis, activation ranges), reused for them
    bn_folded: tuple[str, ...] = ()  # heads whose fusion group folds a BatchNorm (for the diagnosis)
    metric_fn: Callable | None = None  # the recipe's metric when it is the user's function
    cle_pairs: tuple = ()  # equalize.Pair: the layer pairs cross-layer equalisation may scale
    ship_formats: tuple | None = None  # the formats the run will export, when known (None: any)


@dataclass(frozen=True)
class QuantizeOutcome:
    calibrated: Calibrated
    float_side: tuple
    result: RunResult
    point_side: tuple | None = None


RANGE_BATCHES = 2  # calibration batches the activation ranges are measured on


def analyse_points(snap: RunSnapshot, calibrated: Calibrated, qmodel, evaluation, cancel,
                   data_key: str = "") -> Job[tuple[list, tuple | None]]:
    """Every point's error and range, with a diagnosis for the bad ones: (results, the reusable float side)."""
    from .point_analysis import StaticAnalysis, analyse_dynamic, analyse_static, static_ranges, with_diagnosis
    from .point_diagnosis import diagnose

    float_set = set(snap.inventory.float_layers)
    points = list(calibrated.points)
    if snap.mode == "pt2e":  # read off the PT2E graphs (no activation ranges or weight views yet)
        from .pt2e_points import analyse

        results = yield from analyse(calibrated.prepared, qmodel, points, float_set, evaluation, cancel=cancel)
        return with_diagnosis(results, diagnose(results, snap.bn_folded, calibrated.point_map)), None
    if snap.mode == "dynamic":
        results = yield from analyse_dynamic(snap.loaded.module, qmodel, points, float_set, evaluation,
                                             snap.recipe.engine, cancel=cancel, dtype=snap.recipe.dtype)
        side = None
    else:
        # What the float side depends on: the calibration, and each point's range and weight scales.
        key = (snap.recipe.observer, snap.recipe.per_channel,
               tuple(sorted((n, repr(o)) for n, o in snap.recipe.overrides.items())))
        side = snap.point_side
        if side is None or side[0] is not calibrated or side[1] != key:
            side = (calibrated, key, StaticAnalysis(calibrated, points, snap.mode, snap.recipe), None)
        analysis, ranges = side[2], side[3]
        results = yield from analyse_static(analysis, qmodel, float_set, evaluation, cancel=cancel, data_key=data_key)
        if ranges is None:  # after the error pass: it has seen each point's real int8 grid
            ranges = yield from static_ranges(analysis, snap.open_calibration(), RANGE_BATCHES, cancel)
            side = (*side[:3], ranges)
        results = [replace(r, range=ranges.get(r.name)) for r in results]
    return with_diagnosis(results, diagnose(results, snap.bn_folded, calibrated.point_map)), side


def quantize(snap: RunSnapshot, cancel: CancelToken | None = None, measure: bool = True) -> Job[QuantizeOutcome]:
    """Calibrate (unless the snapshot's calibration still fits the recipe), convert with the snapshot's
    float layers, compare with float, and (with `measure`) measure size and latency."""
    cancel = cancel or CancelToken()
    recipe, loaded = snap.recipe, snap.loaded
    reason = loaded.why_not_quantizable()
    if reason:
        from .errors import UsageError

        raise UsageError(reason)
    calibrated = snap.calibrated
    fresh = calibrated is None or calibrated.key != recipe.calibration_key()
    if fresh and recipe.metric == "top1":  # asked for by name: labels that cannot score it, refused before work
        from .metrics import check_labels_for

        check_labels_for(None, "top1", snap.open_evaluation()[0])
    if fresh:
        snap, equalized = _equalized(snap)
        calibrated = yield from _calibrate_equalized(snap, equalized, cancel)
        snap = replace(snap, point_side=None)
    elif recipe.equalize:  # the float model this calibration was made from: the equalised copy
        snap = replace(snap, loaded=replace(loaded, module=calibrated.model))
    try:
        outcome = yield from _convert_and_measure(snap, calibrated, cancel, measure)
    except Cancelled as exc:
        if fresh:  # a finished calibration is worth keeping: the owner may adopt it (adopt_calibration)
            exc.partial = calibrated
        raise
    return outcome


def _convert_and_measure(snap: RunSnapshot, calibrated: Calibrated, cancel: CancelToken,
                         measure: bool) -> Job[QuantizeOutcome]:
    recipe, loaded = snap.recipe, snap.loaded
    qmodel, refused = calibrated.convert_checked(snap.inventory.float_layers, loaded.input_spec.example(), recipe)
    if refused:  # what the result shows float is what runs float
        snap = replace(snap, inventory=replace(snap.inventory, float_layers=tuple(
            h for h in snap.inventory.float_layers if h not in refused)))
    evaluation, eval_notes = snap.open_evaluation()
    key = repr((recipe.evaluation, recipe.calibration, loaded.input_spec, snap.mode))
    float_side = snap.float_side
    if float_side is None or float_side[0] != key:
        probe_model(loaded.module, evaluation, loaded.spec)
        float_side = (key, [])
    # The cached float outputs are filled on first use: a cancelled job may leave them part-filled, so
    # the job works on its own list and the outcome carries it.
    outputs = list(float_side[1])
    metric = (recipe.metric, snap.metric_fn) if recipe.metric else None
    output = yield from compare_outputs(loaded.module, qmodel, evaluation, cancel, outputs, metric)
    layers, point_side = yield from analyse_points(snap, calibrated, qmodel, evaluation, cancel, key)
    refused_notes = tuple(f"{name} stayed int8: {why}" for name, why in refused.items())
    if snap.mode == "pt2e":
        refused_notes += ("PT2E backend: every point's accumulated, local and normalised error is read off the PT2E "
                          "graphs; its activation-range and weight views are torch.ao's (--backend torch.ao shows them)",)
    result = RunResult.capture(
        recipe=recipe, model=recipe.model, mode=snap.mode, input=str(loaded.input_spec),
        calibration=calibrated.data if recipe.method != "dynamic" else None,
        evaluation=DataFacts.of(evaluation), calib_stats=calibrated.stats,
        float_layers=snap.inventory.float_layers, expected_quantized=snap.inventory.quantized_heads,
        output=output, layers=layers, model_notes=tuple(dict.fromkeys((*snap.notes, *eval_notes, *refused_notes))),
        quantized_model=qmodel, corrections=kernel_corrections(snap.mode, calibrated.points,
                                                                 snap.inventory.float_layers, qmodel,
                                                                 calibrated.recipe.engine))
    if measure:
        result = yield from measure_result(result, loaded, cancel, snap.ship_formats)
    return QuantizeOutcome(calibrated, (key, outputs), result, point_side)


def kernel_corrections(mode: str, points, float_layers, converted=None, engine: str | None = None) -> tuple:
    """The known int8 kernel defects (qconfigs.KERNEL_CORRECTIONS) corrected at this run's points: each
    correction with the points where `converted` (the int8 GraphModule, converted for `engine`) has it.
    Without `converted`, only what the points themselves say (an int8 point of a corrected op)."""
    import torch

    from .qconfigs import KERNEL_CORRECTIONS

    if mode == "dynamic":
        return _dynamic_bag_corrections(points, float_layers, converted)
    if mode != "fx":  # the corrections live in the FX qconfig mapping and conversion (static and QAT)
        return ()
    engine = engine or torch.backends.quantized.engine
    kept = set(float_layers)
    found: dict = {}
    for p in points:
        if p.name in kept:
            continue
        for what, applies in KERNEL_CORRECTIONS.get(p.op, ()):
            if applies(p, converted, engine):
                found.setdefault((p.op, what), []).append(p.name)
                break
    return tuple({"op": op, "what": what, "points": found[(op, what)]}
                 for op, variants in KERNEL_CORRECTIONS.items() for what, _ in variants if (op, what) in found)


def _dynamic_bag_corrections(points, float_layers, converted) -> tuple:
    """Dynamic quantization's EmbeddingBags: a mean bag weighted to a mean, a max bag kept float."""
    from .qconfigs import KERNEL_CORRECTIONS

    if converted is None:
        return ()
    mean_what, max_what = (what for what, _ in KERNEL_CORRECTIONS["EmbeddingBag"])
    kept, found = set(float_layers), {mean_what: [], max_what: []}
    for p in points:
        if p.op != "EmbeddingBag" or p.name in kept:
            continue
        module = converted.get_submodule(p.name)
        if type(module).__name__ == "MeanEmbeddingBag":
            found[mean_what].append(p.name)
        elif getattr(module, "mode", None) == "max" and type(module).__module__.startswith("torch.nn"):
            found[max_what].append(p.name)
    return tuple({"op": "EmbeddingBag", "what": what, "points": names} for what, names in found.items() if names)


def _equalized(snap: RunSnapshot) -> tuple[RunSnapshot, str]:
    """With the recipe's `equalize`, the snapshot with an equalised copy of the float model (which
    computes the same outputs) to calibrate, convert and analyse, and a sentence on what was done."""
    if not snap.recipe.equalize:
        return snap, ""
    from .equalize import equalize

    pairs = list(snap.cle_pairs)
    if not pairs:
        return snap, ("cross-layer equalisation: no pair of layers in this model can be equalised exactly (a conv "
                      "or linear read only by another, through a ReLU at most): nothing changed")
    module, info = equalize(snap.loaded.module, pairs, snap.loaded.input_spec.example())
    note = (f"cross-layer equalisation of {len(pairs)} pair(s) of layers: the largest channel range over its "
            f"tensor's median went from {info['max_ratio_before']:.0f}x to {info['max_ratio_after']:.0f}x (float "
            f"outputs unchanged to {info['output_change']:.1g})")
    return replace(snap, loaded=replace(snap.loaded, module=module)), note


def _calibrate_equalized(snap: RunSnapshot, equalized: str, cancel: CancelToken) -> Job[Calibrated]:
    calibrated = yield from calibrate(snap, cancel)
    if equalized:  # said with every result of this calibration
        calibrated.stats = {**calibrated.stats, "equalized": equalized}
    return calibrated


def calibrate(snap: RunSnapshot, cancel: CancelToken) -> Job[Calibrated]:
    recipe, loaded = snap.recipe, snap.loaded
    calib = snap.open_calibration()
    if recipe.method != "dynamic":  # dynamic quantization never reads calibration data
        probe_model(loaded.module, calib, loaded.spec, recipe.method)
    backend = backend_for(recipe.method, snap.mode)
    example = loaded.input_spec.example()
    module, note = yield from _depthwise_equalized(snap, calib, cancel)
    calibrated = yield from backend.prepare_and_calibrate(module, recipe, snap.inventory, example, calib, cancel)
    calibrated.data, calibrated.key = DataFacts.of(calib), recipe.calibration_key()
    if note:  # said with every result of this calibration
        calibrated.stats = {**calibrated.stats, "depthwise_equalized": note}
    return calibrated


def _depthwise_equalized(snap: RunSnapshot, calib, cancel: CancelToken) -> Job[tuple[Any, str]]:
    """With the recipe's `equalize_depthwise` (static and QAT, per-channel weights): the float model with
    the input channels of its depthwise convs evened out on the calibration data (equalize.equalize_depthwise),
    to calibrate, convert and analyse, and a sentence on it. The results still compare against the model as
    loaded."""
    module, recipe = snap.loaded.module, snap.recipe
    if not recipe.equalize_depthwise or recipe.method == "dynamic" or not recipe.per_channel:
        return module, ""
    import torch

    from .equalize import depthwise_scales, equalize_depthwise, find_depthwise_pairs, watching_depthwise_inputs

    pairs = find_depthwise_pairs(module)
    if not pairs:
        return module, ""
    stage = Stage("depthwise ranges", len(calib), cancel)
    yield stage.step(0, f"{len(pairs)} depthwise conv(s): measuring their input channels")
    first = None
    with watching_depthwise_inputs(module, pairs) as peaks, torch.no_grad():
        for i, (inputs, _y) in enumerate(calib):
            cancel.check()
            first = first or inputs
            module(*inputs)
            yield stage.step(i + 1, f"{i + 1}/{len(calib)} batches")
    equalized, info = equalize_depthwise(module, pairs, depthwise_scales(peaks), first)
    if not info["pairs"]:
        return module, ""
    note = (f"depthwise input equalisation: the input channels of {len(info['pairs'])} depthwise conv(s) scaled "
            f"up towards each tensor's loudest channel ({info['scaled_channels']} channels, by up to "
            f"{info['largest_scale']:.0f}x; the depthwise weights scaled down to match), so one int8 range serves "
            f"them all; float outputs on calibration data unchanged to {info['output_change']:.1g}. "
            "--no-equalize-depthwise turns it off")
    return equalized, note


def _time_bytes(float_bytes: bytes, int8_bytes: list, example, cancel: CancelToken, kind: str,
                label: str = "latency") -> Job[list]:
    """Write a float file and int8 files (`kind`) to a scratch folder and time them all in one worker
    (measure.measure_many): a Latency per int8 file."""
    with scratch_dir("measure") as tmp:
        float_path = Path(tmp) / f"float.{kind}"
        write_bytes_atomic(float_path, float_bytes)  # a full disk: one message naming the file
        paths = []
        for k, data in enumerate(int8_bytes):
            paths.append(Path(tmp) / f"int8-{k}.{kind}")
            write_bytes_atomic(paths[-1], data)
        return (yield from measure_many(float_path, paths, example, cancel=cancel, kind=kind, label=label))


def quantizer_name(result: RunResult) -> str:
    """Who made the result's int8 model, in words (said on each file it writes)."""
    if result.mode == "pt2e":
        return "PT2E with the XNNPACK quantizer (torchao)"
    return f"torch.ao {result.mode} mode, {result.engine} engine"


def measure_result(result: RunResult, loaded, cancel: CancelToken | None = None,
                   formats=None) -> Job[RunResult]:
    """Size and batch-1 latency of the file the backend ships, float beside quantized, timed in a
    separate quiet process: TorchScript for torch.ao, an ExecuTorch .pte for PT2E. A new result.

    A PT2E run's .pte is made for this only when it can ship: with `formats` (the formats the run will
    export, when the caller knows them) not asking for one, nothing is lowered and the latency is said not
    measured (each exported file is timed in its own runtime); a .pte that cannot be made leaves the latency
    unmeasured, said why, instead of failing a run that may not ship a .pte at all (export fails, saying
    the same, when one was asked for)."""
    from .export import script_bytes

    example = loaded.input_spec.example(batch=1)
    if result.mode == "pt2e":
        from .deploy import pte_of
        from .errors import QtappError

        if formats is not None and "pte" not in formats:
            return result.evolve(latency=None, model_notes=(*result.model_notes, (
                "latency of the run not measured: a PT2E run is timed on its .pte, and no .pte was asked for "
                f"({', '.join(formats) or 'no format'}); each exported file is timed in its own runtime")))
        yield Stage("lower", 2, cancel).step(0, "lowering float and int8 to ExecuTorch for timing")
        try:
            float_bytes, quant_bytes = pte_of(loaded.module, example).data, pte_of(result.quantized_model, example).data
        except QtappError as exc:
            return result.evolve(latency=None, model_notes=(*result.model_notes, (
                f"latency of the run not measured: a PT2E run is timed on its .pte, which could not be made ({exc})")))
        scripted, note, kind = None, "", "pte"
    else:
        float_ts, _ = to_torchscript(loaded.module, example)
        scripted, note = to_torchscript(result.quantized_model, example)
        float_bytes, quant_bytes, kind = script_bytes(float_ts), script_bytes(scripted), "pt"
    latency, = yield from _time_bytes(float_bytes, [quant_bytes], example, cancel, kind)
    return result.evolve(scripted=scripted, script_note=note, size_float=len(float_bytes),
                         size_quantized=len(quant_bytes), latency=latency)


@dataclass(frozen=True)
class ExportPlan:
    """What exporting needs beyond the result: the data another quantizer calibrates on (a .pte made by
    PT2E for a torch.ao run, an ONNX Runtime .onnx), and whether to time each file."""

    snapshot: RunSnapshot | None = None
    float_modules: frozenset = frozenset()  # every module of the float layers' fusion groups
    measure: bool = False
    check: tuple = ()  # the check inputs every file is compared on


def export(result: RunResult, loaded, out_dir: Path, formats, check_inputs: tuple,
           protected: list[Path], cancel: CancelToken | None = None, plan: ExportPlan = ExportPlan()) -> Job[RunResult]:
    """Write and verify each format, each file's output against float; with `plan.measure`, time each
    file against its float counterpart in its own runtime. A new result that lists the files."""
    cancel = cancel or CancelToken()
    example = loaded.input_spec.example(batch=1)
    recipe = result.recipe
    scripted, note = result.scripted, result.script_note
    if scripted is None and result.mode != "pt2e" and any(f in ("pt", "ptl", "onnx") for f in formats):
        scripted, note = to_torchscript(result.quantized_model, example)
    makers, floats = {}, {}  # floats: {format: the float file a maker made on the way}, reused for timing
    if "pte" in formats:
        makers["pte"] = lambda: _pte_file(result, plan.snapshot, example, check_inputs, cancel)
    if "onnx" in formats and (recipe.onnx_quantizer == "ort" or result.mode == "pt2e"):
        makers["onnx"] = lambda: _ort_file(result, loaded, plan, example, cancel, floats)
    exports = yield from export_model(result.quantized_model, scripted, example, formats, Path(out_dir), protected,
                                      check_inputs, cancel=cancel, makers=makers, reference=loaded.module,
                                      quantizer=quantizer_name(result))
    if plan.measure:
        exports = yield from time_exports(exports, loaded, example, cancel, floats, result.latency,
                                          result.size_quantized)
    return result.evolve(scripted=scripted, script_note=note, exports=tuple(exports))


def _pte_file(result: RunResult, snap: RunSnapshot | None, example, check_inputs, cancel) -> Job:
    """The .pte of the result: its own PT2E graph lowered, or for a torch.ao run, a PT2E calibration of
    the same float model on the same data with the same float modules, then lowered."""
    from .deploy import pte_of
    from .pt2e import require

    require(".pte export")
    if result.mode == "pt2e":
        yield Stage("lower", 1, cancel).step(0, "lowering to ExecuTorch (XNNPACK)")
        return pte_of(result.quantized_model, example), result.quantized_model
    if result.method == "dynamic" or snap is None:
        from .errors import UsageError

        raise UsageError(".pte export quantizes with PT2E (static int8): it needs a static or QAT run")
    snap, equalized = _equalized(replace(snap, recipe=replace(snap.recipe, backend="pt2e", observer="histogram",
                                                              method="static", overrides={})))
    snap = replace(snap, mode="pt2e", calibrated=None)
    calibrated = yield from calibrate(snap, cancel)
    by_name = {q.name: q for q in snap.inventory.points}
    modules = [h for h in snap.inventory.float_layers if by_name.get(h) is None or by_name[h].toggle in (None, "module")]
    qmodel, refused = calibrated.convert_checked(modules, check_inputs)
    yield Stage("lower", 1, cancel).step(0, "lowering to ExecuTorch (XNNPACK)")
    made = pte_of(qmodel, example)
    said = [f"made by a PT2E calibration on the same {calibrated.data.samples} samples"
            + (f", with {', '.join(modules)} float" if modules else "")]
    said += [f"{name} stayed int8 in the .pte: {why}" for name, why in refused.items()]
    said += [f"{h} stayed int8 in the .pte: PT2E keeps modules float, not single ops"
             for h in snap.inventory.float_layers if h not in modules]
    return replace(made, notes=(*said, *made.notes)), qmodel


def _ort_file(result: RunResult, loaded, plan: ExportPlan, example, cancel, floats: dict) -> Job:
    from .deploy import ort_quantized

    yield Stage("onnxruntime", 1, cancel).step(0, "ONNX export of the float model, onnxruntime quantization")
    snap = plan.snapshot
    calib = snap.open_calibration() if snap is not None and result.method != "dynamic" else None
    made = ort_quantized(loaded.module, example, calib, set(plan.float_modules), result.recipe.per_channel,
                         dynamic=result.method == "dynamic")
    floats["onnx"] = made.float_data
    if result.mode == "pt2e" and result.recipe.onnx_quantizer != "ort":
        made = replace(made, notes=("a PT2E run has no torch.ao int8 model to export: onnxruntime quantized "
                                    "the float ONNX instead (--onnx-quantizer ort)", *made.notes))
    made = replace(made, notes=(*made.notes, _against_run(made.data, result, plan.check)))
    return made, None


def _against_run(onnx_bytes: bytes, result: RunResult, check) -> str:
    """How far onnxruntime's int8 file is from the run's own int8 model, on the check inputs."""
    import torch

    from .compare import first_tensor, sqnr_db
    from .deploy import run_onnx

    (got,) = run_onnx(onnx_bytes, [check])
    with torch.no_grad():
        ref = first_tensor(result.quantized_model(*check)).float()
    if got.shape != ref.shape:
        return f"output shape {tuple(got.shape)} differs from the run's int8 model's {tuple(ref.shape)}"
    sq = sqnr_db(float((ref * ref).sum()), float(((ref - got.float()) ** 2).sum()))
    return ("identical to the run's int8 model on the check samples" if sq is None else
            f"against the run's own int8 model ({quantizer_name(result)}): SQNR {sq:.1f} dB on the check samples")


def time_exports(exports, loaded, example, cancel, floats: dict | None = None, measured=None,
                 measured_bytes: int | None = None) -> Job[list]:
    """Each exported file timed against the float model in the same format and runtime (float files
    made in a temporary folder, or taken from `floats` {format: bytes} when the export made one), one
    separate process per format. `measured`: the run's own Latency, of an int8 file of `measured_bytes`:
    an export of that format and size is that same file, and keeps that figure instead of a second one."""
    from .deploy import float_onnx, pte_of
    from .errors import QtappError
    from .export import ptl_bytes, script_bytes

    floats = floats or {}
    out = []
    with scratch_dir("float") as tmp:
        scripted = None
        for e in exports:
            if measured is not None and measured.format == e.format and measured_bytes == e.bytes:
                out.append(replace(e, latency=measured))
                continue
            data = floats.get(e.format)
            if data is None:
                if e.format in ("pt", "ptl") and scripted is None:
                    scripted, _ = to_torchscript(loaded.module, example)
                try:
                    data = {"pt": lambda: script_bytes(scripted), "ptl": lambda: ptl_bytes(scripted),
                            "onnx": lambda: float_onnx(loaded.module, example)[0],
                            "pte": lambda: pte_of(loaded.module, example).data}[e.format]()
                except QtappError as exc:  # the int8 file is written and checked: only its timing is lost
                    out.append(replace(e, notes=[*e.notes, f"not timed: its float counterpart could not be made "
                                                           f"({exc})"]))
                    continue
            float_path = Path(tmp) / f"float.{e.format}"
            write_bytes_atomic(float_path, data)
            latency = yield from measure_files(float_path, e.path, example, cancel=cancel, kind=e.format,
                                               label=f"latency .{e.format}")
            out.append(replace(e, latency=latency))
    return out


def bench_folder(folder: Path, trust: bool = False, cancel: CancelToken | None = None,
                 spec: str | None = None) -> Job[list]:
    """`qtapp-cli bench DIR [SPEC]`: every file a result folder lists, timed again against the float model
    (`spec`, else the one the folder's recipe names) in the same format and runtime. Reads the folder,
    writes nothing to it."""
    import json

    from .errors import UsageError
    from .export import ExportResult
    from .loading import load_model
    from .recipe import QuantRecipe

    folder = Path(folder)
    report_path, recipe_path = folder / "report.json", folder / "recipe.json"
    if not report_path.is_file() or not recipe_path.is_file():
        raise UsageError(f"{folder} is not a result folder: it needs the report.json and recipe.json that "
                         "qtapp-cli quantize --out writes")
    try:
        listed = json.loads(report_path.read_text(encoding="utf-8")).get("exports") or []
    except (json.JSONDecodeError, UnicodeDecodeError, AttributeError) as exc:
        raise UsageError(f"{report_path} is not a qtapp report ({exc})") from None
    except RecursionError:
        raise UsageError(f"{report_path} is nested too deeply to be a qtapp report") from None
    exports = []
    for e in listed:
        path = folder / Path(str(e.get("path", ""))).name
        if e.get("format") not in ("pt", "ptl", "onnx", "pte"):
            continue
        if not path.is_file():
            raise UsageError(f"{path.name} is listed in {report_path.name} but missing from {folder}")
        exports.append(ExportResult(e["format"], str(path), path.stat().st_size, bool(e.get("verified")), None,
                                    quantizer=str(e.get("quantizer") or "")))
    if not exports:
        raise UsageError(f"{report_path} lists no exported file to time")
    programs = [Path(e.path).name for e in exports if e.format in ("pt", "ptl")]
    if programs and not trust:  # timing loads them: a folder this run did not write may hold anything
        from .errors import ProgramFileRefused

        raise ProgramFileRefused(folder / programs[0], "TorchScript", (
            f"{folder} holds TorchScript files ({', '.join(programs)}): they are programs, and timing them loads "
            "and runs their code. If you trust that folder's files, pass --trust; without it, quantize times the "
            "files it writes itself (a folder it did not just write may hold anything)."))
    recipe = QuantRecipe.load(recipe_path)
    from .inputs import InputSpec

    shapes = InputSpec.parse(recipe.input_shape, recipe.input_dtype or "float32") if recipe.input_shape else None
    loaded = yield from load_model(spec or recipe.model, recipe.weights, recipe.kwargs, trust, shapes,
                                   named_by=None if spec else recipe_path)  # a SPEC typed here is consent
    example = loaded.input_spec.example(batch=1)
    return (yield from time_exports(exports, loaded, example, cancel or CancelToken()))


def recipe_reads(recipe: QuantRecipe, recipe_file: Path | None = None) -> list[Path]:
    """The files and folders a recipe makes a run read: none of them may be written over."""
    reads = [Path(recipe_file)] if recipe_file else []
    model = recipe.model
    head, sep, _ = model.rpartition(":")
    candidates = [head if sep and head.endswith(".py") else model, recipe.weights,
                  recipe.calibration.source, recipe.evaluation.source]
    for value in candidates:
        if value and value not in ("demo", "random", "auto", "none", "DEFAULT") and Path(value).expanduser().exists():
            reads.append(Path(value).expanduser())
    return reads


def analyze(recipe: QuantRecipe, trust: bool = False, cancel: CancelToken | None = None,
            model_named_by: Path | None = None, metric_named_by: Path | None = None,
            with_sensitivity: bool = False) -> Job[RunResult]:
    """The CLI's `analyze` without --out: open, calibrate, convert and measure every point (and with
    `with_sensitivity`, each point's sensitivity both ways); writes nothing."""
    from .session import QuantSession

    from .loading import refuse_torchscript_for_quantizing

    recipe.resolve_paths(Path.cwd())
    recipe.check_applicable()
    refuse_torchscript_for_quantizing(recipe.model)  # before loading it runs the file's code
    session = yield from QuantSession.open(recipe, trust, named_by=model_named_by, metric_named_by=metric_named_by)
    job = session.sensitivity_job(cancel) if with_sensitivity else session.quantize_job(cancel, measure=False)
    outcome = yield from job
    return session.adopt(outcome)


def _quantize_action(measure: bool):
    def run(session, cancel):
        outcome = yield from session.quantize_job(cancel, measure)
        return session.adopt(outcome)
    return run


def quantize_to_folder(recipe: QuantRecipe, out_dir: Path, formats, trust: bool = False,
                       cancel: CancelToken | None = None, recipe_file: Path | None = None,
                       html: bool = False, model_named_by: Path | None = None, measure: bool = True,
                       metric_named_by: Path | None = None, action=None, extra_files=None,
                       time_files: bool = True, method_given: bool = True) -> Job[RunResult]:
    """The CLI's action, end to end: open, calibrate, quantize, measure, export, write recipe and report.
    Everything is staged and published as one folder (`ResultSet`): a failure, a cancel or a kill leaves
    the previous result set as it was. `model_named_by` / `metric_named_by`: the recipe file the model
    spec / the metric was read from (not typed by the user), whose Python callable then needs `trust`.
    `action(session, cancel)`: the job whose adopted result is written (default: quantize); `extra_files
    (result)`: {file name: bytes} written beside the report; `time_files`: time each exported file against
    float in its runtime (with `measure`). `method_given` False (the user named no method): a model torch.fx
    cannot trace is quantized dynamically instead of failing in static mode, and the result says so."""
    from .loading import refuse_torchscript_for_quantizing
    from .session import QuantSession  # the owner object; it imports this module

    cancel = cancel or CancelToken()
    recipe.resolve_paths(Path.cwd())
    recipe.check_applicable()
    refuse_torchscript_for_quantizing(recipe.model)  # before loading it runs the file's code
    results = ResultSet(Path(out_dir), recipe_reads(recipe, recipe_file))
    results.check()  # before any work: a refusal costs nothing
    session = yield from QuantSession.open(recipe, trust, named_by=model_named_by, metric_named_by=metric_named_by)
    if not method_given:
        _dynamic_when_untraceable(session)
    session.check_export_formats(formats)
    session.ship_formats = tuple(formats)  # what this run builds: nothing else is lowered or exported
    results.reads += session.loaded.protected_paths
    with results:
        yield from (action or _quantize_action(measure))(session, cancel)
        staged = yield from session.export_job(results.staging, formats, measure=measure and time_files)(cancel)
        result = staged.evolve(exports=tuple(replace(e, path=str(results.final_path(Path(e.path).name)))
                                             for e in staged.exports))
        session.adopt_result(result)
        report = report_dict(result)
        session.recipe.save(results.path("recipe.json"))
        write_report(report, results.path("report.json"))
        if html:
            write_bytes_atomic(results.path("report.html"), to_html(result).encode("utf-8"))
        for name, data in (extra_files(result) if extra_files else {}).items():
            write_bytes_atomic(results.path(name), data)
        cancel.check()
        results.publish()
    return result


def _dynamic_when_untraceable(session) -> None:
    """Static quantization by default, as the recipe says, unless torch.fx cannot trace the model (a Hugging
    Face encoder, Python control flow on tensor values): then dynamic quantization, which needs no trace, and
    a note saying why."""
    import torch.nn as nn

    from .backends import _batchnorms_without_stats

    why = session.inventory.untraceable
    if session.recipe.method != "static" or session.mode != "fx" or not why:
        return
    module = session.loaded.module
    if _batchnorms_without_stats(module):  # static's own message says what to change; dynamic would skip them
        return
    if not any(isinstance(m, (nn.Linear, nn.LSTM, nn.GRU)) for m in module.modules()):
        return  # nothing dynamic quantization could make int8: the static error says more
    session.update_recipe(method="dynamic")
    session.notes.append(f"static quantization needs a forward torch.fx can trace, and this model's cannot be ({why}): "
                         "quantized with --method dynamic instead (its Linear, LSTM and GRU layers, activations "
                         "rounded per call); --method static shows the error")


def tune_to_folder(recipe: QuantRecipe, out_dir: Path, formats, target, budget, **kw) -> Job[RunResult]:
    """The CLI's `tune`: search, then write what `quantize` writes for the configuration found (its
    recipe reproduces it), and tune.json with every step tried."""
    import json

    def run(session, cancel):
        outcome = yield from session.tune_job(target, budget, cancel)
        return session.adopt_tuned(outcome)

    def tune_json(result):
        return (json.dumps(json_safe(result.tune.to_json()), indent=2) + "\n").encode("utf-8")

    return (yield from quantize_to_folder(recipe, out_dir, formats, action=run,
                                          extra_files=lambda r: {"tune.json": tune_json(r)}, **kw))


@dataclass(frozen=True)
class TuneOutcome:
    tune: Any  # tune.TuneResult
    quantized: QuantizeOutcome  # the chosen configuration, quantized, analysed and measured


def search_inputs(snap: RunSnapshot, outcome: QuantizeOutcome) -> dict:
    """What the search reads off a quantized result: its candidates, bad points, each point's
    consumers, the per-tensor layers, and (static) each point's error under every observed range."""
    result = outcome.result
    candidates = [h for h in snap.inventory.heads if h not in set(snap.inventory.float_layers)]
    consumers: dict[str, list[str]] = {}
    for p in outcome.calibrated.points:
        for source in p.inputs:
            consumers.setdefault(source, []).append(p.name)
    from .point_diagnosis import worst_points

    bad = tuple(p.name for p in worst_points(result.layers, len(result.layers)) if p.diagnosis)
    weighted = {p.name for p in outcome.calibrated.points if p.weighted}
    per_tensor = tuple(h for h in candidates if h in weighted and not snap.recipe.per_channel)
    return {"candidates": candidates, "bad_points": bad, "consumers": consumers, "per_tensor_heads": per_tensor}


def _scorer(snap: RunSnapshot, start: QuantizeOutcome, target, metric_name: str, candidates) -> "Scorer":
    """Converts and scores configurations of `start`'s calibration, with the costs of `candidates`."""
    from .costs import CostModel
    from .scoring import Scorer

    evaluation, _ = snap.open_evaluation()
    metric = (metric_name, snap.metric_fn if metric_name == snap.recipe.metric else None)
    loaded = snap.loaded
    costs = CostModel.build(loaded.module, candidates, loaded.input_spec.example(batch=1))
    lat = start.result.latency
    if lat is not None:  # anchored at the start's measured int8 latency and the float model's
        kept = set(snap.inventory.float_layers)
        share = sum(m for h, m in costs.macs.items() if h in kept) / max(costs.total_macs, 1)
        int8 = (lat.quantized_ms - lat.float_ms * share) / max(1 - share, 1e-9)
        costs = costs.with_latency(lat.float_ms, max(int8, 0.0))
    if start.result.size_quantized and start.result.size_float:  # pinned to the files measured
        from .scoring import Config, weight_layout

        float16, per_tensor = weight_layout(snap, costs, Config.of(snap.recipe))
        costs = costs.anchored(start.result.size_quantized, start.result.size_float, set(snap.inventory.float_layers),
                               float16, per_tensor)

    def recalibrate(recipe):  # a model-wide move (equalize): one more calibration, on the same data
        eq_snap, equalized = _equalized(replace(snap, recipe=recipe, calibrated=None))
        return drive(_calibrate_equalized(eq_snap, equalized, CancelToken()))

    return Scorer(snap, start.calibrated, evaluation, metric, target, costs, recalibrate)


def _from_start(snap: RunSnapshot, start: QuantizeOutcome) -> RunSnapshot:
    return replace(snap, calibrated=start.calibrated, float_side=start.float_side, point_side=start.point_side)


def sensitivity(snap: RunSnapshot, cancel: CancelToken | None = None) -> Job[QuantizeOutcome]:
    """Quantize as the recipe says, then each toggleable point's sensitivity both ways from that one
    calibration (sensitivity.py), from every toggle in int8 (the recipe's per-point settings kept):
    the outcome's result carries it."""
    from .scoring import Config, steady_gc
    from .sensitivity import sensitivity as measure

    cancel = cancel or CancelToken()
    start = yield from quantize(snap, cancel, measure=False)
    snap = _from_start(snap, start)
    candidates = list(snap.inventory.heads)  # every toggle, whatever the recipe keeps float now
    scorer = _scorer(snap, start, None, snap.recipe.metric or "sqnr", candidates)
    all_int8 = Config(frozenset(), tuple(sorted(snap.recipe.overrides.items())))
    with steady_gc():
        found = yield from measure(scorer, candidates, cancel, start=all_int8)
    return replace(start, result=start.result.evolve(sensitivity=found))


def tune(snap: RunSnapshot, target, budget, cancel: CancelToken | None = None, measure: bool = True) -> Job[TuneOutcome]:
    """Quantize as the recipe says, then search moves from that calibration for the target (tune.py),
    then quantize, analyse and (with `measure`) measure the configuration found."""
    from .metrics import check_labels_for
    from .point_analysis import range_choice_errors
    from .scoring import steady_gc
    from .tune import tune as search

    cancel = cancel or CancelToken()
    start = yield from quantize(snap, cancel, measure=measure)
    snap = _from_start(snap, start)
    evaluation, _ = snap.open_evaluation()
    check_labels_for(target, snap.recipe.metric, evaluation)
    inputs = search_inputs(snap, start)
    scorer = _scorer(snap, start, target, target.metric_name(snap.recipe.metric), inputs["candidates"])
    range_errors = None
    if snap.mode != "dynamic" and snap.recipe.method == "static" and start.point_side is not None:
        range_errors = yield from range_choice_errors(start.point_side[2], scorer.evaluation, cancel=cancel)
    with steady_gc():
        result = yield from search(scorer, target, budget, inputs["candidates"], range_errors=range_errors,
                                   bad_points=inputs["bad_points"], consumers=inputs["consumers"],
                                   dynamic=snap.mode == "dynamic", per_tensor_heads=inputs["per_tensor_heads"],
                                   equalizable=len(snap.cle_pairs) if snap.recipe.method == "static" else 0,
                                   cancel=cancel)
    chosen = result.best.config.recipe(snap.recipe)
    inv = InventoryView(snap.inventory.heads, tuple(h for h in snap.inventory.heads if h in chosen.float_layers),
                        tuple(h for h in snap.inventory.heads if h not in chosen.float_layers), snap.inventory.points)
    final = yield from quantize(replace(snap, recipe=chosen, inventory=inv), cancel, measure=measure)
    result = _with_measured(_with_measured(result, result.start.config, start.result),
                            result.best.config, final.result)
    if measure and snap.mode != "pt2e":
        result = yield from _measure_shown(result, scorer, snap.loaded, cancel)
    return TuneOutcome(result, replace(final, result=final.result.evolve(tune=result)))


MEASURED_TUNE_STEPS = 6  # configurations timed beyond the start and the chosen one: the curve's and the front's


def _measure_shown(tune_result, scorer, loaded, cancel: CancelToken) -> Job:
    """Build the files of the configurations the curve and the front show (at most MEASURED_TUNE_STEPS
    beyond the start and the chosen one, the curve's first), take their sizes (a measured size can change
    the front, so it is read again after each), then time them all against float in one worker process:
    their size and latency become their files'. The other steps keep the cost model's estimates, marked."""
    from .export import script_bytes

    measured = {tune_result.start.config, tune_result.best.config}
    example = loaded.input_spec.example(batch=1)
    built = []  # (config, int8 file bytes)
    for _ in range(MEASURED_TUNE_STEPS):
        shown = [tune_result.steps[i].scored.config for i in (*tune_result.path, *tune_result.front())]
        config = next((c for c in shown if c not in measured), None)
        if config is None:
            break
        cancel.check()
        qmodel, _refused = scorer.convert(config)
        data = script_bytes(to_torchscript(qmodel, example)[0])
        built.append((config, data))
        measured.add(config)
        tune_result = _with_figures(tune_result, config, len(data), None)
    if built:
        float_bytes = script_bytes(to_torchscript(loaded.module, example)[0])
        latencies = yield from _time_bytes(float_bytes, [data for _config, data in built], example, cancel, "pt",
                                           label=f"latency of {len(built)} more tune configuration(s)")
        for (config, data), latency in zip(built, latencies):
            tune_result = _with_figures(tune_result, config, len(data), latency.quantized_ms)
    rest = len({s.scored.config for s in tune_result.steps} - measured)
    if rest:
        tune_result = replace(tune_result, notes=(*tune_result.notes, (
            f"{len(measured)} configuration(s) (the start, the chosen one, and those the curve and front show) were "
            f"built and timed on their own files; the other {rest}'s size and latency are the cost model's "
            "estimates (tune.json: measured false)")))
    return tune_result


def _with_measured(tune_result, config, measured):
    """The search's figures for `config` replaced by those measured on its file (the start and the
    chosen configuration are built and timed; the curve's and front's by _measure_shown; the others are
    the cost model's)."""
    if measured.size_quantized is None:
        return tune_result
    lat = measured.latency.quantized_ms if measured.latency is not None else None
    return _with_figures(tune_result, config, measured.size_quantized, lat)


def _with_figures(tune_result, config, size: int, lat: float | None):
    from .tune import Step

    def fix(scored):
        if scored.config != config:
            return scored
        if lat is None:
            return replace(scored, size_bytes=size)
        return replace(scored, size_bytes=size, latency_ms=lat, measured=True)

    steps = tuple(replace(s, scored=fix(s.scored)) if isinstance(s, Step) else s for s in tune_result.steps)
    return replace(tune_result, steps=steps, best=fix(tune_result.best), start=fix(tune_result.start))
