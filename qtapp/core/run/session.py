"""A quantization session: one loaded model, its recipe and inventory, and the results so far.

The session is the owner's state (the CLI's, or the window's on its GUI thread). The jobs (jobs.py,
exporting.py) run on what `snapshot()` / `export_request()` froze on the owner's thread: a job never
writes to the session; the owner calls `adopt()` with the outcome. Calibrate once, then after a toggle the
next quantize job reconverts from the stored calibration without recalibrating, as long as the recipe's
`calibration_key()` is unchanged. The session keeps its own copy of the recipe it was given.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, replace
from pathlib import Path

from ..analysis.metrics import load_metric
from ..base import demo
from ..base.errors import CodeConsentRequired, QtappError, UsageError
from ..base.heap import release_free_heap
from ..base.inputs import InputSpec
from ..base.progress import CancelToken, Job
from ..base.specs import looks_like_factory
from ..config.metric_names import check_metric_name, is_callable_spec
from ..config.recipe import PointOverride, QuantRecipe
from ..data.open import file_input_dtype, open_source
from ..data.source import DataSource
from ..deploy.export import FORMATS, ExportResult
from ..model.loading import LoadedModel, load_model
from ..quantize.base import Calibrated
from ..quantize.equalize import find_pairs
from ..quantize.inventory import LayerInventory
from ..quantize.pt2e import require
from ..quantize.registry import graph_mode
from ..report.results import RunResult
from .calibrating import calibrate
from .exporting import export
from .history import EditHistory, RunHistory
from .jobs import quantize
from .measuring import measure_result
from .snapshot import ExportRequest, InventoryView, QuantizeOutcome, RunSnapshot


@dataclass(frozen=True)
class RecipeChange:
    recipe: QuantRecipe
    inventory: LayerInventory | None  # a new inventory when the method or mode changed


class QuantSession:
    def __init__(self, loaded: LoadedModel, recipe: QuantRecipe) -> None:
        self.loaded = loaded
        self.recipe = copy.deepcopy(recipe)  # the session's own: the caller's recipe never changes
        self._calibrated: Calibrated | None = None
        self.result: RunResult | None = None
        self._float_side = None  # (evaluation key, float outputs per batch)
        self._point_side = None  # the float side of the per-point analysis of the stored calibration
        self.notes: list[str] = list(loaded.notes)
        self.metric_fn = None  # the recipe's metric when it is the user's function (loaded by open())
        self.ship_formats: tuple | None = None  # the formats a CLI run will export (None: the window's, any)
        self.inventory = self._build_inventory()
        applicable, _ = _split_choices(self.inventory, self.recipe.float_layers)
        self.notes += self.inventory.set_float_layers(applicable)
        self.inventory.subscribe(self._on_inventory_changed)
        self.runs = RunHistory()  # every run the owner adopted, as its report.json (the window's Runs)
        self.edits = EditHistory(self.recipe)  # the settings and float choices gone through (undo/redo)

    @classmethod
    def open(cls, recipe: QuantRecipe, trust: bool = False, named_by: Path | None = None,
             metric_named_by: Path | None = None) -> Job["QuantSession"]:
        """The job that loads the recipe's model into a new session. `named_by`: the recipe file, when the
        model spec came from it (not typed by the user): a Python factory it names then needs `trust` (see
        loading.load_model); the same for a metric function `metric_named_by` names."""
        _refuse_code_without_consent(recipe, trust, named_by, metric_named_by)  # before anything is imported
        declared = _declared_input(recipe)
        loaded = yield from load_model(recipe.model, recipe.weights, recipe.kwargs, trust, declared, named_by)
        _settle_input_dtype(loaded, recipe)
        session = cls(loaded, recipe)
        session.metric_fn = load_metric(recipe.metric) if _names_a_function(recipe.metric) else None
        return session

    # -- settings ----------------------------------------------------------------------------------
    @property
    def input_spec(self) -> InputSpec | None:
        return self.loaded.input_spec

    @property
    def mode(self) -> str:
        """The graph mode the recipe resolves to for this model (see graph_mode)."""
        return graph_mode(self.recipe, self.loaded)

    def _build_inventory(self) -> LayerInventory:
        return LayerInventory.build(self.loaded, self.recipe.method, self.recipe.engine, self.mode)

    def prepare_recipe_change(self, **changes) -> "RecipeChange":
        """The recipe after `changes`, and a new inventory when the method or graph mode changes
        (building one may trace the model: a job may run this off the owner's thread; it writes nothing)."""
        new = replace(self.recipe, **changes, float_layers=list(self.recipe.float_layers))
        new_mode = graph_mode(new, self.loaded)  # refuses an impossible mode before anything changes
        inventory = None
        if (new_mode, new.method) != (self.mode, self.recipe.method):
            # Every kept-float choice stays in the recipe; the new inventory applies those it can.
            inventory = LayerInventory.build(self.loaded, new.method, new.engine, new_mode)
            applicable, _ = _split_choices(inventory, new.float_layers)
            inventory.set_float_layers(applicable)
        return RecipeChange(new, inventory)

    def apply_recipe_change(self, change: "RecipeChange") -> bool:
        """Adopt a prepared change; True when the inventory was replaced (its views must rebind)."""
        self.recipe = change.recipe
        # follows the calibration data, else the model's own
        dtype = (change.recipe.input_dtype or _data_dtype(change.recipe, quiet=True, takes_ids=_takes_ids(self.loaded))
                 or _own_dtype(self.loaded))
        if self.input_spec is not None and self.input_spec.dtype != dtype:
            self.loaded.input_spec = InputSpec(self.input_spec.shapes, dtype)
        if change.inventory is None:
            return False
        self.inventory.unsubscribe(self._on_inventory_changed)
        self.inventory = change.inventory
        self.inventory.subscribe(self._on_inventory_changed)
        return True

    def update_recipe(self, **changes) -> None:
        """Change settings (not the model) in one step; see prepare_recipe_change."""
        self.apply_recipe_change(self.prepare_recipe_change(**changes))

    def _on_inventory_changed(self, _names) -> None:
        self.recipe.float_layers = sorted({*self.inventory.float_layers, *self.inapplicable_float_layers})

    @property
    def inapplicable_float_layers(self) -> list[str]:
        """Kept-float choices of the recipe that the current method cannot keep float (a conv under
        dynamic quantization): kept in the recipe for the methods that can."""
        return _split_choices(self.inventory, self.recipe.float_layers)[1]

    @property
    def calibrated(self) -> Calibrated | None:
        """The stored calibration, if it still fits the recipe (derived from the recipe's fields)."""
        c = self._calibrated
        return c if c is not None and c.key == self.recipe.calibration_key() else None

    # -- data ------------------------------------------------------------------------------------------
    def _source(self, spec, split: str, seed: int) -> DataSource:
        source = spec.source
        if source == "auto":
            source = "demo" if self.loaded.spec == "demo" else "random"
        return open_source(source, self.input_spec, spec.batch_size, spec.batches, spec.preprocess, split, seed,
                           preset=self.loaded.preprocess, id_range=self._id_range)

    @property
    def _id_range(self) -> int | None:
        """Random integer inputs are ids of the model's smallest embedding table."""
        import torch.nn as nn

        sizes = [m.num_embeddings for m in self.loaded.module.modules() if isinstance(m, (nn.Embedding, nn.EmbeddingBag))]
        return min(sizes) if sizes else None

    def open_calibration(self) -> DataSource:
        return self.calibration_source(self.recipe)

    def open_evaluation(self) -> DataSource:
        return self.evaluation_source(self.recipe)[0]

    def calibration_source(self, recipe) -> DataSource:
        return self._source(recipe.calibration, "calib", seed=0)

    def evaluation_source(self, recipe) -> tuple[DataSource, list[str]]:
        """The evaluation source `recipe` asks for, and notes about that choice (read-only on self)."""
        ev, notes = recipe.evaluation, []
        if ev.source == "auto" and self.loaded.spec == "demo":
            ev = replace(ev, batches=-(-len(demo.load_split("eval")[1]) // ev.batch_size))  # all of it
        elif ev.source == "auto":
            ev = replace(ev, source=recipe.calibration.source, preprocess=recipe.calibration.preprocess)
            if ev.source not in ("random", "auto"):
                notes.append("evaluated on the calibration data (no separate evaluation source given): "
                             "not a held-out measurement; pass --eval with other samples")
        return self._source(ev, "eval", seed=1), notes

    # -- what jobs read ------------------------------------------------------------------------------
    def snapshot(self) -> RunSnapshot:
        """What a job reads, frozen now (on the owner's thread)."""
        recipe = copy.deepcopy(self.recipe)
        recipe.float_layers = self.inventory.float_layers
        inv = InventoryView(tuple(self.inventory.heads), tuple(self.inventory.float_layers),
                            tuple(self.inventory.quantized_heads), tuple(self.inventory.points.values()))
        notes = [*self.notes, *self.inventory.notes]
        if self.inapplicable_float_layers:
            notes.append(f"kept-float choices {', '.join(self.inapplicable_float_layers)} do not apply to "
                         f"{self.recipe.method} quantization; they stay in the recipe for the methods that use them")
        bn_folded = tuple(h for h in self.inventory.heads
                          if any(self.inventory[m].type.startswith("BatchNorm") for m in self.inventory[h].group))
        return RunSnapshot(self.loaded, recipe, self.mode, inv, self._calibrated, self._float_side,
                           lambda: self.calibration_source(recipe),
                           lambda: self.evaluation_source(recipe),
                           tuple(dict.fromkeys(notes)), self._point_side, bn_folded, self.metric_fn,
                           self.equalizable_pairs(), self.ship_formats)

    def equalizable_pairs(self) -> tuple:
        """The layer pairs cross-layer equalisation may scale (static and QAT models)."""
        if self.mode == "dynamic" or self.loaded.kind != "eager":
            return ()

        return tuple(find_pairs(self.loaded.module, self.inventory))

    def adopt_calibration(self, calibrated: Calibrated) -> None:
        """Keep a calibration a cancelled run finished: the next run only converts."""
        if calibrated.key == self.recipe.calibration_key():
            self._calibrated, self._point_side = calibrated, None

    def result_is_current(self) -> bool:
        """Whether the shown result was made with the settings and float layers in force now."""
        if self.result is None:
            return False
        now = copy.deepcopy(self.recipe)
        now.float_layers = sorted({*self.inventory.float_layers, *self.inapplicable_float_layers})
        then = copy.deepcopy(self.result.recipe)
        then.float_layers = sorted({*then.float_layers, *self.inapplicable_float_layers})
        return now.to_dict() == then.to_dict()

    def adopt(self, outcome: QuantizeOutcome) -> RunResult:
        """Take a job's outcome. An unmeasured result (sensitivity, analyse) of the very configuration
        the current result measured keeps that measurement: it is the same file."""
        result, before = outcome.result, self.result
        if result.size_quantized is None and before is not None and before.size_quantized is not None \
                and _same_configuration(before, result):
            result = result.evolve(scripted=before.scripted, script_note=before.script_note,
                                   size_float=before.size_float, size_quantized=before.size_quantized,
                                   latency=before.latency)
        self._calibrated, self._float_side, self.result = outcome.calibrated, outcome.float_side, result
        self._point_side = outcome.point_side
        release_free_heap()  # what the job freed stays resident in the C heap until given back (heap.py)
        return self.result

    def export_request(self, out_dir: Path, formats, measure: bool = False) -> ExportRequest:
        """What exporting the current result's files needs, checked and frozen now (on the owner's
        thread), for the export job (exporting.export), whose new result lists the files: adopt it with
        adopt_result. With `measure`, each file is timed against its float counterpart in its own runtime."""
        self.check_export_formats(formats)
        result = self._need_result()
        modules = set()
        for head in result.float_layers:
            info = self.inventory.layers.get(head)
            modules |= {head, *(info.group if info is not None else ())}
        return ExportRequest(result, self.loaded, Path(out_dir), tuple(formats), self._check_inputs(),
                             tuple(self.loaded.protected_paths), self.snapshot(), frozenset(modules), measure)

    def adopt_result(self, result: RunResult) -> RunResult:
        self.result = result
        return result

    def set_metric(self, name: str | None) -> None:
        """What the report, sensitivity and tune score (None: sqnr). A function named here is imported
        now: naming it is the user's consent."""
        if name is not None:
            check_metric_name(name)
        fn = load_metric(name) if name is not None and is_callable_spec(name) else None
        self.recipe.metric, self.metric_fn = name, fn

    def adopt_tuned(self, outcome) -> RunResult:
        """Take the configuration a tune found: its float layers and overrides become the recipe's, and
        its result (made with them) the current one."""
        result = self.adopt(outcome.quantized)
        chosen = result.recipe
        self.apply_configuration(chosen.float_layers, chosen.overrides, chosen.equalize)
        return result

    def apply_configuration(self, float_layers, overrides, equalize: bool | None = None) -> bool:
        """Set the float points, the per-point overrides and (when given) cross-layer equalisation at once
        (a configuration a search tried); the inventory's listeners hear of a float-set change. Whether
        anything changed. A change of `equalize` needs a new calibration, which the next run makes."""
        overrides = {n: o if isinstance(o, PointOverride) else PointOverride(**o) for n, o in dict(overrides).items()}
        changed = overrides != self.recipe.overrides or (equalize is not None and equalize != self.recipe.equalize)
        self.recipe.overrides = overrides
        if equalize is not None:
            self.recipe.equalize = equalize
        applicable, _ = _split_choices(self.inventory, list(float_layers))
        before = set(self.inventory.float_layers)
        self.inventory.set_float_layers(applicable)
        return changed or set(self.inventory.float_layers) != before

    # -- the same, run and adopted in one go (for callers on a single thread) ------------------------------
    def calibrate(self, cancel: CancelToken | None = None) -> Job[Calibrated]:
        calibrated = yield from calibrate(self.snapshot(), cancel or CancelToken())
        self._calibrated = calibrated
        return calibrated

    def quantize(self, cancel: CancelToken | None = None) -> Job[RunResult]:
        outcome = yield from quantize(self.snapshot(), cancel, measure=False)
        return self.adopt(outcome)

    def measure(self, cancel: CancelToken | None = None) -> Job[RunResult]:
        result = yield from measure_result(self._need_result(), self.loaded, cancel)
        return self.adopt_result(result)

    def export(self, out_dir: Path, formats, cancel: CancelToken | None = None) -> Job[list[ExportResult]]:
        result = yield from export(self.export_request(out_dir, formats), cancel)
        return list(self.adopt_result(result).exports)

    def unavailable_formats(self) -> dict[str, str]:
        """{format: why it cannot be exported now} for every format this session cannot write."""
        out = {}
        for fmt in FORMATS:
            try:
                self.check_export_formats([fmt])
            except (UsageError, QtappError) as exc:
                out[fmt] = str(exc)
        return out

    def check_export_formats(self, formats) -> None:
        """Refuse up front what cannot be exported, before any long work."""
        ort = self.recipe.onnx_quantizer == "ort"
        if self.mode == "torchao":
            _check_torchao_formats(self.recipe, formats)
            return
        if "pt2" in formats:
            raise UsageError(_pt2_refusal(self.mode))
        if self.mode == "pt2e" and {"pt", "ptl"} & set(formats):
            raise UsageError("--backend pt2e makes a PT2E graph, whose TorchScript is a reference graph (float ops "
                             "between quantize/dequantize, no int8 kernels): export pte (and onnx), or use --backend "
                             "torch.ao for .pt/.ptl")
        if "pte" in formats:
            require(".pte export")
            if self.recipe.method == "dynamic":
                raise UsageError(".pte export quantizes with PT2E and the XNNPACK quantizer, statically: use "
                                 "--method static (or qat) for a .pte, or export pt,ptl,onnx")
        if ort or self.mode == "pt2e":
            return  # onnxruntime quantizes the float model's ONNX: the torch.onnx limits below do not apply
        if "onnx" in formats and self.recipe.method == "dynamic":
            raise UsageError("ONNX export of dynamically quantized models is not supported by torch.onnx "
                             "(quantized::linear_dynamic has no ONNX form): use --onnx-quantizer ort (onnxruntime's "
                             "quantize_dynamic), export pt/ptl, or use the static method")
        embeddings = [h for h in self.inventory.quantized_heads if self.inventory[h].type in ("Embedding", "EmbeddingBag")]
        if "onnx" in formats and embeddings:
            raise UsageError(f"ONNX export: torch.onnx cannot export int8 embeddings (quantized::embedding_byte), and "
                             f"{', '.join(embeddings)} would be int8; keep {'them' if len(embeddings) > 1 else 'it'} "
                             f"float (--float {' '.join(embeddings)}) for ONNX, or export pt,ptl")

    def _check_inputs(self) -> tuple:
        source = self.open_evaluation()
        inputs, _ = next(iter(source))
        return tuple(t[:8] for t in inputs)

    def _need_result(self) -> RunResult:
        if self.result is None:
            raise UsageError("nothing quantized yet: run calibration / quantize first")
        return self.result


def _pt2_refusal(mode: str) -> str:
    """Why a run of `mode` (not torchao's) writes no .pt2; both measured with torch 2.14 on the demo."""
    if mode == "pt2e":
        return ("--backend pt2e cannot write pt2: its torch.export program is the PT2E reference graph (float ops "
                "between quantize and dequantize, run in float; on the demo it was 1.90 MB against the float model's "
                "1.49 MB): export pte, which XNNPACK runs in int8, or use --backend torchao for a .pt2")
    return (f"a torch.ao run ({mode}) cannot write pt2: torch.export cannot capture torch.ao's packed int8 weights "
            "(its quantized ops' PackedParams objects cannot be flattened); export pt,ptl or onnx, or use "
            "--backend torchao for a .pt2")


def _check_torchao_formats(recipe: QuantRecipe, formats) -> None:
    """What torchao's low-bit weights ship in: a .pte (XNNPACK), with int8 dynamic activations, and a .pt2
    (torch.export's program, its weights as torchao tensors)."""
    script = sorted({"pt", "ptl"} & set(formats))
    if script:  # measured: tracing asserts inside torch; scripting writes zeroed weights, or crashes
        raise UsageError(f"--backend torchao cannot write {', '.join(script)}: TorchScript cannot hold torchao's low-bit "
                         "weights (torch.jit.trace fails inside torch, torch.jit.script saves them as zeros); export "
                         "pte or pt2")
    if "onnx" in formats:
        raise UsageError("--backend torchao cannot write onnx: torch.onnx has no form for torchao's low-bit weights; "
                         "export pte or pt2, or use --backend torch.ao for ONNX")
    if "pte" in formats:
        require(".pte export")
        if recipe.method == "weight-only":
            raise UsageError("a weight-only run cannot ship as .pte: ExecuTorch's XNNPACK lowering computes torchao's "
                             "weight-only Linear layers wrongly (cosine 0.58, no error); use --method dynamic (int8 "
                             "dynamic activations) for a .pte")


def _same_configuration(a: RunResult, b: RunResult) -> bool:
    """Whether two results are of the same int8 model: same settings, same float points, same mode."""
    if a.recipe is None or b.recipe is None:
        return False
    return (a.mode, tuple(a.float_layers)) == (b.mode, tuple(b.float_layers)) and \
        a.recipe.to_dict() == b.recipe.to_dict()


def _names_a_function(metric: str | None) -> bool:
    return metric is not None and is_callable_spec(metric)


def _refuse_code_without_consent(recipe: QuantRecipe, trust: bool, named_by: Path | None,
                                 metric_named_by: Path | None) -> None:
    """A metric function that a recipe file names (the user did not type it) runs only with `trust`;
    one consent covers a model factory named by the same file."""
    if trust or metric_named_by is None or not _names_a_function(recipe.metric):
        return
    if named_by is not None and recipe.model and looks_like_factory(recipe.model):
        raise CodeConsentRequired(f"{recipe.model} and {recipe.metric}", metric_named_by, "model and metric")
    raise CodeConsentRequired(recipe.metric, metric_named_by, "metric")


def _declared_input(recipe: QuantRecipe) -> InputSpec | None:
    """The input the recipe declares (None: the model's own). An unreadable calibration file is named
    here, before the model loads."""
    if recipe.input_dtype is None:
        _data_dtype(recipe)
    return InputSpec.parse(recipe.input_shape, recipe.input_dtype or "float32") if recipe.input_shape else None


def _settle_input_dtype(loaded: LoadedModel, recipe: QuantRecipe) -> None:
    """The dtype the model is fed: the recipe's, else that of integer calibration data (ids, only for a
    model that can take them: pixels saved as int64 are numbers), else the model's own. The model runs in
    float32 (loading converts it), so float64 and float16 inputs are fed as float32. Said in the notes."""
    loaded.own_dtype = _own_dtype(loaded)
    given = recipe.input_dtype or _data_dtype(recipe, takes_ids=_takes_ids(loaded))
    dtype = given or loaded.own_dtype
    if dtype in ("float64", "float16"):
        loaded.notes.append(f"input dtype {dtype}: fed as float32, the dtype the model runs and is quantized in")
        dtype = "float32"
    if loaded.input_spec is not None and loaded.input_spec.dtype != dtype:
        loaded.input_spec = InputSpec(loaded.input_spec.shapes, dtype)
    if recipe.input_dtype is None and given is not None and given != "float32":
        loaded.notes.append(f"input dtype {dtype}: taken from the calibration data {recipe.calibration.source} "
                            "(no --input-dtype given)")


def _data_dtype(recipe: QuantRecipe, quiet: bool = False, takes_ids: bool | None = None) -> str | None:
    """The input dtype an integer calibration file implies (token ids), or None.
    `quiet`: an unreadable file implies nothing here; opening it as data names the problem later."""
    try:
        return file_input_dtype(recipe.calibration.source, takes_ids)
    except QtappError:
        if quiet:
            return None
        raise


def _takes_ids(loaded: LoadedModel) -> bool:
    """Whether the model can take integer ids: it declares integer inputs, or it has an embedding
    (a TorchScript module keeps its class's name in `original_name`)."""
    import torch.nn as nn

    if loaded.own_dtype is not None and not loaded.own_dtype.startswith("float"):
        return True
    names = ("Embedding", "EmbeddingBag")
    return any(isinstance(m, (nn.Embedding, nn.EmbeddingBag)) or getattr(m, "original_name", None) in names
               for m in loaded.module.modules())


def _own_dtype(loaded: LoadedModel) -> str:
    """The input dtype the model declares (`example_input_dtype` on a factory's model), else float32."""
    if loaded.own_dtype is not None:
        return loaded.own_dtype
    own = loaded.declared_input or loaded.input_spec
    return own.dtype if own is not None else "float32"


def _split_choices(inventory: LayerInventory, names) -> tuple[list[str], list[str]]:
    """(choices the inventory can keep float, layers of the model it cannot toggle under its method).
    A name that is no layer of the model at all is refused by the inventory, with suggestions."""
    applicable, inapplicable = [], []
    for name in names:
        row = inventory.layers.get(name)
        if row is not None and row.kind != "module" and not inventory.resolve(name, strict=False):
            inventory.resolve(name)  # a point of this method that cannot be kept float: refused, with why
        if row is not None and not inventory.resolve(name, strict=False):
            inapplicable.append(name)
        elif row is None and ("/" in name or name.startswith("input:")) and inventory.method == "dynamic":
            inapplicable.append(name)  # an op point of static quantization: dynamic quantization has none
        else:
            applicable.append(name)
    return applicable, inapplicable
