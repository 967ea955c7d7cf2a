"""The immutable result of one run: what was asked, with what data, and what was measured.

A `RunResult` is built once, at the end of a workflow, from the run's own objects; nothing changes it
afterwards (a later measurement or export makes a new one with `evolve`). Diagnostics, report.json, the
CLI summary, the window and the HTML report are all functions of it.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Any, Mapping


@dataclass(frozen=True)
class DataFacts:
    """What a report needs to know about a data source (not the data itself)."""

    description: str
    kind: str  # demo | random | folder | tensor
    samples: int
    batches: int
    representative: bool
    labels: bool
    preprocessing: str | None = None
    skipped: tuple[str, ...] = ()  # unreadable items left out (corrupt images ...)

    @classmethod
    def of(cls, source) -> "DataFacts | None":
        if source is None:
            return None
        return cls(source.description, source.kind, source.samples, source.n_batches, source.representative,
                   source.has_labels, getattr(source, "preprocessing", None),
                   tuple(getattr(source, "skipped", ()) or ()))

    def to_json(self) -> dict:
        out = {"source": self.description, "batches": self.batches, "samples": self.samples,
               "representative": self.representative, "labels": self.labels}
        if self.preprocessing is not None:
            out["preprocessing"] = self.preprocessing
        if self.skipped:
            out["skipped"] = list(self.skipped)
        return out


@dataclass(frozen=True)
class RunResult:
    recipe: Any  # a private copy of the QuantRecipe the run used
    model: str
    mode: str  # fx | eager | dynamic
    input: str  # the input spec, e.g. "1x3x224x224"
    calibration: DataFacts | None  # None for dynamic quantization (no calibration)
    evaluation: DataFacts | None
    calib_stats: Mapping = field(default_factory=dict)
    float_layers: tuple[str, ...] = ()
    expected_quantized: tuple[str, ...] = ()  # what the inventory said would be int8
    output: Any = None  # OutputMetrics
    layers: tuple = ()  # point_result.PointResult, in inventory order
    size_float: int | None = None
    size_quantized: int | None = None
    latency: Any = None  # Latency
    script_note: str = ""
    exports: tuple = ()  # ExportResult
    model_notes: tuple[str, ...] = ()  # from loading, the inventory and the session's data choices
    sensitivity: Any = None  # sensitivity.SensitivityResult, when asked for
    tune: Any = None  # tune.TuneResult: the search that chose this configuration
    corrections: tuple = ()  # ({"op", "what", "points"}): known int8 kernel defects corrected in this model
    graph: Any = None  # run.graphing.GraphFiles: graph.pt2 and its node data, when asked for (analyze --graph)
    quantized_model: Any = field(default=None, compare=False, repr=False)
    scripted: Any = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "calib_stats", MappingProxyType(dict(self.calib_stats)))
        for name in ("float_layers", "expected_quantized", "layers", "exports", "model_notes", "corrections"):
            object.__setattr__(self, name, tuple(getattr(self, name)))

    @property
    def method(self) -> str:
        return self.recipe.method

    @property
    def engine(self) -> str:
        """The int8 kernels the model was quantized for (a PT2E result: XNNPACK's, whatever the recipe's engine)."""
        return "xnnpack" if self.mode == "pt2e" else self.recipe.engine

    @property
    def dtype(self) -> str:
        return self.recipe.dtype if self.recipe.method == "dynamic" else "qint8"

    def evolve(self, **changes) -> "RunResult":
        """A new result with some fields replaced (a measurement or an export added)."""
        return replace(self, **changes)

    @classmethod
    def capture(cls, *, recipe, **fields) -> "RunResult":
        return cls(recipe=copy.deepcopy(recipe), **fields)
