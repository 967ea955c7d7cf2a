"""The files that ship beside TorchScript: ExecuTorch `.pte` and ONNX Runtime's own int8 `.onnx`.

Each writer returns the file's bytes and what it found out making them; `export.py` writes, reloads
and checks them like every other format. Who quantized a file is said on it: a `.pte` is always made by
the PT2E backend (when the run used torch.ao, by a PT2E calibration on the same data with the same
float layers), an ORT `.onnx` by onnxruntime's `quantize_static` (or `quantize_dynamic`) of the float
model's ONNX graph.
"""

from __future__ import annotations

import contextlib
import io
import warnings
from pathlib import Path

from ..base.errors import QtappError, first_line
from ..base.scratch import scratch_dir
from .made import Made


def _input_names(n: int) -> list[str]:
    return [f"input{i}" if n > 1 else "input" for i in range(n)]


def float_onnx(model, example: tuple) -> tuple[bytes, str]:
    """The float model as ONNX with a dynamic batch dimension: torch.export's exporter where it works,
    else the legacy TorchScript exporter. Returns (bytes, which exporter made it)."""
    import torch

    names = _input_names(len(example))
    first_error = None
    try:
        from torch.export import Dim

        batch = Dim("batch", min=1, max=4096)
        wide = tuple(t.expand(2, *t.shape[1:]).contiguous() if t.shape[0] == 1 else t for t in example)
        with _quiet_exporter():
            program = torch.onnx.export(model.eval(), wide, dynamo=True, input_names=names, output_names=["output"],
                                        dynamic_shapes=tuple({0: batch} for _ in example), verbose=False)
        buf = io.BytesIO()
        with scratch_dir("onnx") as tmp:
            program.save(str(Path(tmp) / "f.onnx"))
            buf.write((Path(tmp) / "f.onnx").read_bytes())
        return buf.getvalue(), "torch.export-based exporter (dynamo=True)"
    except Exception as exc:  # noqa: BLE001 - the legacy exporter is tried next; both failures are said
        first_error = f"{type(exc).__name__}: {first_line(exc)[:200]}"
    buf = io.BytesIO()
    try:
        with _quiet_exporter():
            torch.onnx.export(model.eval(), example, buf, dynamo=False, input_names=names, output_names=["output"],
                              dynamic_axes={n: {0: "batch"} for n in names} | {"output": {0: "batch"}})
    except Exception as exc:  # noqa: BLE001
        raise QtappError(f"ONNX export of the float model failed with both exporters (torch.export-based: "
                         f"{first_error}; legacy: {type(exc).__name__}: {first_line(exc)[:200]})") from None
    return buf.getvalue(), f"legacy TorchScript-based exporter (the torch.export-based one failed: {first_error})"


@contextlib.contextmanager
def _logged_to(sink: list[str]):
    """What onnxruntime's quantizer logs (to the root logger: "Axis 1 is out-of-range for weight ...")
    collected into `sink` instead of the user's terminal; the caller says it as notes."""
    import logging

    class Keep(logging.Handler):
        def emit(self, record):
            sink.append(record.getMessage())

    root = logging.getLogger()
    handler, handlers, level = Keep(logging.WARNING), root.handlers[:], root.level
    root.handlers, root.level = [handler], logging.WARNING
    try:
        yield
    finally:
        root.handlers, root.level = handlers, level


@contextlib.contextmanager
def _quiet_exporter():
    import torch

    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()), \
            contextlib.redirect_stderr(io.StringIO()):
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        warnings.filterwarnings("ignore", category=FutureWarning)
        warnings.filterwarnings("ignore", message=r".*(onnx|export|Dim|dynamic).*", category=UserWarning)
        yield


def onnx_node_modules(model_bytes: bytes) -> dict[str, str]:
    """{ONNX node name: the module path it came from} (from the exporters' scope metadata / node names)."""
    import ast

    import onnx

    out = {}
    for node in onnx.load_from_string(model_bytes).graph.node:
        props = {p.key: p.value for p in node.metadata_props}
        scopes = props.get("pkg.torch.onnx.name_scopes")
        if scopes:
            try:
                parts = ast.literal_eval(scopes)
            except (ValueError, SyntaxError):
                parts = []
            if len(parts) >= 2:
                out[node.name] = parts[-2]
        elif node.name.startswith("/") and node.name.count("/") >= 2:  # legacy: /layer1/layer1.0/conv1/Conv
            out[node.name] = node.name.split("/")[-2]
    return out


class _Reader:
    """onnxruntime's CalibrationDataReader over our calibration batches."""

    def __init__(self, calib, names):
        self._it = iter(calib)
        self.names = names

    def get_next(self):
        item = next(self._it, None)
        if item is None:
            return None
        inputs, _y = item
        return {n: t.numpy() for n, t in zip(self.names, inputs)}


def ort_quantized(model, example: tuple, calib, float_modules: set[str], per_channel: bool,
                  dynamic: bool) -> Made:
    """ONNX Runtime's int8 model of the float `model`: static QDQ (activations uint8, weights int8,
    MinMax ranges over `calib`) or, for `dynamic`, quantize_dynamic; nodes that came from `float_modules`
    stay float (nodes_to_exclude)."""
    try:
        from onnxruntime.quantization import (
            CalibrationMethod,
            QuantFormat,
            QuantType,
            quantize_dynamic,
            quantize_static,
        )
        from onnxruntime.quantization.shape_inference import quant_pre_process
    except ImportError:
        raise QtappError("--onnx-quantizer ort needs onnx and onnxruntime: pip install -e '.[onnx]'") from None
    data, exporter = float_onnx(model, example)
    owners = onnx_node_modules(data)
    exclude = sorted(n for n, m in owners.items() if m in float_modules)
    notes = [f"float ONNX by the {exporter}"]
    if float_modules and not exclude:
        notes.append(f"no ONNX node was traced to {', '.join(sorted(float_modules))}: nothing excluded")
    elif exclude:
        notes.append(f"{len(exclude)} ONNX node(s) of the float layers kept float (nodes_to_exclude)")
    with scratch_dir("ort") as tmp:
        src, pre, out = Path(tmp) / "float.onnx", Path(tmp) / "pre.onnx", Path(tmp) / "int8.onnx"
        src.write_bytes(data)
        try:
            with _quiet_exporter():
                quant_pre_process(str(src), str(pre), skip_symbolic_shape=False)
        except Exception as exc:  # noqa: BLE001 - pre-processing only helps; quantize the graph as exported
            notes.append(f"quant_pre_process skipped ({type(exc).__name__}: {first_line(exc)[:120]})")
            pre = src
        logged: list[str] = []
        try:
            with _quiet_exporter(), _logged_to(logged):
                if dynamic:
                    quantize_dynamic(str(pre), str(out), per_channel=per_channel, weight_type=QuantType.QInt8,
                                     nodes_to_exclude=exclude)
                    how = "onnxruntime quantize_dynamic (int8 weights, activations quantized per call)"
                else:
                    quantize_static(str(pre), str(out), _Reader(calib, _input_names(len(example))),
                                    quant_format=QuantFormat.QDQ, per_channel=per_channel,
                                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                                    calibrate_method=CalibrationMethod.MinMax, nodes_to_exclude=exclude)
                    how = (f"onnxruntime quantize_static (QDQ, uint8 activations with MinMax ranges over "
                           f"{calib.samples} samples, int8 weights {'per channel' if per_channel else 'per tensor'})")
        except Exception as exc:  # noqa: BLE001 - onnxruntime's failure types all mean "no int8 ONNX"
            raise QtappError(f"onnxruntime could not quantize this model's ONNX graph ({type(exc).__name__}: "
                             f"{first_line(exc)[:300]})") from None
        notes += [f"onnxruntime: {line}" for line in dict.fromkeys(logged)]
        return Made(out.read_bytes(), how, tuple(notes), float_data=data)


def run_onnx(data_or_path, inputs_list, threads: int | None = None) -> list:
    import onnxruntime as ort
    import torch

    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
    source = data_or_path if isinstance(data_or_path, bytes) else str(data_or_path)
    session = ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])
    names = [i.name for i in session.get_inputs()]
    return [torch.from_numpy(session.run(None, {n: t.numpy() for n, t in zip(names, inputs)})[0])
            for inputs in inputs_list]
