#!/usr/bin/env python
"""The files the app ships against the same files written by hand, timed side by side in one run.

For one model (default torchvision resnet18, weights=None) and one set of calibration tensors (random
normal, 8 x 16, seed 0), the app writes .pt (torch.ao FX, x86), .onnx (--onnx-quantizer ort) and .pte;
this script then writes the same three by hand with the libraries' documented recipes:

  onnx  torch.onnx.export(dynamo=True) -> quant_pre_process -> quantize_static (QDQ, uint8 activations,
        int8 per-channel weights, MinMax), the same calibration tensors
  pte   torch.export -> prepare_pt2e(XNNPACKQuantizer per-channel) -> calibrate -> convert_pt2e ->
        to_edge_transform_and_lower(XnnpackPartitioner) -> to_executorch
  pt    prepare_fx/convert_fx with get_default_qconfig_mapping("x86") -> torch.jit.script

Each pair (app file, hand file) is timed interleaved in one separate process in its own runtime, batch
1, 2 threads (measure.measure_files): the ratio app/hand is the figure; 1.00 means as fast.
    python benchmarks/bench_formats.py [--model torchvision:resnet18] [--json benchmarks/results/formats.json]
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import tempfile
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from qtapp.core.base.progress import drive  # noqa: E402
from qtapp.core.config.recipe import DataSpec, QuantRecipe  # noqa: E402
from qtapp.core.deploy.measure import measure_files  # noqa: E402
from qtapp.core.run.command import Command, run_command  # noqa: E402

BATCHES, BATCH_SIZE = 8, 16


def calibration(shape):
    g = torch.Generator().manual_seed(0)
    return [torch.randn(BATCH_SIZE, *shape[1:], generator=g) for _ in range(BATCHES)]


def hand_onnx(model, example, calib, out: Path) -> None:
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    float_path, pre_path = out.with_suffix(".float.onnx"), out.with_suffix(".pre.onnx")
    batch = torch.export.Dim("batch", min=1, max=4096)
    program = torch.onnx.export(model, (example.expand(2, *example.shape[1:]).contiguous(),), dynamo=True,
                                input_names=["input"], output_names=["output"], dynamic_shapes=({0: batch},))
    program.save(str(float_path))
    quant_pre_process(str(float_path), str(pre_path))

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.it = iter(calib)

        def get_next(self):
            x = next(self.it, None)
            return None if x is None else {"input": x.numpy()}

    quantize_static(str(pre_path), str(out), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                    calibrate_method=CalibrationMethod.MinMax)


def hand_pte(model, example, calib, out: Path) -> None:
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import (
        XNNPACKQuantizer,
        get_symmetric_quantization_config,
    )
    from executorch.exir import to_edge_transform_and_lower
    from torch.export import Dim, export
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    batch = Dim("batch", min=1, max=4096)
    captured = export(model, (calib[0],), dynamic_shapes=({0: batch},)).module()
    prepared = prepare_pt2e(captured, XNNPACKQuantizer().set_global(get_symmetric_quantization_config(is_per_channel=True)))
    with torch.no_grad():
        for x in calib:
            prepared(x)
    converted = convert_pt2e(prepared)
    edge = to_edge_transform_and_lower(export(converted, (example,)), partitioner=[XnnpackPartitioner()])
    out.write_bytes(edge.to_executorch().buffer)


def hand_pt(model, example, calib, out: Path) -> None:
    from torch.ao.quantization import get_default_qconfig_mapping
    from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx

    torch.backends.quantized.engine = "x86"
    prepared = prepare_fx(copy.deepcopy(model), get_default_qconfig_mapping("x86"), (example,))
    with torch.no_grad():
        for x in calib:
            prepared(x)
    torch.jit.save(torch.jit.script(convert_fx(prepared)), str(out))


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="torchvision:resnet18")
    parser.add_argument("--shape", default="1,3,224,224")
    parser.add_argument("--json")
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    shape = tuple(int(v) for v in args.shape.split(","))
    calib = calibration(shape)
    example = torch.randn(*shape, generator=torch.Generator().manual_seed(1))
    rows = {}
    with tempfile.TemporaryDirectory(prefix="qtapp-bench-formats-") as tmp:
        tmp = Path(tmp)
        data = tmp / "calib.pt"
        torch.save(torch.cat(calib), data)
        recipe = QuantRecipe(model=args.model, input_shape=args.shape, engine="x86", onnx_quantizer="ort",
                             calibration=DataSpec(source=str(data), batches=BATCHES, batch_size=BATCH_SIZE),
                             evaluation=DataSpec(source=str(data), batches=1, batch_size=BATCH_SIZE))
        app = drive(run_command(Command(recipe, out=tmp / "app", formats=("pt", "onnx", "pte"), measure=False)))
        from qtapp.core.model.loading import load_model

        model = drive(load_model(args.model, input_spec=None)).module.eval()
        hand = {"onnx": tmp / "hand.onnx", "pte": tmp / "hand.pte", "pt": tmp / "hand.pt"}
        hand_onnx(model, example, calib, hand["onnx"])
        hand_pte(model, example, calib, hand["pte"])
        hand_pt(model, example, calib, hand["pt"])
        for e in app.exports:
            lat = drive(measure_files(hand[e.format], e.path, (example,), kind=e.format, max_runs=100, budget_s=10))
            rows[e.format] = {"app_ms": round(lat.quantized_ms, 3), "hand_ms": round(lat.float_ms, 3),
                              "app_over_hand": round(lat.quantized_ms / lat.float_ms, 3), "runs": lat.runs,
                              "threads": lat.threads, "other_load_cores": lat.other_load,
                              "app_bytes": e.bytes, "hand_bytes": hand[e.format].stat().st_size,
                              "app_quantizer": e.quantizer}
            print(f"{e.format:>5}: app {lat.quantized_ms:7.3f} ms, by hand {lat.float_ms:7.3f} ms, "
                  f"app/hand {lat.quantized_ms / lat.float_ms:.3f} ({lat.runs} interleaved runs)")
    report = {"model": args.model, "shape": args.shape, "calibration": f"{BATCHES} x {BATCH_SIZE} random normal",
              "torch": torch.__version__, "formats": rows}
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
