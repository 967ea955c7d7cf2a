"""Measuring a run's shipped file: size and batch-1 latency of float and int8 TorchScript (torch.ao) or
.pte (PT2E) in a quiet worker process; the same for the configurations a tune shows."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from ..base.errors import QtappError
from ..base.progress import CancelToken, Job, Stage
from ..base.resultset import write_bytes_atomic
from ..base.scratch import scratch_dir
from ..deploy.executorch import pte_of
from ..deploy.export import script_bytes
from ..deploy.measure import measure_many, to_torchscript
from ..report.results import RunResult
from ..tune.search import Step


def time_bytes(float_bytes: bytes, int8_bytes: list, example, cancel: CancelToken, kind: str,
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


# Measured here (torchao 0.18, executorch 1.5.1): XNNPACK takes a weight-only Linear's int8 weight for its
# float weight, without an error.
WEIGHT_ONLY_NOT_SHIPPED = (
    "weight-only runs are not shipped as .pte: ExecuTorch's XNNPACK lowering computes torchao's weight-only "
    "Linear layers wrongly (cosine 0.58 against the eager model, no error) and keeps them float-sized; size and "
    "latency not measured (--method dynamic, int8 dynamic activations, ships and is timed)")


def _runs_on(result: RunResult) -> str:
    return "PT2E" if result.mode == "pt2e" else "torchao"


def quantizer_name(result: RunResult) -> str:
    """Who made the result's int8 model, in words (said on each file it writes)."""
    if result.mode == "pt2e":
        return "PT2E with the XNNPACK quantizer (torchao)"
    if result.mode == "torchao":
        return f"torchao quantize_ ({result.method}, {result.recipe.weight_bits}-bit weights by default)"
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
    example = loaded.input_spec.example(batch=1)
    if result.mode == "torchao" and result.method == "weight-only":
        return result.evolve(latency=None, model_notes=(*result.model_notes, WEIGHT_ONLY_NOT_SHIPPED))
    if result.mode in ("pt2e", "torchao"):
        if formats is not None and "pte" not in formats:
            return result.evolve(latency=None, model_notes=(*result.model_notes, (
                f"latency of the run not measured: a {_runs_on(result)} run is timed on its .pte, and no .pte was asked for "
                f"({', '.join(formats) or 'no format'}); each exported file is timed in its own runtime")))
        yield Stage("lower", 2, cancel).step(0, "lowering float and int8 to ExecuTorch for timing")
        try:
            float_bytes, quant_bytes = pte_of(loaded.module, example).data, pte_of(result.quantized_model, example).data
        except QtappError as exc:
            return result.evolve(latency=None, model_notes=(*result.model_notes, (
                f"latency of the run not measured: a {_runs_on(result)} run is timed on its .pte, which could not be "
                f"made ({exc})")))
        scripted, note, kind = None, "", "pte"
    else:
        float_ts, _ = to_torchscript(loaded.module, example)
        scripted, note = to_torchscript(result.quantized_model, example)
        float_bytes, quant_bytes, kind = script_bytes(float_ts), script_bytes(scripted), "pt"
    latency, = yield from time_bytes(float_bytes, [quant_bytes], example, cancel, kind)
    return result.evolve(scripted=scripted, script_note=note, size_float=len(float_bytes),
                         size_quantized=len(quant_bytes), latency=latency)


MEASURED_TUNE_STEPS = 6  # configurations timed beyond the start and the chosen one: the curve's and the front's


def measure_shown(tune_result, scorer, loaded, cancel: CancelToken) -> Job:
    """Build the files of the configurations the curve and the front show (at most MEASURED_TUNE_STEPS
    beyond the start and the chosen one, the curve's first), take their sizes (a measured size can change
    the front, so it is read again after each), then time them all against float in one worker process:
    their size and latency become their files'. The other steps keep the cost model's estimates, marked."""
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
        latencies = yield from time_bytes(float_bytes, [data for _config, data in built], example, cancel, "pt",
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


def with_measured(tune_result, config, measured):
    """The search's figures for `config` replaced by those measured on its file (the start and the
    chosen configuration are built and timed; the curve's and front's by measure_shown; the others are
    the cost model's)."""
    if measured.size_quantized is None:
        return tune_result
    lat = measured.latency.quantized_ms if measured.latency is not None else None
    return _with_figures(tune_result, config, measured.size_quantized, lat)


def _with_figures(tune_result, config, size: int, lat: float | None):
    def fix(scored):
        if scored.config != config:
            return scored
        if lat is None:
            return replace(scored, size_bytes=size)
        return replace(scored, size_bytes=size, latency_ms=lat, measured=True)

    steps = tuple(replace(s, scored=fix(s.scored)) if isinstance(s, Step) else s for s in tune_result.steps)
    return replace(tune_result, steps=steps, best=fix(tune_result.best), start=fix(tune_result.start))
