"""What a result means and what to distrust: one list of notes, written once.

`notes(result)` is the only place that interprets a `RunResult`: report.json, the CLI summary, the
window's summary and the HTML report all show exactly these notes. Each note has a stable `code` (for
tests and tools) and a `level`: "warning" (a figure may mislead, or something did not happen as asked)
or "info" (what was done).
"""

from __future__ import annotations

from dataclasses import dataclass

from ..analysis.diagnosis import width
from ..quantize.torchao_lowbit import scheme_of
from .verdict import NOT_SMALLER

DEAD_OUTPUT_RMS = 1e-4
POOR_COSINE = 0.9
BUSY_CORES = 0.3


@dataclass(frozen=True)
class Note:
    code: str
    text: str
    level: str = "warning"

    def __str__(self) -> str:
        return self.text


def weight_dtypes(result) -> dict[str, str]:
    """{point: "int8" or "float16"}: the dtype of the weights the run really made, for each converted point
    with weights (the window's summary heads its column with these; a float16 note names them)."""
    return {p.name: "float16" if p.weight.qscheme == "float16" else "int8" for p in result.layers
            if p.quantized and not p.kept_float and p.weight is not None and p.weight.dequantized is not None}


def notes(result) -> list[Note]:
    out: list[Note] = [Note("model", text, "info") for text in result.model_notes]
    calib = result.calibration
    if calib is not None and not calib.representative:
        out.append(Note("random-calibration",
                        "calibration used random tensors, which are not representative of real inputs: activation "
                        "ranges (and so accuracy on real data) may be far off; calibrate on real samples"))
    for facts in (calib, result.evaluation):
        if facts is not None and facts.skipped:
            shown = ", ".join(facts.skipped[:3]) + (f" and {len(facts.skipped) - 3} more" if len(facts.skipped) > 3 else "")
            out.append(Note("skipped-items", f"{len(facts.skipped)} unreadable item(s) skipped in {facts.description}: {shown}"))
    # (a PT2E result lists no layers: the per-point views are torch.ao's)
    if result.mode != "pt2e" and not any(getattr(p, "quantized", False) for p in result.layers):
        out.append(Note("nothing-quantized", _nothing_quantized(result)))
    if result.engine == "qnnpack" and result.latency is not None:
        out.append(Note("qnnpack-on-x86", "qnnpack targets Arm CPUs; its latency measured on this x86 machine says "
                                          "nothing about a phone (on x86 it is typically slower than float)"))
    if result.calib_stats.get("equalized"):
        out.append(Note("equalized", result.calib_stats["equalized"], "info"))
    if result.calib_stats.get("depthwise_equalized"):
        out.append(Note("depthwise-equalized", result.calib_stats["depthwise_equalized"], "info"))
    if result.calib_stats.get("distilled"):
        out.append(Note("qat-distilled", "QAT data had no labels: fine-tuned by distillation from the float "
                                         "model's outputs", "info"))
    expected = set(result.expected_quantized)
    for layer in result.layers:
        if layer.name in expected and not layer.quantized:
            out.append(Note("not-quantized", f"{layer.name} was to be quantized, but the converted model runs it "
                                             f"in float ({layer.type}): the backend has no int8 pattern for it here"))
    if result.script_note and result.script_note != "scripted":
        out.append(Note("torchscript", f"TorchScript: {result.script_note}", "info"))
    o = result.output
    if o is not None and o.accuracy_withheld:
        out.append(Note("accuracy-withheld", o.accuracy_withheld, "info"))
    if o is not None and o.float_rms < DEAD_OUTPUT_RMS:
        out.append(Note("dead-output", f"the float model's outputs are almost zero (RMS {o.float_rms:.2g}): typical "
                                       "of randomly initialised weights, which collapse activations; error figures "
                                       "are meaningless here, load trained weights"))
    elif o is not None and o.cosine < POOR_COSINE:
        out.append(Note("poor-output", f"the quantized output barely follows the float one (cosine {o.cosine:.3f}): "
                                       + _advice(result)))
    fallback = _group_fallback(result)
    if fallback:
        out.append(Note("group-fallback", fallback))
    half = [name for name, dtype in weight_dtypes(result).items() if dtype == "float16"]
    if half and result.size_float and result.size_quantized and result.size_quantized >= NOT_SMALLER * result.size_float:
        shown = ", ".join(half[:4]) + (f" and {len(half) - 4} more" if len(half) > 4 else "")
        out.append(Note("float16-not-smaller", (
            f"why the file is no smaller: float16 applies only to the layers dynamic quantization converts "
            f"({shown}), and the TorchScript file stores even their weights as float32 (torch.ao packs them to "
            "float16 again when it loads the file); the other layers stay float32")))
    lat = result.latency
    fewer: dict[tuple, list[str]] = {}  # (threads, asked): what was timed so; one note for each pair
    for timed, what in ((lat, "the run's latency"), *((e.latency, f".{e.format}") for e in result.exports)):
        asked = getattr(timed, "threads_asked", None)
        if timed is not None and asked is not None and timed.threads < asked:
            fewer.setdefault((timed.threads, asked), []).append(what)
    for (threads, asked), whats in fewer.items():
        out.append(Note("fewer-threads", f"{', '.join(whats)} {'was' if len(whats) == 1 else 'were'} timed on "
                                         f"{threads} thread(s), not {asked}: other processes kept cores busy, and "
                                         "more threads than free cores wait on each other at every op (figures "
                                         "hundreds of times too slow); time again on a quiet machine"))
    if lat is not None and lat.other_load is not None and lat.other_load > BUSY_CORES:
        out.append(Note("busy-machine", f"other processes kept {lat.other_load:.1f} CPU cores busy while latency was "
                                        "measured: the latency figures are inflated; measure again on a quiet machine"))
    busy = [e for e in result.exports if e.latency is not None and e.latency.other_load is not None
            and e.latency.other_load > BUSY_CORES]
    if busy:
        worst = max(e.latency.other_load for e in busy)
        out.append(Note("busy-machine-files", f"other processes kept up to {worst:.1f} CPU cores busy while "
                                              f"{', '.join('.' + e.format for e in busy)} were timed: those figures are "
                                              "inflated; time the folder again on a quiet machine (qtapp-cli bench DIR)"))
    for e in result.exports:
        out += [Note(f"export-{e.format}", f"{e.format}: {n}", "info") for n in e.notes]
    return out


def _group_fallback(result) -> str | None:
    """torchao: the 4-bit layers asked for groups whose rows that group does not split, which then have one
    scale per output channel (coarser than groups): which, and a group size that would split every row."""
    if result.mode != "torchao":
        return None
    fell, row_widths = {}, set()
    for p in result.layers:
        if not p.quantized or p.kept_float or width(p) != "4-bit":
            continue
        row = p.weight.float_weight.shape[-1]
        row_widths.add(row)
        group = scheme_of(result.recipe, p.name)[1]
        if p.weight.qscheme == "int4 per channel" and group:
            fell[p.name] = (row, group)
    if not fell:
        return None
    shown = ", ".join(f"{n} ({w} wide)" for n, (w, _g) in list(fell.items())[:4]) + (
        f" and {len(fell) - 4} more" if len(fell) > 4 else "")
    groups = sorted({g for _w, g in fell.values()})
    fits = [g for g in (256, 128, 64, 32, 16) if all(w % g == 0 for w in row_widths)]
    return (f"groups of {', '.join(map(str, groups))} do not split the rows of {len(fell)} 4-bit layer(s), {shown}: "
            "each got one scale per output channel instead (coarser than groups; the Weights tab shows it)"
            + (f"; --group-size {fits[0]} splits every row" if fits else ""))


def _nothing_quantized(result) -> str:
    if result.method == "dynamic":
        return ("nothing was quantized: dynamic quantization covers Linear, LSTM, GRU, RNN-cell and Embedding layers, "
                "and this model has none that is not kept float; the files written are the float model")
    return ("nothing was quantized: no layer of this model has an int8 kernel in torch.ao for "
            f"{result.engine}, or every one is kept float; the files written are the float model")


def _advice(result) -> str:
    """What to try when int8 breaks the output; only what applies to the method used."""
    if result.method == "dynamic":
        return ("keep the worst layers float, or try float16 weights (--dtype float16); dynamic quantization "
                "reads no calibration data, so more data will not help")
    if result.method == "qat":
        return "keep the worst layers float, or fine-tune for more epochs on labelled data"
    return "keep the worst layers float, calibrate on more representative data, or try QAT"
