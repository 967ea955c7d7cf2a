"""The export job: write each format of a result, check each file in its own runtime against float, and
(when asked) time it against a float file of the same format."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from ..base.errors import QtappError, UsageError
from ..base.inputs import InputSpec
from ..base.progress import CancelToken, Job, Stage
from ..base.resultset import ResultSet, write_bytes_atomic
from ..base.scratch import scratch_dir
from ..base.tensors import first_tensor, sqnr_db
from ..deploy.executorch import pte_of
from ..deploy.export import ExportResult, export_model, ptl_bytes, script_bytes
from ..deploy.measure import measure_files, to_torchscript
from ..deploy.onnx import float_onnx, ort_quantized, run_onnx
from ..deploy.pt2 import pt2_file
from ..model.loading import load_model
from ..quantize.pt2e import require
from ..report.results import RunResult
from .calibrating import calibrate, equalize_snapshot
from .measuring import quantizer_name
from .snapshot import ExportRequest, RunSnapshot


def export(request: ExportRequest, cancel: CancelToken | None = None) -> Job[RunResult]:
    """Write and verify each format of the request's result, each file's output against float; with
    `request.measure`, time each file against its float counterpart in its own runtime. A new result that
    lists the files (the owner adopts it)."""
    cancel = cancel or CancelToken()
    result, loaded, formats = request.result, request.loaded, request.formats
    example = loaded.input_spec.example(batch=1)
    scripted, note = result.scripted, result.script_note
    if scripted is None and result.mode not in ("pt2e", "torchao") and any(f in ("pt", "ptl", "onnx") for f in formats):
        scripted, note = to_torchscript(result.quantized_model, example)
    makers, floats = {}, {}  # floats: {format: the float file a maker made on the way}, reused for timing
    if "pte" in formats:
        makers["pte"] = lambda: _pte_file(result, request.snapshot, example, request.check, cancel)
    if "onnx" in formats and (result.recipe.onnx_quantizer == "ort" or result.mode == "pt2e"):
        makers["onnx"] = lambda: _ort_file(request, example, cancel, floats)
    exports = yield from export_model(result.quantized_model, scripted, example, formats, request.out_dir,
                                      list(request.protected), request.check, cancel=cancel, makers=makers,
                                      reference=loaded.module, quantizer=quantizer_name(result))
    if request.measure:
        exports = yield from time_exports(exports, loaded, example, cancel, floats, result.latency,
                                          result.size_quantized)
    return result.evolve(scripted=scripted, script_note=note, exports=tuple(exports))


def _pte_file(result: RunResult, snap: RunSnapshot | None, example, check_inputs, cancel) -> Job:
    """The .pte of the result: its own PT2E graph lowered, or for a torch.ao run, a PT2E calibration of
    the same float model on the same data with the same float modules, then lowered."""
    require(".pte export")
    if result.mode in ("pt2e", "torchao"):  # its own model, lowered as it is
        yield Stage("lower", 1, cancel).step(0, "lowering to ExecuTorch (XNNPACK)")
        made = pte_of(result.quantized_model, example)
        if result.mode == "torchao":
            made = replace(made, quantizer=quantizer_name(result))
        return made, result.quantized_model
    if result.method == "dynamic" or snap is None:
        raise UsageError(".pte export quantizes with PT2E (static int8): it needs a static or QAT run")
    snap, _note = equalize_snapshot(replace(snap, recipe=replace(snap.recipe, backend="pt2e", observer="histogram",
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


def _ort_file(request: ExportRequest, example, cancel, floats: dict) -> Job:
    result, loaded = request.result, request.loaded
    yield Stage("onnxruntime", 1, cancel).step(0, "ONNX export of the float model, onnxruntime quantization")
    snap = request.snapshot
    calib = snap.open_calibration() if snap is not None and result.method != "dynamic" else None
    made = ort_quantized(loaded.module, example, calib, set(request.float_modules), result.recipe.per_channel,
                         dynamic=result.method == "dynamic")
    floats["onnx"] = made.float_data
    if result.mode == "pt2e" and result.recipe.onnx_quantizer != "ort":
        made = replace(made, notes=("a PT2E run has no torch.ao int8 model to export: onnxruntime quantized "
                                    "the float ONNX instead (--onnx-quantizer ort)", *made.notes))
    made = replace(made, notes=(*made.notes, _against_run(made.data, result, request.check)))
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
                            "pte": lambda: pte_of(loaded.module, example).data,
                            "pt2": lambda: pt2_file(loaded.module, example)}[e.format]()
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


def export_float(spec: str, weights: str | None, kwargs: dict | None, trust: bool, input_spec: InputSpec | None,
                 out_dir: Path, formats, cancel: CancelToken | None = None) -> Job[list[ExportResult]]:
    """`qtapp-cli export`: the float model, loaded as `quantize` would, written in each format and checked,
    with the same guarantees as a quantize run: `out_dir` is checked against what the run reads and
    against files that are not a result, and it receives the whole set of files or none."""
    cancel = cancel or CancelToken()
    loaded = yield from load_model(spec, weights, kwargs, trust, input_spec)
    if loaded.input_spec is None:
        raise UsageError("the model's input shape is unknown: give it with --input-shape, e.g. 1,3,224,224")
    example = loaded.input_spec.example()
    results = ResultSet(Path(out_dir), loaded.protected_paths)
    with results:
        scripted, _how = to_torchscript(loaded.module, example)

        def float_pte():
            yield from ()
            return pte_of(loaded.module, loaded.input_spec.example(batch=1)), loaded.module

        staged = yield from export_model(loaded.module, scripted, example, formats, results.staging,
                                         loaded.protected_paths, cancel=cancel, makers={"pte": float_pte})
        results.publish()
    return [replace(r, path=str(results.final_path(Path(r.path).name))) for r in staged]
