"""(docstring)"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

from ..base.errors import ProgramFileRefused, QtappError, UsageError
from ..base.inputs import InputSpec
from ..base.progress import CancelToken, Job, Stage
from ..base.resultset import write_bytes_atomic
from ..base.scratch import scratch_dir
from ..base.tensors import first_tensor, sqnr_db
from ..config.recipe import QuantRecipe
from ..deploy.export import ExportResult, export_model, ptl_bytes, script_bytes
from ..deploy.measure import measure_files, to_torchscript
from ..deploy.onnx import float_onnx, ort_quantized, pte_of, run_onnx
from ..model.loading import load_model
from ..quantize.pt2e import require
from ..report.results import RunResult
from .jobs import calibrate, equalize_snapshot
from .measuring import quantizer_name
from .snapshot import RunSnapshot


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
    require(".pte export")
    if result.mode == "pt2e":
        yield Stage("lower", 1, cancel).step(0, "lowering to ExecuTorch (XNNPACK)")
        return pte_of(result.quantized_model, example), result.quantized_model
    if result.method == "dynamic" or snap is None:
        raise UsageError(".pte export quantizes with PT2E (static int8): it needs a static or QAT run")
    snap, equalized = equalize_snapshot(replace(snap, recipe=replace(snap.recipe, backend="pt2e", observer="histogram",
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
        raise ProgramFileRefused(folder / programs[0], "TorchScript", (
            f"{folder} holds TorchScript files ({', '.join(programs)}): they are programs, and timing them loads "
            "and runs their code. If you trust that folder's files, pass --trust; without it, quantize times the "
            "files it writes itself (a folder it did not just write may hold anything)."))
    recipe = QuantRecipe.load(recipe_path)

    shapes = InputSpec.parse(recipe.input_shape, recipe.input_dtype or "float32") if recipe.input_shape else None
    loaded = yield from load_model(spec or recipe.model, recipe.weights, recipe.kwargs, trust, shapes,
                                   named_by=None if spec else recipe_path)  # a SPEC typed here is consent
    example = loaded.input_spec.example(batch=1)
    return (yield from time_exports(exports, loaded, example, cancel or CancelToken()))
