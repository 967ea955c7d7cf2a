"""Export to TorchScript (.pt), the lite interpreter (.ptl), ONNX, ExecuTorch (.pte) and torch.export
(.pt2), each loaded back and checked, each file's output compared with the float model's.

Each file is serialised in memory first and written by Python to a temporary name beside the
destination, then renamed into place: a crash never leaves a half-written file, and a full disk is an
`OSError` this module turns into one clear message (torch's own C++ writers abort the process on a
short write). A destination that is one of the model's source files is refused.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from pathlib import Path

from ..base.compat import quiet_ao
from ..base.errors import QtappError, UsageError
from ..base.progress import CancelToken, Job, Stage
from ..base.resultset import write_bytes_atomic
from ..base.tensors import first_tensor, sqnr_db
from .executorch import run_pte
from .onnx import run_onnx
from .pt2 import pt2_file, run_pt2

FORMATS = ("pt", "ptl", "onnx", "pte", "pt2")


@dataclass
class ExportResult:
    format: str
    path: str
    bytes: int
    verified: bool
    max_abs_diff: float | None  # against the in-memory int8 model the file was made from
    notes: list[str] = field(default_factory=list)
    quantizer: str = ""  # who made the int8 file
    sqnr_vs_float_db: float | None = None  # the file's own output, run in its runtime, against float
    latency: object = None  # measure.Latency of this file against its float counterpart, same runtime

    def to_json(self) -> dict:
        lat = self.latency
        return {"format": self.format, "path": self.path, "bytes": self.bytes, "verified": self.verified,
                "max_abs_diff": self.max_abs_diff, "quantizer": self.quantizer,
                "sqnr_vs_float_db": self.sqnr_vs_float_db, "notes": self.notes,
                "latency_ms": None if lat is None else latency_json(lat)}


def latency_json(lat) -> dict:
    return {"float": lat.float_ms, "int8": lat.quantized_ms, "speedup": round(lat.float_ms / lat.quantized_ms, 3),
            "runtime": lat.format, "batch": 1, "threads": lat.threads, "runs": lat.runs,
            "other_load_cores": round(lat.other_load, 2) if lat.other_load is not None else None}


def parse_formats(text) -> list[str]:
    formats = [f.strip().lstrip(".").lower() for f in (text.split(",") if isinstance(text, str) else text) if f.strip()]
    bad = [f for f in formats if f not in FORMATS]
    if bad or not formats:
        raise UsageError(f"unknown export format(s) {', '.join(bad) or '(none)'}: choose from {', '.join(FORMATS)}")
    return list(dict.fromkeys(formats))


def check_destination(path: Path, protected: list[Path]) -> None:
    if path.resolve() in protected:
        raise QtappError(f"refusing to write {path}: it is the model's own source file")


def script_bytes(scripted) -> bytes:
    import io

    import torch

    buf = io.BytesIO()
    with quiet_ao():
        torch.jit.save(scripted, buf)
    return buf.getvalue()


def export_model(model, scripted, example: tuple, formats, out_dir: Path, protected: list[Path],
                 check: tuple | None = None, stem: str = "model",
                 cancel: CancelToken | None = None, makers: dict | None = None,
                 reference=None, quantizer: str = "") -> Job[list[ExportResult]]:
    """`model` is the in-memory model each file is loaded back and checked against, on `check`
    inputs (default: `example`, which also traces ONNX); `scripted` is its TorchScript. `makers`:
    {format: callable -> (deploy.Made, the in-memory model it came from or None)} for the formats
    another quantizer makes (pte; onnx by onnxruntime). `reference`: the float model every file's output
    is compared with; `quantizer`: who made `model`."""
    check = check if check is not None else example
    makers = makers or {}
    import torch

    # Every destination is checked before anything is written: a refusal leaves the folder as it was.
    for fmt in formats:
        check_destination(out_dir / f"{stem}.{fmt}", protected)
    out_dir.mkdir(parents=True, exist_ok=True)
    with torch.no_grad(), quiet_ao():
        expected = first_tensor(model(*check)) if model is not None else None
        float_out = first_tensor(reference(*check)) if reference is not None else None
    stage = Stage("export", len(formats), cancel)
    results = []
    yield stage.step(0, "exporting")
    for i, fmt in enumerate(formats):
        path = out_dir / f"{stem}.{fmt}"
        if fmt in makers:
            yield stage.step(i, f"making {path.name}")
            made, source = yield from makers[fmt]()
            result = _write_made(fmt, made, source, check, path, float_out)
        else:
            writer = {"pt": _export_pt, "ptl": _export_ptl, "onnx": _export_onnx, "pt2": _export_pt2}[fmt]
            with quiet_ao():
                result = writer(model, scripted, example, check, expected, path)
            result.quantizer = quantizer
        if float_out is not None:
            result.sqnr_vs_float_db = _file_sqnr(fmt, path, check, float_out)
        results.append(result)
        yield stage.step(i + 1, f"wrote {path.name}")
    return results


def _rows(check: tuple) -> list[tuple]:
    """`check` one sample at a time, each a batch of 1."""
    return [tuple(t[i:i + 1] for t in check) for i in range(len(check[0]))]


def run_file(fmt: str, path: Path, check: tuple):
    """The file's first output on `check`, run in its own runtime (a .pte or .pt2 one sample at a time:
    its input shapes are fixed at export)."""
    import torch

    if fmt == "pte":
        return torch.cat([o.detach() for o in run_pte(path, _rows(check))])
    if fmt == "pt2":
        return torch.cat(run_pt2(path, _rows(check)))
    if fmt == "onnx":
        return run_onnx(path, [check])[0]
    with quiet_ao(), torch.no_grad():
        if fmt == "ptl":
            from torch.jit.mobile import _load_for_lite_interpreter

            return first_tensor(_load_for_lite_interpreter(str(path))(*check))
        return first_tensor(torch.jit.load(str(path))(*check))


def _file_sqnr(fmt, path, check, float_out) -> float | None:
    got = run_file(fmt, path, check)
    if got.shape != float_out.shape:
        return None
    e, g = float_out.float(), got.float()
    sq = sqnr_db(float((e * e).sum()), float(((e - g) ** 2).sum()))
    return None if sq is None or math.isinf(sq) else round(sq, 2)  # None: identical to float, or float is all zero


def _write_made(fmt: str, made, source, check, path: Path, float_out=None) -> ExportResult:
    """Write a file another quantizer made, load it back in its runtime and compare it with the
    in-memory model it came from (when there is one; else only its output's shape with float's)."""
    import torch

    write_bytes_atomic(path, made.data)
    got = run_file(fmt, path, check)
    notes = list(made.notes)
    if source is None:
        shaped = float_out is None or tuple(got.shape) == tuple(float_out.shape)
        return ExportResult(fmt, str(path), path.stat().st_size, shaped, None,
                            notes + [f"loaded back and ran in {'onnxruntime' if fmt == 'onnx' else fmt}"
                                     + ("" if shaped else f": output shape {tuple(got.shape)} != float's "
                                                          f"{tuple(float_out.shape)}")],
                            quantizer=made.quantizer)
    with torch.no_grad(), quiet_ao():
        expected = first_tensor(source(*check)).float()
    if got.shape != expected.shape:
        return ExportResult(fmt, str(path), path.stat().st_size, False, None,
                            notes + [f"output shape {tuple(got.shape)} != the in-memory model's {tuple(expected.shape)}"],
                            quantizer=made.quantizer)
    verified, said = made_file_verdict(expected, got.float(), float_out)
    return ExportResult(fmt, str(path), path.stat().st_size, verified, _compare(expected, got), notes + [said],
                        quantizer=made.quantizer)


VERIFIED_DB = 30.0  # a made file this close to its in-memory model is verified, whatever that model's own error
WITHIN_OWN_ERROR_DB = 6.0  # or its difference is at most half (in amplitude) of the model's own error against float


def made_file_verdict(expected, got, float_out=None) -> tuple[bool, str]:
    """(verified, the sentence saying why) of a made file's output `got` against the in-memory model's
    `expected`, both on the check inputs. Another runtime's kernels round differently from the in-memory
    model's simulation (XNNPACK's bf16 group scales and true int8 arithmetic: a correct 4-bit MiniLM .pte was
    27.4 dB from its eager model, itself 10.9 dB from float), so with float's output known the file must be
    within min(30, the model's own SQNR against float + 6) dB of it; without, within 30 dB. A miscompiled
    file (XNNPACK dropping a weight zero point: cosine 0.93; weight-only Linear: 0.58) is far below either.
    Top-1 (each row of a 2-D or wider output): without float's output the file must agree with the
    in-memory model on every row; with it, the agreement is said beside the model's own with float and
    the SQNR rule decides (a near tie moves within the error it allows; an embedding's largest value is
    no class: MiniLM's 4-bit model kept float's on 73% of rows)."""
    sq = sqnr_db(float((expected * expected).sum()), float(((expected - got) ** 2).sum()))
    f = float_out.float() if float_out is not None and tuple(float_out.shape) == tuple(expected.shape) else None
    own = None if f is None else sqnr_db(float((f * f).sum()), float(((f - expected) ** 2).sum()))
    if own is not None and math.isinf(own):
        own = None  # float's output is all zero: no figure to be relative to
    needed = VERIFIED_DB if own is None else min(VERIFIED_DB, own + WITHIN_OWN_ERROR_DB)
    rows = math.prod(expected.shape[:-1]) if expected.dim() >= 2 else 0
    same = int((expected.argmax(-1) == got.argmax(-1)).sum()) if rows else 0
    own_same = rows if f is None or not rows else int((expected.argmax(-1) == f.argmax(-1)).sum())
    # With float known, the SQNR rule holds the file to half the model's own error: a top-1 that moves
    # within that is a near tie (an embedding's largest value; MiniLM's tuned file moved 1 of 8 rows at
    # 27.3 dB from its model), said, not judged. Without float, every row must agree.
    top1_ok = f is not None or same >= own_same
    verified = (sq is None or sq >= needed) and top1_ok  # sq None: identical outputs
    diff = float((expected - got).abs().max())
    if sq is None:
        said = "identical outputs to the in-memory model it was made from"
    elif own is None:
        said = (f"SQNR {sq:.1f} dB against the in-memory model it was made from (max abs diff {diff:.3g}); "
                f"verified at {VERIFIED_DB:.0f} dB or more")
    else:
        said = (f"SQNR {sq:.1f} dB against the in-memory model it was made from (max abs diff {diff:.3g}), whose own "
                f"error against float is {own:.1f} dB; verified at min({VERIFIED_DB:.0f}, {own:.1f} + "
                f"{WITHIN_OWN_ERROR_DB:.0f}) = {needed:.1f} dB or more")
    if rows and same < rows:
        said += f"; top-1 agrees with the in-memory model's on {same} of {rows} check rows"
        said += "" if f is None else f" (the in-memory model agrees with float's on {own_same})"
    return verified, said


def _compare(expected, got) -> float:
    return float((expected.float() - got.float()).abs().max())


def _export_pt(model, scripted, example, check, expected, path: Path) -> ExportResult:
    import torch

    write_bytes_atomic(path, script_bytes(scripted))
    with quiet_ao():
        loaded = torch.jit.load(str(path))
        with torch.no_grad():
            diff = _compare(expected, first_tensor(loaded(*check)))
    return ExportResult("pt", str(path), path.stat().st_size, diff == 0.0, diff,
                        [] if diff == 0.0 else ["reloaded TorchScript differs from the in-memory model"])


def _export_pt2(model, scripted, example, check, expected, path: Path) -> ExportResult:
    """torch.export of the in-memory model at `example`'s shapes (batch 1), loaded back with
    torch.export.load and run one check sample at a time, as the in-memory model is here: the same ops
    on the same weights, so the outputs must be identical."""
    import torch

    write_bytes_atomic(path, pt2_file(model, example))
    got = run_file("pt2", path, check)
    with torch.no_grad():
        own = torch.cat([first_tensor(model(*row)) for row in _rows(check)])
    diff = _compare(own, got)
    said = "identical to" if diff == 0.0 else f"differs by up to {diff:.3g} from"
    return ExportResult("pt2", str(path), path.stat().st_size, diff == 0.0, diff,
                        [f"torch.export.load(...).module(), run one sample at a time (shapes fixed at export, "
                         f"batch 1): {said} the in-memory model"])


def xnnpack_enabled() -> bool:
    import torch.backends.xnnpack

    return bool(torch.backends.xnnpack.enabled)


def ptl_bytes(scripted) -> bytes:
    """The lite-interpreter file of `scripted`, optimised for mobile where this torch has XNNPACK."""
    mobile = scripted
    if xnnpack_enabled():
        from torch.utils.mobile_optimizer import optimize_for_mobile

        with quiet_ao():
            mobile = optimize_for_mobile(scripted)
    with quiet_ao():
        return mobile._save_to_buffer_for_lite_interpreter()


def _export_ptl(model, scripted, example, check, expected, path: Path) -> ExportResult:
    import torch
    from torch.jit.mobile import _load_for_lite_interpreter

    notes = []
    mobile = scripted
    if xnnpack_enabled():
        from torch.utils.mobile_optimizer import optimize_for_mobile

        with quiet_ao():
            mobile = optimize_for_mobile(scripted)
        notes.append("optimize_for_mobile applied")
    else:
        notes.append("optimize_for_mobile skipped: this torch build has no XNNPACK (typical of Linux x86 "
                     "wheels); the .ptl is the unoptimised TorchScript, still loadable by the lite interpreter")
    with quiet_ao():
        write_bytes_atomic(path, mobile._save_to_buffer_for_lite_interpreter())
    with quiet_ao(), torch.no_grad():
        diff = _compare(expected, first_tensor(_load_for_lite_interpreter(str(path))(*check)))
    # optimize_for_mobile may reorder float arithmetic; an unoptimised .ptl must match exactly.
    verified = diff == 0.0 or (mobile is not scripted and diff < 1e-4 * max(1.0, float(expected.abs().max())))
    if not verified:
        notes.append(f"lite-interpreter output differs from the in-memory model by up to {diff:.3g}")
    return ExportResult("ptl", str(path), path.stat().st_size, verified, diff, notes)


def _onnx_reason(exc: BaseException) -> str:
    """The sentence of an exporter error that says what failed (its message may open with a graph dump)."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    said = next((line for line in lines if "not supported" in line or line.startswith("Exporting the operator")),
                lines[0] if lines else "(no message)")
    if len(said) > 500:
        said = said[:500].rsplit(" ", 1)[0] + " …"
    if "Encountering a dict at the output" in str(exc):
        said = ("the model returns a dict among its outputs, which torch.onnx's tracer cannot export: return a "
                "tuple (or a NamedTuple) of tensors instead, or export pt,ptl")
    if "INTERNAL ASSERT FAILED" in said or "UnknownQuantizer" in said:
        said = (f"torch.onnx's legacy exporter crashed on an int8 op of this model ({said[:160]}); "
                "--onnx-quantizer ort makes the int8 .onnx with ONNX Runtime's quantizer from the float model instead")
    if "quantized::" in said and "not supported" in said:
        said += " (torch.onnx has no ONNX form for this int8 op: keep the layer that uses it float, or export pt,ptl)"
    return said


def _export_onnx(model, scripted, example, check, expected, path: Path) -> ExportResult:
    import torch

    try:
        import onnx
        import onnxruntime as ort
    except ImportError:
        raise QtappError("ONNX export needs the onnx and onnxruntime packages: pip install 'qtapp[onnx]'") from None
    names = [f"input{i}" if len(example) > 1 else "input" for i in range(len(example))]
    source = scripted if isinstance(model, torch.jit.ScriptModule) else model

    import contextlib
    import io

    buf = io.BytesIO()
    try:  # the exporter prints its whole graph to stderr on some failures: kept out of the user's terminal
        with quiet_ao(), warnings.catch_warnings(), contextlib.redirect_stderr(io.StringIO()):
            warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
            warnings.filterwarnings("ignore", category=DeprecationWarning)
            torch.onnx.export(source, example, buf, dynamo=False, input_names=names, output_names=["output"],
                              dynamic_axes={n: {0: "batch"} for n in names} | {"output": {0: "batch"}})
        onnx.checker.check_model(onnx.load_from_string(buf.getvalue()))
    except Exception as exc:  # noqa: BLE001 - the exporter's many failure types all mean "no ONNX file"
        raise QtappError(f"ONNX export failed: {type(exc).__name__}: {_onnx_reason(exc)}") from None
    write_bytes_atomic(path, buf.getvalue())
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = torch.from_numpy(session.run(None, {n: t.numpy() for n, t in zip(names, check)})[0])
    notes = ["onnx.checker passed; ran in onnxruntime"]
    if got.shape != expected.shape:
        return ExportResult("onnx", str(path), path.stat().st_size, False, None,
                            notes + [f"onnxruntime output shape {tuple(got.shape)} != torch {tuple(expected.shape)}"])
    diff = _compare(expected, got)
    e, g = expected.float(), got.float()
    sq = sqnr_db(float((e * e).sum()), float(((e - g) ** 2).sum()))
    if diff > 0:
        notes.append(f"onnxruntime vs torch: SQNR {sq:.1f} dB, max abs diff {diff:.3g} (ORT's int8 kernels "
                     "round differently from fbgemm/qnnpack: no bit parity is expected)")
    argmax_ok = e.dim() < 2 or bool((e.argmax(-1) == g.argmax(-1)).all())
    if not argmax_ok:
        notes.append("onnxruntime's top-1 differs from torch's on the check input")
    return ExportResult("onnx", str(path), path.stat().st_size, argmax_ok, diff, notes)
