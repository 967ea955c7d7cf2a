"""Configurations of one calibration, converted and scored: what sensitivity and the search try.

A `Config` is what a conversion chooses without recalibrating: the points kept float and the per-point
overrides (activation range, weight scales, dynamic dtype). A `Scorer` converts one (from the stored
calibration), runs the int8 model over the evaluation set (the float outputs computed once) and returns
the metric, with the estimated size and latency.
"""

from __future__ import annotations

import contextlib
import copy
import gc
from dataclasses import dataclass, field, replace

from ..analysis.compare import compare_outputs
from ..analysis.metrics import MetricValue, Target
from ..base.heap import release_free_heap
from ..base.progress import CancelToken, drive
from ..config.recipe import PointOverride

NOT_SMALLER = 0.95  # a file at 95% of float's size or more has not compressed the model


@contextlib.contextmanager
def steady_gc():
    """Many conversions in a row: the objects alive now (the model, its calibration) are left out of
    the garbage collector's full passes, which otherwise stall a conversion now and then (0.3 s of a
    0.5 s conversion on resnet18). Garbage made meanwhile is collected as usual."""
    gc.collect()
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


@dataclass(frozen=True)
class Config:
    float_points: frozenset = frozenset()
    overrides: tuple = ()  # ((point, PointOverride), ...), sorted by point
    equalize: bool = False  # cross-layer equalisation before calibrating (model-wide: another calibration)

    @classmethod
    def of(cls, recipe) -> "Config":
        return cls(frozenset(recipe.float_layers), tuple(sorted(recipe.overrides.items())), recipe.equalize)

    @property
    def override_map(self) -> dict:
        return dict(self.overrides)

    @property
    def eight_bit(self) -> frozenset:
        """The layers given 8-bit weights (torchao's step up from the recipe's 4)."""
        return frozenset(n for n, o in self.overrides if o.weight_bits == 8)

    @property
    def float16(self) -> frozenset:
        """The points one step up from the recipe's weights without going float: float16 weights (torch.ao
        dynamic), or 8-bit ones (torchao, where the recipe's are 4-bit)."""
        return frozenset(n for n, o in self.overrides if o.dtype == "float16") | self.eight_bit

    def with_float(self, names) -> "Config":
        return replace(self, float_points=self.float_points | frozenset(names))

    def without_float(self, names) -> "Config":
        return replace(self, float_points=self.float_points - frozenset(names))

    def without_overrides_of(self, names) -> "Config":
        return replace(self, overrides=tuple((n, o) for n, o in self.overrides if n not in set(names)))

    def with_override(self, name: str, **fields) -> "Config":
        overrides = self.override_map
        merged = {**(overrides[name].to_dict() if name in overrides else {}), **fields}
        overrides[name] = PointOverride(**merged)
        return replace(self, overrides=tuple(sorted(overrides.items())))

    def recipe(self, base):
        recipe = copy.deepcopy(base)
        recipe.float_layers = sorted(self.float_points)
        recipe.overrides = self.override_map
        recipe.equalize = self.equalize
        return recipe

    def to_json(self) -> dict:
        return {"float_layers": sorted(self.float_points),
                "overrides": {n: o.to_dict() for n, o in self.overrides}, "equalize": self.equalize}


@dataclass(frozen=True)
class Scored:
    config: Config
    metric: MetricValue
    score: float  # what the target compares (the metric, or the drop from float)
    sqnr_db: float | None
    size_bytes: int
    latency_ms: float | None
    refused: dict = field(default_factory=dict)  # points torch could not keep float in this config
    # size_bytes and latency_ms are those of this configuration's own file, built and timed (else: the
    # cost model's estimates, anchored on the files that were)
    measured: bool = False
    bits: float | None = None  # weight bits per value on average (CostModel.mean_bits)

    def to_json(self) -> dict:
        return {**self.config.to_json(), "metric": self.metric.to_json(), "score": self.score,
                "sqnr_db": self.sqnr_db, "size_bytes": self.size_bytes, "latency_ms": self.latency_ms,
                "measured": self.measured, "mean_weight_bits": None if self.bits is None else round(self.bits, 3),
                "float_points": len(self.config.float_points), "refused": self.refused}


def weight_layout(snap, costs, config: Config) -> tuple[set, set]:
    """(layers whose weights ship as dynamic float16 - or, torchao, 8-bit over the recipe's 4 -, layers with
    one weight scale per tensor) in `config`."""
    recipe, dynamic = snap.recipe, snap.mode == "dynamic"
    overrides = config.override_map
    float16, per_tensor = set(), set()
    if snap.mode == "torchao":  # the step up from 4-bit weights is 8-bit ones (CostModel.bits prices it)
        if recipe.weight_bits == 4:
            float16 = set(config.eight_bit & costs.weight_elems.keys())
        return float16, per_tensor
    for head in costs.weight_elems:
        o = overrides.get(head)
        dtype = o.dtype if o is not None and o.dtype else (recipe.dtype if dynamic else "qint8")
        if dynamic and dtype == "float16":
            float16.add(head)
        if not (o.per_channel if o is not None and o.per_channel is not None else recipe.per_channel):
            per_tensor.add(head)
    return float16, per_tensor


class Scorer:
    """Converts and scores configurations of one calibration (the owner's snapshot is read, never written)."""

    def __init__(self, snap, calibrated, evaluation, metric: tuple, target: Target | None, costs,
                 recalibrate=None) -> None:
        """`target` None: the score is the metric's int8 value (sensitivity). `recalibrate(recipe)`:
        a new Calibrated for a recipe whose calibration differs (a model-wide move such as equalize)."""
        self.snap, self.evaluation = snap, evaluation
        self._calibrations = {snap.recipe.calibration_key(): calibrated}
        self.recalibrate = recalibrate
        self.metric, self.target, self.costs = metric, target, costs
        self.float_outputs: list = []
        self.conversions = 0
        self.example = snap.loaded.input_spec.example()
        self._seen: dict[Config, Scored] = {}

    @property
    def float_bytes(self) -> int:
        """The float model's file (every weight kept float), as the cost model sizes it."""
        return self.costs.size_bytes(set(self.costs.weight_elems))

    def compresses(self, scored: Scored) -> bool:
        """Whether the configuration shrinks the weights (below 95% of their float bytes): keeping the layers
        that hold nearly every weight float, or dynamic float16 (stored as float32), is no compression.
        Weights, not the whole file: a toy model's file is mostly code, bigger in int8 than in float."""
        float16, per_tensor = weight_layout(self.snap, self.costs, scored.config)
        kept = scored.config.float_points - set(scored.refused)
        chosen = self.costs.weight_bytes(kept, float16, per_tensor)
        return chosen < NOT_SMALLER * self.costs.weight_bytes(set(self.costs.weight_elems))

    @property
    def calibrations(self) -> int:
        return len(self._calibrations)

    def calibration_for(self, recipe):
        key = recipe.calibration_key()
        if key not in self._calibrations:
            if self.recalibrate is None:
                raise ValueError("this configuration needs another calibration, and no way to make one was given")
            self._calibrations[key] = self.recalibrate(recipe)
        return self._calibrations[key]

    def convert(self, config: Config):
        self.conversions += 1
        release_free_heap()  # what the configurations scored before this one left in the C heap (heap.py)
        recipe = config.recipe(self.snap.recipe)
        return self.calibration_for(recipe).convert_checked(sorted(config.float_points), self.example, recipe)

    def score(self, config: Config, cancel: CancelToken | None = None, converted=None) -> Scored:
        """`converted`: the (model, refused) of `config` when already converted (score_all)."""
        if config in self._seen:
            return self._seen[config]
        qmodel, refused = converted if converted is not None else self.convert(config)
        output = drive(compare_outputs(self.snap.loaded.module, qmodel, self.evaluation, cancel, self.float_outputs,
                                       self.metric))
        kept = config.float_points - set(refused)
        score = self.target.score(output.metric) if self.target is not None else output.metric.quantized
        float16, per_tensor = weight_layout(self.snap, self.costs, config)
        scored = Scored(config, output.metric, score, output.sqnr_db,
                        self.costs.size_bytes(kept, float16, per_tensor), self.costs.latency_ms(kept, float16),
                        dict(refused), bits=self.costs.mean_bits(kept, float16))
        self._seen[config] = scored
        return scored

    def score_all(self, configs, cancel: CancelToken | None = None):
        """Score `configs` in order, converting the next one on a second thread while this one runs
        over the evaluation set (conversion is Python-bound, the int8 kernels release the GIL: about
        10% faster on resnet18 with 2 cores). Yields each Scored."""
        from concurrent.futures import ThreadPoolExecutor

        configs = list(configs)
        new = [c for c in dict.fromkeys(configs) if c not in self._seen]
        with ThreadPoolExecutor(1, thread_name_prefix="qtapp-convert") as pool:
            ahead = {c: None for c in new}
            if new:
                ahead[new[0]] = pool.submit(self.convert, new[0])
            for config in configs:
                if config in self._seen:
                    yield self._seen[config]
                    continue
                i = new.index(config)
                if i + 1 < len(new):
                    ahead[new[i + 1]] = pool.submit(self.convert, new[i + 1])
                yield self.score(config, cancel, ahead.pop(config).result())

    # What a free move must gain to be kept: less is noise, and each move is one more override in the recipe.
    MARGIN = {"sqnr": 0.2, "cosine": 1e-5}

    def better(self, a: Scored, b: Scored) -> bool:
        """Whether `a` scores better than `b` for this target, by more than noise."""
        kind, op = (self.target.kind, self.target.op) if self.target is not None else (self.metric[0], ">=")
        margin = self.MARGIN.get(kind, 1e-9)
        return a.score < b.score - margin if op == "<=" else a.score > b.score + margin
