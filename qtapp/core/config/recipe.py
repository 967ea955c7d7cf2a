"""The recipe: one versioned JSON format that the GUI and the CLI both save and run.

A recipe says which model, how to quantize it, with what data, and which layers stay float.
Unknown keys, versions and values are refused with a message that names them; layer names are
checked against the model's layer inventory when the recipe is applied (see inventory.py).
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from ..base.errors import UsageError
from ..base.inputs import DTYPES as INPUT_DTYPES
from ..base.inputs import InputSpec
from ..base.resultset import write_bytes_atomic
from .metric_names import check_metric_name

# 2: per-point `overrides` (activation range, per-channel weights, dynamic dtype) and a `metric`;
# version 1 files are still read (they have neither).
# 3: the quantizing `backend` (torch.ao or pt2e) and the `onnx_quantizer` (torch or ort).
# 4: the torchao backend (`quantize_`: low-bit weights per layer), method `weight-only`, `weight_bits` and
# `group_size`, and the same two per point in `overrides`.
RECIPE_VERSION = 4
READABLE_VERSIONS = (1, 2, 3, 4)
BACKENDS = ("torch.ao", "pt2e", "torchao")
ONNX_QUANTIZERS = ("torch", "ort")
METHODS = ("static", "dynamic", "qat", "weight-only")
WEIGHT_BITS = (4, 8)
ENGINES = ("fbgemm", "x86", "qnnpack", "onednn")
DTYPES = ("qint8", "float16")
OBSERVERS = ("minmax", "moving-average", "histogram", "percentile-99.9", "percentile-99.99")
STATIC_MODES = ("auto", "fx", "eager")


def _check_bits(what: str, bits, group_size, optional: bool = False) -> None:
    if not (optional and bits is None) and (isinstance(bits, bool) or bits not in WEIGHT_BITS):
        raise UsageError(f"{what} must be 4 or 8, got {bits!r}")
    if group_size is not None and (isinstance(group_size, bool) or not isinstance(group_size, int)
                                   or group_size < 1 or group_size & (group_size - 1)):
        raise UsageError(f"group_size must be a power of two such as 32 or 128 (weights per scale), got {group_size!r}")


def _check_choice(what: str, value: Any, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise UsageError(f"unknown {what} {value!r}: choose one of {', '.join(choices)}")


def _check_positive(what: str, value: Any, kind=int) -> None:
    if isinstance(value, bool) or not isinstance(value, (kind, int)) or value <= 0:
        raise UsageError(f"{what} must be a positive {kind.__name__}, got {value!r}")


# batches x batch_size of one data source: calibration needs hundreds of samples, evaluation thousands;
# a typo (10^9 batches of random data) must not run for ever.
MAX_DATA_SAMPLES = 1_000_000


@dataclass
class DataSpec:
    """Where calibration (or evaluation) batches come from: demo, random, a folder or a tensor file."""

    source: str = "auto"  # auto = the model's own data (demo), else random
    batches: int = 8
    batch_size: int = 16
    # Image folders only: "auto" (ImageNet preset for 3-channel inputs) or {"size", "mean", "std"}.
    preprocess: Any = "auto"

    def __post_init__(self) -> None:
        if not isinstance(self.source, str) or not self.source:
            raise UsageError(f"data source must be a non-empty string, got {self.source!r}")
        _check_positive("batches", self.batches)
        _check_positive("batch_size", self.batch_size)
        if self.batches * self.batch_size > MAX_DATA_SAMPLES:
            raise UsageError(f"{self.batches:,} batches of {self.batch_size:,} samples is too much data: a data source "
                             f"reads at most {MAX_DATA_SAMPLES:,} samples (batches x batch_size); calibration needs "
                             "a few hundred representative samples")
        if isinstance(self.preprocess, dict):
            unknown = set(self.preprocess) - {"size", "mean", "std"}
            if unknown:
                raise UsageError(f"unknown preprocess keys {sorted(unknown)}: allowed are size, mean, std")
            _check_preprocess_values(self.preprocess)
        elif self.preprocess not in ("auto", "imagenet", "none"):
            raise UsageError(f"unknown preprocess {self.preprocess!r}: use auto, imagenet, none or "
                             '{"size": [H, W], "mean": [...], "std": [...]}')


def _check_preprocess_values(pre: dict) -> None:
    size = pre.get("size")
    if size is not None and (not isinstance(size, list) or len(size) != 2
                             or not all(isinstance(d, int) and not isinstance(d, bool) and d > 0 for d in size)):
        raise UsageError(f"preprocess size must be [H, W], two positive integers, got {size!r}")
    for key in ("mean", "std"):
        values = pre.get(key)
        if values is None:
            continue
        if not isinstance(values, list) or not values or not all(
                isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in values):
            raise UsageError(f"preprocess {key} must be a list of numbers, one per input channel, got {values!r}")
        if key == "std" and any(v == 0 for v in values):
            raise UsageError(f"preprocess std must not contain 0 (it divides), got {values!r}")


@dataclass
class QatSpec:
    epochs: int = 2
    lr: float = 1e-4

    def __post_init__(self) -> None:
        _check_positive("qat.epochs", self.epochs)
        if isinstance(self.lr, bool) or not isinstance(self.lr, (int, float)) or not 0 < self.lr < 10:
            raise UsageError(f"qat.lr must be a number in (0, 10), got {self.lr!r}")
        self.lr = float(self.lr)


@dataclass(frozen=True)
class PointOverride:
    """How one quantization point differs from the recipe's defaults (None: the default)."""

    observer: str | None = None  # its activation range (static methods)
    per_channel: bool | None = None  # its weights (layers with weights)
    dtype: str | None = None  # dynamic quantization: qint8 or float16 for this layer
    weight_bits: int | None = None  # torchao: 4 or 8 bits for this layer's weights
    group_size: int | None = None  # torchao: weights per scale (None: one scale per output channel)

    def __post_init__(self) -> None:
        if self.observer is not None:
            _check_choice("override observer", self.observer, OBSERVERS)
        if self.per_channel is not None and not isinstance(self.per_channel, bool):
            raise UsageError(f"override per_channel must be true or false, got {self.per_channel!r}")
        if self.dtype is not None:
            _check_choice("override dtype", self.dtype, DTYPES)
        _check_bits("override weight_bits", self.weight_bits, self.group_size, optional=True)
        if all(v is None for v in (self.observer, self.per_channel, self.dtype, self.weight_bits, self.group_size)):
            raise UsageError("an override needs at least one of observer, per_channel, dtype, weight_bits, group_size")

    def to_dict(self) -> dict:
        return {k: v for k, v in asdict(self).items() if v is not None}


@dataclass
class QuantRecipe:
    model: str
    weights: str | None = None
    kwargs: dict = field(default_factory=dict)
    input_shape: str | None = None  # "1,3,224,224" (";" between inputs); None = inferred from the model
    input_dtype: str | None = None  # None = the calibration file's integer dtype (token ids), else float32
    method: str = "static"
    static_mode: str = "auto"  # auto = eager for torchvision's quantizable models, else FX
    engine: str = "fbgemm"
    dtype: str = "qint8"  # dynamic quantization only
    per_channel: bool = True
    observer: str = "histogram"
    equalize: bool = False  # cross-layer equalisation of the float model before calibrating (static, QAT)
    # even out the input channels of depthwise convs on the calibration data (static, QAT; per-channel weights)
    equalize_depthwise: bool = True
    calibration: DataSpec = field(default_factory=DataSpec)
    evaluation: DataSpec = field(default_factory=lambda: DataSpec(batches=4))
    qat: QatSpec = field(default_factory=QatSpec)
    float_layers: list[str] = field(default_factory=list)
    overrides: dict = field(default_factory=dict)  # point name -> PointOverride
    metric: str | None = None  # sqnr | cosine | top1 | retrieval@1 | module:function | file.py:function
    # torch.ao (FX/eager/dynamic; .pt, .ptl, .onnx) or pt2e (torchao's PT2E with the XNNPACK quantizer; .pte)
    backend: str = "torch.ao"
    # who makes the int8 .onnx: torch (the torch.ao model exported) or ort (ONNX Runtime's quantize_static
    # of the float model's ONNX, on the same calibration data and with the same float layers)
    onnx_quantizer: str = "torch"
    # torchao: the weights' bits (4 or 8) and how many weights share a scale (None: 32 for 4 bits, one
    # scale per output channel for 8)
    weight_bits: int = 8
    group_size: int | None = None
    version: int = RECIPE_VERSION

    def __post_init__(self) -> None:
        if self.version not in READABLE_VERSIONS:
            raise UsageError(f"recipe version {self.version!r} is not supported (this qtapp reads versions "
                             f"{', '.join(map(str, READABLE_VERSIONS))} and writes {RECIPE_VERSION})")
        self.version = RECIPE_VERSION  # read as 1, written as 2: a version 1 recipe means the same in 2
        if not isinstance(self.model, str) or not self.model.strip():
            raise UsageError("recipe has no model spec")
        if not isinstance(self.kwargs, dict):
            raise UsageError(f"kwargs must be a JSON object, got {self.kwargs!r}")
        _check_choice("method", self.method, METHODS)
        _check_choice("engine", self.engine, ENGINES)
        _check_choice("dtype", self.dtype, DTYPES)
        _check_choice("observer", self.observer, OBSERVERS)
        _check_choice("static_mode", self.static_mode, STATIC_MODES)
        _check_choice("backend", self.backend, BACKENDS)
        _check_choice("onnx_quantizer", self.onnx_quantizer, ONNX_QUANTIZERS)
        _check_bits("weight_bits", self.weight_bits, self.group_size)
        if not isinstance(self.per_channel, bool):
            raise UsageError(f"per_channel must be true or false, got {self.per_channel!r}")
        if not isinstance(self.equalize, bool):
            raise UsageError(f"equalize must be true or false, got {self.equalize!r}")
        if not isinstance(self.equalize_depthwise, bool):
            raise UsageError(f"equalize_depthwise must be true or false, got {self.equalize_depthwise!r}")

        if self.input_dtype is not None:
            _check_choice("input_dtype", self.input_dtype, INPUT_DTYPES)
        if self.input_shape is not None:
            InputSpec.parse(self.input_shape)
        if not isinstance(self.float_layers, list) or not all(isinstance(n, str) for n in self.float_layers):
            raise UsageError("float_layers must be a list of layer names")
        self.float_layers = sorted(set(self.float_layers))
        if not isinstance(self.overrides, dict) or not all(isinstance(k, str) for k in self.overrides):
            raise UsageError("overrides must be a JSON object of point name -> {observer, per_channel, dtype}")
        for name, value in list(self.overrides.items()):
            if isinstance(value, dict):
                _refuse_unknown(f"override {name!r}", value, PointOverride)
                value = PointOverride(**value)
            elif not isinstance(value, PointOverride):
                raise UsageError(f"override {name!r} must be an object such as {{\"observer\": \"minmax\"}}")
            self.overrides[name] = value
        if self.metric is not None:
            if not isinstance(self.metric, str):
                raise UsageError(f"metric must be a name such as sqnr or top1, got {self.metric!r}")

            check_metric_name(self.metric)

    # -- serialisation ---------------------------------------------------------------------------
    def to_dict(self) -> dict:
        d = asdict(self)
        d["overrides"] = {name: o.to_dict() for name, o in sorted(self.overrides.items())}
        return {"version": d.pop("version"), **d}

    @classmethod
    def from_dict(cls, data: dict, base_dir: Path | None = None) -> "QuantRecipe":
        if not isinstance(data, dict):
            raise UsageError("a recipe must be a JSON object")
        data = dict(data)
        _refuse_unknown("recipe", data, cls)
        subs = {"calibration": DataSpec, "evaluation": DataSpec, "qat": QatSpec}
        for key, sub in subs.items():
            if key in data:
                if not isinstance(data[key], dict):
                    raise UsageError(f"recipe {key} must be a JSON object")
                _refuse_unknown(f"recipe {key}", data[key], sub)
                data[key] = sub(**data[key])
        if "model" not in data:
            raise UsageError("recipe has no 'model' key")
        if "version" not in data:
            raise UsageError(f"recipe has no 'version' key: this qtapp writes version {RECIPE_VERSION} "
                             f'(add "version": {RECIPE_VERSION} to a hand-written recipe)')
        recipe = cls(**data)
        if base_dir is not None:
            recipe.resolve_paths(base_dir)
        return recipe

    def resolve_paths(self, base: Path) -> None:
        """Make relative file paths absolute against `base`: a recipe file's own folder when reading
        it, the working directory before saving one (so a saved recipe runs from anywhere)."""

        def fix(value: str | None) -> str | None:
            if not value or value in ("demo", "random", "auto", "none", "DEFAULT") or value.startswith("torchvision:"):
                return value
            head, sep, tail = value.rpartition(":")
            if sep and head.endswith(".py") and not Path(head).is_absolute():
                return f"{(base / head).resolve()}:{tail}"
            if sep and not head.endswith(".py"):
                return value  # package.module:callable
            p = Path(value)
            return value if p.is_absolute() or not (base / p).exists() else str((base / p).resolve())

        self.model = fix(self.model)
        self.weights = fix(self.weights)
        self.calibration.source = fix(self.calibration.source)
        self.evaluation.source = fix(self.evaluation.source)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2) + "\n"

    def save(self, path: str | Path) -> None:
        atomic_write_text(Path(path), self.to_json())

    def calibration_key(self) -> str:
        """Identifies what a calibration depends on: every field of the recipe except those that only
        decide the conversion or the evaluation. A field added later invalidates calibrations by default."""
        d = self.to_dict()
        for key in ("evaluation", "overrides", "metric", "observer", "onnx_quantizer"):  # every range is observed at once
            d.pop(key)
        if self.method != "qat":  # QAT trains with its float layers; the other methods reconvert
            d.pop("float_layers")
        if self.method in ("dynamic", "weight-only"):  # their "calibration" reads nothing: only the conversion differs
            d.pop("calibration")
            for key in ("weight_bits", "group_size"):  # torchao: a conversion setting
                d.pop(key)
        return json.dumps(d, sort_keys=True)

    def check_applicable(self) -> None:
        """Refuse settings that the chosen method would ignore (a recipe run must do what it says).
        Not checked on every change: the window keeps a dynamic dtype while static is chosen."""
        if self.method != "dynamic" and self.dtype != "qint8":
            raise UsageError(f"dtype {self.dtype} applies to dynamic quantization only: {self.method} quantization "
                             "makes int8 weights and activations. Use --method dynamic, or drop --dtype")
        if self.equalize and self.method in ("dynamic", "weight-only"):
            raise UsageError("cross-layer equalisation (equalize) prepares static and QAT quantization; dynamic "
                             "quantization has no calibration to prepare. Drop --equalize, or use --method static")
        if self.backend == "pt2e":
            if self.method == "dynamic":
                raise UsageError("--backend pt2e quantizes statically (static or qat); dynamic quantization is "
                                 "torch.ao's: use --backend torch.ao with --method dynamic")
            if self.static_mode == "eager":
                raise UsageError("--backend pt2e captures the model with torch.export, not eager mode: drop "
                                 "--static-mode eager, or use --backend torch.ao")
            if self.observer != "histogram":
                raise UsageError(f"--backend pt2e takes its activation ranges from the XNNPACK quantizer (a histogram "
                                 f"observer); --observer {self.observer} applies to --backend torch.ao")
            if self.overrides:
                raise UsageError(f"--backend pt2e has no per-point range or weight overrides (overrides for "
                                 f"{', '.join(sorted(self.overrides))}); use --backend torch.ao for them")
        torchao = self.backend == "torchao"
        if self.method == "weight-only" and not torchao:
            raise UsageError("--method weight-only is torchao's (int8 or int4 weights, float activations): add "
                             "--backend torchao")
        if torchao:
            if self.method not in ("dynamic", "weight-only"):
                raise UsageError(f"--backend torchao quantizes weights to 4 or 8 bits with int8 dynamic activations "
                                 f"(--method dynamic) or float ones (--method weight-only), not {self.method}: use "
                                 "--backend torch.ao or pt2e for static and QAT")
            if self.dtype != "qint8":
                raise UsageError(f"--dtype {self.dtype} is torch.ao's dynamic quantization; with --backend torchao "
                                 "choose --weight-bits 4 or 8")
        elif self.weight_bits != 8 or self.group_size is not None:
            raise UsageError("--weight-bits and --group-size choose torchao's low-bit weights: add --backend torchao "
                             "(torch.ao and pt2e make 8-bit weights with one scale per channel or per tensor)")
        for name, o in self.overrides.items():
            if (o.weight_bits is not None or o.group_size is not None) and not torchao:
                raise UsageError(f"override {name!r}: weight_bits and group_size apply to --backend torchao only")
            if o.dtype is not None and self.method != "dynamic":
                raise UsageError(f"override {name!r}: dtype applies to dynamic quantization only")
            if o.observer is not None and self.method != "static":
                raise UsageError(f"override {name!r}: an activation range (observer) applies to static quantization "
                                 f"only ({self.method} {'computes ranges per call' if self.method == 'dynamic' else 'trains its ranges'})")

    @classmethod
    def load(cls, path: str | Path) -> "QuantRecipe":
        path = Path(path)
        try:
            data = json.loads(_read_recipe_text(path))
        except json.JSONDecodeError as exc:
            raise UsageError(f"recipe {path} is not valid JSON: {exc}") from None
        except RecursionError:
            raise UsageError(f"recipe {path} is nested too deeply to be a recipe") from None
        try:
            return cls.from_dict(data, base_dir=path.resolve().parent)
        except UsageError as exc:
            raise UsageError(f"recipe {path}: {exc}") from None


MAX_RECIPE_BYTES = 1 << 20


def _read_recipe_text(path: Path) -> str:
    import stat

    try:
        st = path.stat()
    except FileNotFoundError:
        raise UsageError(f"recipe file not found: {path}") from None
    except OSError as exc:
        raise UsageError(f"cannot read recipe {path}: {exc.strerror}") from None
    if not stat.S_ISREG(st.st_mode):
        raise UsageError(f"recipe {path} is not a regular file (a folder, FIFO or device): give a .json file")
    if st.st_size > MAX_RECIPE_BYTES:
        raise UsageError(f"recipe {path} is {st.st_size / 1e6:.1f} MB: a recipe is a small JSON file "
                         f"(at most {MAX_RECIPE_BYTES >> 20} MB)")
    raw = path.read_bytes()
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise UsageError(f"recipe {path} is not UTF-8 text (byte {exc.start}): is it a binary file? "
                         "A recipe is the JSON file qtapp writes as recipe.json") from None


def _refuse_unknown(where: str, data: dict, cls) -> None:
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise UsageError(f"unknown {where} keys: {', '.join(unknown)} (known: {', '.join(sorted(known))})")


def atomic_write_text(path: Path, text: str) -> None:
    write_bytes_atomic(Path(path), text.encode("utf-8"))
