"""The model jobs, each a generator that yields progress and returns an immutable outcome: quantize
(calibrate when needed, convert, compare, analyse every point, measure), analyse (the same, unmeasured),
sensitivity, tune. The window and the CLI (command.py) both call these.

A job reads a snapshot the owner (CLI or window) took on its own thread, never the owner's live state,
and writes nothing to it: the owner adopts the outcome when the job returns. Cancelling a job therefore
leaves the owner exactly as it was. A quantize job whose snapshot holds a calibration that fits the
recipe reconverts from it: that is the reconversion after a toggle.
"""

from __future__ import annotations

from dataclasses import replace

from ..analysis.compare import compare_outputs
from ..analysis.diagnosis import diagnose, worst_points
from ..analysis.dynamic import analyse_dynamic
from ..analysis.metrics import check_labels_for
from ..analysis.point_result import with_diagnosis
from ..analysis.probe import probe_model
from ..analysis.pt2e import analyse_pt2e
from ..analysis.static import StaticAnalysis, analyse_static, range_choice_errors, static_ranges
from ..base.errors import Cancelled, UsageError
from ..base.progress import CancelToken, Job, Stage, drive
from ..quantize.base import Calibrated
from ..quantize.corrections import kernel_corrections
from ..quantize.torchao_lowbit import scheme_of
from ..report.results import DataFacts, RunResult
from ..tune.costs import CostModel
from ..tune.scoring import Config, Scorer, steady_gc, weight_layout
from ..tune.search import tune as search
from ..tune.sensitivity import sensitivity as point_sensitivity
from .calibrating import calibrate_equalized, equalize_snapshot
from .measuring import measure_result, measure_shown, with_measured
from .snapshot import InventoryView, QuantizeOutcome, RunSnapshot, TuneOutcome

RANGE_BATCHES = 2  # calibration batches the activation ranges are measured on


def analyse_points(snap: RunSnapshot, calibrated: Calibrated, qmodel, evaluation, cancel,
                   data_key: str = "") -> Job[tuple[list, tuple | None]]:
    """Every point's error and range, with a diagnosis for the bad ones: (results, the reusable float side)."""
    float_set = set(snap.inventory.float_layers)
    points = list(calibrated.points)
    if snap.mode == "pt2e":  # read off the PT2E graphs (no activation ranges or weight views yet)
        results = yield from analyse_pt2e(calibrated.prepared, qmodel, points, float_set, evaluation, cancel=cancel)
        return with_diagnosis(results, diagnose(results, snap.bn_folded, calibrated.point_map)), None
    if snap.mode in ("dynamic", "torchao"):  # each layer alone on the float model's input, and in the model
        dtype = snap.recipe.dtype if snap.mode == "dynamic" else "torchao"
        results = yield from analyse_dynamic(snap.loaded.module, qmodel, points, float_set, evaluation,
                                             snap.recipe.engine, cancel=cancel, dtype=dtype)
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
        raise UsageError(reason)
    calibrated = snap.calibrated
    fresh = calibrated is None or calibrated.key != recipe.calibration_key()
    if fresh and recipe.metric == "top1":  # asked for by name: labels that cannot score it, refused before work
        check_labels_for(None, "top1", snap.open_evaluation()[0])
    if fresh:
        snap, equalized = equalize_snapshot(snap)
        calibrated = yield from calibrate_equalized(snap, equalized, cancel)
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


def analyse(snap: RunSnapshot, cancel: CancelToken | None = None) -> Job[QuantizeOutcome]:
    """Quantize and analyse every point, without measuring size and latency (`qtapp-cli analyze`)."""
    return (yield from quantize(snap, cancel, measure=False))


def _convert_and_measure(snap: RunSnapshot, calibrated: Calibrated, cancel: CancelToken,
                         measure: bool) -> Job[QuantizeOutcome]:
    recipe, loaded = snap.recipe, snap.loaded
    floats = len(snap.inventory.float_layers)
    # Converting a large model takes seconds with nothing else to report: said, so no bar sits empty.
    yield Stage("convert", 0, cancel).step(0, "the calibrated model to int8" + (
        f", {floats} layer(s) float" if floats else ""))
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


def search_inputs(snap: RunSnapshot, outcome: QuantizeOutcome) -> dict:
    """What the search reads off a quantized result: its candidates, bad points, each point's
    consumers, the per-tensor layers, and (static) each point's error under every observed range."""
    result = outcome.result
    candidates = [h for h in snap.inventory.heads if h not in set(snap.inventory.float_layers)]
    consumers: dict[str, list[str]] = {}
    for p in outcome.calibrated.points:
        for source in p.inputs:
            consumers.setdefault(source, []).append(p.name)

    bad = tuple(p.name for p in worst_points(result.layers, len(result.layers)) if p.diagnosis)
    weighted = {p.name for p in outcome.calibrated.points if p.weighted}
    per_tensor = tuple(h for h in candidates if h in weighted and not snap.recipe.per_channel)
    return {"candidates": candidates, "bad_points": bad, "consumers": consumers, "per_tensor_heads": per_tensor}


def _half_step(snap: RunSnapshot) -> bool | dict:
    """The step between int8 and float a search may take: float16 weights (torch.ao dynamic), 8-bit weights
    (torchao, from 4), or none."""
    if snap.mode == "dynamic":
        return True
    if snap.mode == "torchao" and snap.recipe.weight_bits == 4:
        return {"weight_bits": 8}
    return False


def make_scorer(snap: RunSnapshot, start: QuantizeOutcome, target, metric_name: str, candidates) -> Scorer:
    """Converts and scores configurations of `start`'s calibration, with the costs of `candidates`."""
    evaluation, _ = snap.open_evaluation()
    metric = (metric_name, snap.metric_fn if metric_name == snap.recipe.metric else None)
    loaded = snap.loaded
    costs = CostModel.build(loaded.module, candidates, loaded.input_spec.example(batch=1))
    if snap.mode == "torchao":  # its .pte packs 4-bit weights: bytes by bits, not torch.ao's TorchScript
        costs = replace(costs, bits=(snap.recipe.weight_bits, snap.recipe.group_size))
    lat = start.result.latency
    if lat is not None:  # anchored at the start's measured int8 latency and the float model's
        kept = set(snap.inventory.float_layers)
        share = sum(m for h, m in costs.macs.items() if h in kept) / max(costs.total_macs, 1)
        int8 = (lat.quantized_ms - lat.float_ms * share) / max(1 - share, 1e-9)
        costs = costs.with_latency(lat.float_ms, max(int8, 0.0))
    if start.result.size_quantized and start.result.size_float:  # pinned to the files measured
        float16, per_tensor = weight_layout(snap, costs, Config.of(snap.recipe))
        costs = costs.anchored(start.result.size_quantized, start.result.size_float, set(snap.inventory.float_layers),
                               float16, per_tensor)

    def recalibrate(recipe):  # a model-wide move (equalize): one more calibration, on the same data
        eq_snap, equalized = equalize_snapshot(replace(snap, recipe=recipe, calibrated=None))
        return drive(calibrate_equalized(eq_snap, equalized, CancelToken()))

    return Scorer(snap, start.calibrated, evaluation, metric, target, costs, recalibrate)


def from_start(snap: RunSnapshot, start: QuantizeOutcome) -> RunSnapshot:
    return replace(snap, calibrated=start.calibrated, float_side=start.float_side, point_side=start.point_side)


def sensitivity(snap: RunSnapshot, cancel: CancelToken | None = None) -> Job[QuantizeOutcome]:
    """Quantize as the recipe says, then each toggleable point's sensitivity both ways from that one
    calibration (sensitivity.py), from every toggle in int8 (the recipe's per-point settings kept):
    the outcome's result carries it."""
    cancel = cancel or CancelToken()
    start = yield from quantize(snap, cancel, measure=False)
    snap = from_start(snap, start)
    candidates = list(snap.inventory.heads)  # every toggle, whatever the recipe keeps float now
    scorer = make_scorer(snap, start, None, snap.recipe.metric or "sqnr", candidates)
    all_int8 = Config(frozenset(), tuple(sorted(snap.recipe.overrides.items())))
    widths, quantized = None, "int8"
    if snap.mode == "torchao":  # each layer at both of torchao's widths: 4-bit groups and 8-bit channels
        recipe = snap.recipe

        def widths(name: str):  # 4-bit, then 8-bit; the layer's own is the only-int8 figure
            own = scheme_of(recipe, name)[0]
            return tuple((f"{b}-bit", None if b == own else {"weight_bits": b}) for b in (4, 8))
        quantized = f"{recipe.weight_bits}-bit" + (" (and the layers' own)" if recipe.overrides else "")
    with steady_gc():
        found = yield from point_sensitivity(scorer, candidates, cancel, start=all_int8, widths=widths,
                                             quantized=quantized)
    return replace(start, result=start.result.evolve(sensitivity=found))


def tune(snap: RunSnapshot, target, budget, cancel: CancelToken | None = None, measure: bool = True) -> Job[TuneOutcome]:
    """Quantize as the recipe says, then search moves from that calibration for the target (tune/search.py),
    then quantize, analyse and (with `measure`) measure the configuration found."""
    cancel = cancel or CancelToken()
    started = ()
    if snap.mode == "torchao" and budget.on_bytes and snap.recipe.weight_bits == 8:
        # The search moves layers up (4 -> 8 bits -> float): from 8 bits it could not go below them.
        snap = replace(snap, recipe=replace(snap.recipe, weight_bits=4), calibrated=None)
        started = (f"started from every layer at 4 bits (the recipe's are 8) so that the budget {budget} can "
                   "choose each layer's bits both ways",)
    start = yield from quantize(snap, cancel, measure=measure)
    snap = from_start(snap, start)
    evaluation, _ = snap.open_evaluation()
    check_labels_for(target, snap.recipe.metric, evaluation)
    inputs = search_inputs(snap, start)
    scorer = make_scorer(snap, start, target, target.metric_name(snap.recipe.metric), inputs["candidates"])
    range_errors = None
    if snap.mode != "dynamic" and snap.recipe.method == "static" and start.point_side is not None:
        range_errors = yield from range_choice_errors(start.point_side[2], scorer.evaluation, cancel=cancel)
    with steady_gc():
        result = yield from search(scorer, target, budget, inputs["candidates"], range_errors=range_errors,
                                   bad_points=inputs["bad_points"], consumers=inputs["consumers"],
                                   dynamic=_half_step(snap), per_tensor_heads=inputs["per_tensor_heads"],
                                   equalizable=len(snap.cle_pairs) if snap.recipe.method == "static" else 0,
                                   cancel=cancel)
    result = replace(result, notes=(*started, *result.notes))
    chosen = result.best.config.recipe(snap.recipe)
    inv = InventoryView(snap.inventory.heads, tuple(h for h in snap.inventory.heads if h in chosen.float_layers),
                        tuple(h for h in snap.inventory.heads if h not in chosen.float_layers), snap.inventory.points)
    final = yield from quantize(replace(snap, recipe=chosen, inventory=inv), cancel, measure=measure)
    result = with_measured(with_measured(result, result.start.config, start.result),
                            result.best.config, final.result)
    if measure and snap.mode not in ("pt2e", "torchao"):  # TorchScript files: torch.ao's only
        result = yield from measure_shown(result, scorer, snap.loaded, cancel)
    return TuneOutcome(result, replace(final, result=final.result.evolve(tune=result)))


