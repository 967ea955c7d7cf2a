"""What a job reads and returns: frozen on the owner's thread before it starts (`RunSnapshot`,
`ExportRequest`), immutable when it ends (`QuantizeOutcome`, `TuneOutcome`)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from ..data.source import DataSource
from ..quantize.base import Calibrated
from ..report.results import RunResult


@dataclass(frozen=True)
class InventoryView:
    """What a backend needs of the layer inventory, frozen at the moment the job was started."""

    heads: tuple[str, ...]
    float_layers: tuple[str, ...]
    quantized_heads: tuple[str, ...]
    points: tuple = ()  # QuantPoint, as the inventory classified them


@dataclass(frozen=True)
class RunSnapshot:
    """Everything a quantize job reads, captured by the owner before the job starts."""

    loaded: Any  # LoadedModel: its module is read, never modified
    recipe: Any  # a private copy of the QuantRecipe
    mode: str
    inventory: InventoryView
    calibrated: Calibrated | None  # reused when its key matches the recipe's
    float_side: tuple | None  # (key, float outputs per batch, fused float reference), reused when the key matches
    open_calibration: Callable[[], DataSource]
    open_evaluation: Callable[[], tuple[DataSource, list[str]]]  # the source and notes about the choice
    notes: tuple[str, ...] = ()
    point_side: tuple | None = None  # (Calibrated, range choices, StaticAnalysis, activation ranges), reused for them
    bn_folded: tuple[str, ...] = ()  # heads whose fusion group folds a BatchNorm (for the diagnosis)
    metric_fn: Callable | None = None  # the recipe's metric when it is the user's function
    cle_pairs: tuple = ()  # equalize.Pair: the layer pairs cross-layer equalisation may scale
    ship_formats: tuple | None = None  # the formats the run will export, when known (None: any)


@dataclass(frozen=True)
class QuantizeOutcome:
    calibrated: Calibrated
    float_side: tuple
    result: RunResult
    point_side: tuple | None = None


@dataclass(frozen=True)
class TuneOutcome:
    tune: Any  # tune.TuneResult
    quantized: QuantizeOutcome  # the chosen configuration, quantized, analysed and measured


@dataclass(frozen=True)
class ExportRequest:
    """What the export job reads (QuantSession.export_request): the result and its model, where and what
    to write, the inputs each file is checked on, and what another quantizer calibrates on (a .pte made by
    PT2E for a torch.ao run, an onnxruntime .onnx)."""

    result: RunResult
    loaded: Any  # LoadedModel
    out_dir: Path
    formats: tuple[str, ...]
    check: tuple  # the check inputs every file is compared on
    protected: tuple[Path, ...] = ()  # files the run reads: never written over
    snapshot: RunSnapshot | None = None
    float_modules: frozenset = frozenset()  # every module of the float layers' fusion groups
    measure: bool = False  # time each file against its float counterpart

