"""A quantization session: one loaded model, its recipe and inventory, and the results so far.

The GUI holds one of these and calls its jobs from a worker thread; the CLI drives the same jobs
with a text progress bar. Calibrate once, then `quantize()` converts and evaluates; after a toggle,
`quantize()` again reconverts from the stored calibration without recalibrating.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

from . import demo
from .backends import Calibrated, backend_for
from .compare import LayerResult, OutputMetrics, compare_layers, compare_outputs
from .data import DataSource, open_source
from .errors import UsageError
from .export import ExportResult, export_model
from .inputs import InputSpec
from .inventory import LayerInventory
from .loading import LoadedModel, load_model
from .measure import Latency, measure_latency, to_torchscript, torchscript_bytes
from .probe import probe_model
from .progress import CancelToken, Job
from .recipe import QuantRecipe

# Settings whose change invalidates a calibration (the float set does not: it reconverts).
_CALIBRATION_KEYS = ("method", "static_mode", "engine", "per_channel", "observer", "calibration", "qat",
                     "model", "weights", "kwargs", "input_shape")


@dataclass
class QuantResult:
    float_layers: list[str]
    output: OutputMetrics
    layers: list[LayerResult]
    quantized_model: object = field(repr=False)
    latency: Latency | None = None
    size_float: int | None = None
    size_quantized: int | None = None
    scripted: object = field(default=None, repr=False)
    script_note: str = ""


class QuantSession:
    def __init__(self, loaded: LoadedModel, recipe: QuantRecipe) -> None:
        self.loaded = loaded
        self.recipe = recipe
        self.calibrated: Calibrated | None = None
        self.result: QuantResult | None = None
        self.calib_source: DataSource | None = None
        self.eval_source: DataSource | None = None
        self._float_side = None  # (evaluation key, float outputs per batch, fused float reference)
        self.notes: list[str] = list(loaded.notes)
        self.inventory = self._build_inventory()
        self.notes += self.inventory.set_float_layers(recipe.float_layers)
        self.inventory.subscribe(self._on_inventory_changed)

    @classmethod
    def open(cls, recipe: QuantRecipe, trust: bool = False) -> Job["QuantSession"]:
        input_spec = InputSpec.parse(recipe.input_shape, recipe.input_dtype) if recipe.input_shape else None
        loaded = yield from load_model(recipe.model, recipe.weights, recipe.kwargs, trust, input_spec)
        if loaded.input_spec is not None and loaded.input_spec.dtype != recipe.input_dtype:
            loaded.input_spec = InputSpec(loaded.input_spec.shapes, recipe.input_dtype)
        return cls(loaded, recipe)

    # -- settings ----------------------------------------------------------------------------------
    @property
    def input_spec(self) -> InputSpec | None:
        return self.loaded.input_spec

    @property
    def mode(self) -> str:
        """The graph mode the recipe resolves to for this model: fx, eager or dynamic."""
        r = self.recipe
        if r.method == "dynamic":
            return "dynamic"
        if r.method == "qat" or r.static_mode == "fx":
            return "fx"
        if r.static_mode == "eager" and not self.loaded.eager_quantizable:
            raise UsageError("eager mode needs one of torchvision's quantizable models (torchvision:quantized_NAME); "
                             "use static_mode fx for this model")
        return "eager" if self.loaded.eager_quantizable else "fx"

    def _build_inventory(self) -> LayerInventory:
        return LayerInventory.build(self.loaded, self.recipe.method, self.recipe.engine, self.mode)

    def update_recipe(self, **changes) -> None:
        """Change settings (not the model); rebuilds the inventory when the method or mode changes,
        keeping float layers that still exist, and drops a calibration the change invalidates."""
        new = replace(self.recipe, **changes, float_layers=self.inventory.float_layers)
        old_mode, old_method = self.mode, self.recipe.method
        self.recipe = new
        if self.rebuilds_inventory(old_mode, old_method):
            kept = self.inventory.float_layers
            self.inventory.unsubscribe(self._on_inventory_changed)
            self.inventory = self._build_inventory()  # whoever views the inventory must rebind
            self.inventory.set_float_layers([n for n in kept if n in self.inventory.heads])
            self.inventory.subscribe(self._on_inventory_changed)
            self.recipe.float_layers = self.inventory.float_layers
        if any(k in _CALIBRATION_KEYS for k in changes):
            self.calibrated = None

    def _note(self, text: str) -> None:
        if text not in self.notes:
            self.notes.append(text)

    def rebuilds_inventory(self, old_mode: str, old_method: str) -> bool:
        return (self.mode, self.recipe.method) != (old_mode, old_method)

    def _on_inventory_changed(self, _names) -> None:
        self.recipe.float_layers = self.inventory.float_layers

    # -- data ------------------------------------------------------------------------------------------
    def _source(self, spec, split: str, seed: int) -> DataSource:
        source = spec.source
        if source == "auto":
            source = "demo" if self.loaded.spec == "demo" else "random"
        return open_source(source, self.input_spec, spec.batch_size, spec.batches, spec.preprocess, split, seed)

    def open_calibration(self) -> DataSource:
        return self._source(self.recipe.calibration, "calib", seed=0)

    def open_evaluation(self) -> DataSource:
        ev = self.recipe.evaluation
        if ev.source == "auto" and self.loaded.spec == "demo":
            ev = replace(ev, batches=-(-len(demo.load_split("eval")[1]) // ev.batch_size))  # all of it
        elif ev.source == "auto":
            ev = replace(ev, source=self.recipe.calibration.source, preprocess=self.recipe.calibration.preprocess)
            if ev.source not in ("random", "auto"):
                self._note("evaluated on the calibration data (no separate evaluation source given): "
                           "not a held-out measurement; pass --eval with other samples")
        return self._source(ev, "eval", seed=1)

    # -- jobs --------------------------------------------------------------------------------------------
    def _check_quantizable(self) -> None:
        reason = self.loaded.why_not_quantizable()
        if reason:
            raise UsageError(reason)

    def calibrate(self, cancel: CancelToken | None = None) -> Job[Calibrated]:
        """Prepare and calibrate (QAT: fine-tune). On cancel the previous calibration stays."""
        self._check_quantizable()
        cancel = cancel or CancelToken()
        calib = self.open_calibration()
        if self.recipe.method != "dynamic":  # dynamic quantization never reads calibration data
            probe_model(self.loaded.module, calib, self.loaded.spec, self.recipe.method)
        backend = backend_for(self.recipe.method, self.mode)
        example = self.input_spec.example()
        calibrated = yield from backend.prepare_and_calibrate(self.loaded.module, self.recipe, self.inventory,
                                                              example, calib, cancel)
        self.calibrated, self.calib_source = calibrated, calib
        return calibrated

    def quantize(self, cancel: CancelToken | None = None, per_layer_batches: int = 2) -> Job[QuantResult]:
        """Convert with the current float layers (reusing the calibration) and compare with float."""
        cancel = cancel or CancelToken()
        if self.calibrated is None:
            yield from self.calibrate(cancel)
        float_layers = self.inventory.float_layers
        qmodel = self.calibrated.convert(float_layers)
        self.eval_source = evaluation = self.open_evaluation()
        # The float side of the comparison does not change between reconversions: cache it, keyed
        # by every setting that decides the evaluation inputs (evaluation "auto" follows calibration).
        key = repr((self.recipe.evaluation, self.recipe.calibration, self.input_spec, self.mode))
        if self._float_side is None or self._float_side[0] != key:
            probe_model(self.loaded.module, evaluation, self.loaded.spec)
            self._float_side = (key, [], self.calibrated.backend.reference(self.loaded.module))
        _, float_outputs, reference = self._float_side
        output = yield from compare_outputs(self.loaded.module, qmodel, evaluation, cancel, float_outputs)
        layers = yield from compare_layers(reference, qmodel, self.inventory.heads, evaluation,
                                           per_layer_batches, cancel)
        self.result = QuantResult(float_layers, output, layers, qmodel)
        return self.result

    def measure(self, cancel: CancelToken | None = None) -> Job[QuantResult]:
        """Size as TorchScript and batch-1 latency of the current result, float beside quantized."""
        result = self._need_result()
        example = self.input_spec.example(batch=1)
        float_ts, _ = to_torchscript(self.loaded.module, example)
        result.scripted, result.script_note = to_torchscript(result.quantized_model, example)
        result.size_float, result.size_quantized = torchscript_bytes(float_ts), torchscript_bytes(result.scripted)
        result.latency = yield from measure_latency(self.loaded.module, result.quantized_model, example, cancel=cancel)
        return result

    def check_export_formats(self, formats) -> None:
        """Refuse up front what cannot be exported, before any long work."""
        if "onnx" in formats and self.recipe.method == "dynamic":
            raise UsageError("ONNX export of dynamically quantized models is not supported by torch.onnx "
                             "(quantized::linear_dynamic has no ONNX form): export pt/ptl, or use the static method")

    def export(self, out_dir: Path, formats, cancel: CancelToken | None = None) -> Job[list[ExportResult]]:
        self.check_export_formats(formats)
        result = self._need_result()
        example = self.input_spec.example(batch=1)
        if result.scripted is None:
            result.scripted, result.script_note = to_torchscript(result.quantized_model, example)
        check = self._check_inputs()
        return (yield from export_model(result.quantized_model, result.scripted, example, formats, Path(out_dir),
                                        self.loaded.protected_paths, check, cancel=cancel))

    def _check_inputs(self) -> tuple:
        source = self.eval_source or self.open_evaluation()
        x, _ = next(iter(source))
        return (x[:8],)

    def _need_result(self) -> QuantResult:
        if self.result is None:
            raise UsageError("nothing quantized yet: run calibration / quantize first")
        return self.result
