"""Turn a model spec string into a loaded model.

Specs (shared by the CLI, the GUI and recipes):
  demo                          the bundled digits CNN
  torchvision:NAME              any torchvision classification model (quantized_* = eager-quantizable)
  package.module:callable       a factory, called with kwargs; optional state_dict weights
  path/to/file.py:callable      the same, from a file
  path/to/model.pt|.pth|.ptl    TorchScript (inspection/export only) or a pickled nn.Module
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..base import demo
from ..base.errors import CodeConsentRequired, ProgramFileRefused, QtappError, UsageError, first_line
from ..base.inputs import InputSpec
from ..base.progress import Job, Stage
from ..base.resultset import disk_full_error, is_disk_full
from ..base.specs import looks_like_factory
from .rewrites import split_stacked_rnns
from .safe_pickle import load_pickled_module

IMAGENET_INPUT = InputSpec(((1, 3, 224, 224),))
# torchvision models whose reference input is not 224x224.
_TORCHVISION_SIZES = {"inception_v3": 299, "quantized_inception_v3": 299}


@dataclass
class LoadedModel:
    spec: str
    module: Any  # torch.nn.Module or torch.jit.ScriptModule
    kind: str  # "eager" (Python nn.Module) or "torchscript"
    input_spec: InputSpec | None
    source_path: Path | None = None  # files the model came from: exports must never overwrite them
    weights: str | None = None
    notes: list[str] = field(default_factory=list)
    declared_input: InputSpec | None = None  # the model's own input when an explicit input spec overrides it
    # torchvision weights' own image preprocessing, (name, weights.transforms()): image folders use it
    preprocess: Any = None
    own_dtype: str | None = None  # the input dtype the model itself declares (kept when data changes it)

    @property
    def is_torchscript(self) -> bool:
        return self.kind == "torchscript"

    @property
    def eager_quantizable(self) -> bool:
        """torchvision's quantizable variants: they carry QuantStubs and a fuse_model() method."""
        return self.kind == "eager" and callable(getattr(self.module, "fuse_model", None)) and hasattr(self.module, "quant")

    @property
    def protected_paths(self) -> list[Path]:
        paths = [self.source_path] if self.source_path else []
        if self.weights and self.weights.lower() not in ("none", "default"):
            paths.append(Path(self.weights))
        return [p.resolve() for p in paths]

    def why_not_quantizable(self) -> str | None:
        if self.is_torchscript:
            return (f"{self.spec} is TorchScript: it has no Python source, so it can be inspected and exported "
                    "but not quantized (FX needs to trace Python code, eager mode needs to swap modules). "
                    "Load the Python model instead: torchvision:NAME, package.module:callable or "
                    "file.py:callable, with --weights for its state_dict.")
        return None


def load_model(spec: str, weights: str | None = None, kwargs: dict | None = None, trust: bool = False,
               input_spec: InputSpec | None = None, named_by: Path | None = None) -> Job[LoadedModel]:
    """A job (generator) that loads `spec`; it yields progress only while downloading weights.

    `named_by` is the file (a recipe) the spec was read from, when the user did not type it: a factory
    named by a file is code the user has not agreed to run, and needs `trust`."""
    kwargs = dict(kwargs or {})
    spec = spec.strip()
    if not spec:
        raise UsageError("no model given: pass a spec such as demo, torchvision:resnet18 or model.pt")
    if spec == "demo":
        if weights not in (None, "none") or kwargs:
            raise UsageError("the demo model takes no --weights or --kwargs")
        loaded = LoadedModel("demo", demo.load_model(), "eager", InputSpec((demo.INPUT_SHAPE,)),
                             source_path=demo.resource_dir() / demo.WEIGHTS_FILE)
    elif spec.startswith("torchvision:"):
        loaded = yield from _load_torchvision(spec, spec.split(":", 1)[1], weights, kwargs)
    elif looks_like_factory(spec):
        if named_by is not None and not trust:  # checked before anything is imported
            raise CodeConsentRequired(spec, named_by)
        loaded = _load_factory(spec, weights, kwargs)
    else:
        path = Path(spec).expanduser()
        if not path.exists():
            raise QtappError(f"model file not found: {path} (a spec is demo, torchvision:NAME, "
                             "module:callable, file.py:callable, or a .pt/.pth file)")
        if kwargs or weights not in (None, "none"):
            raise UsageError(f"{path.name} is a model file: --weights and --kwargs apply to factories only")
        loaded = _load_file(spec, path, trust)
    if input_spec is not None:
        if loaded.input_spec is not None and loaded.input_spec != input_spec:
            loaded.declared_input = loaded.input_spec  # named when the override does not fit the model
        loaded.input_spec = input_spec
    return loaded


def _load_torchvision(spec: str, name: str, weights: str | None, kwargs: dict) -> Job[LoadedModel]:
    import torchvision.models as tvm
    import torchvision.models.quantization as tvq

    quantizable = name.startswith("quantized_")
    known = tvm.list_models(module=tvq) if quantizable else tvm.list_models(module=tvm)
    if name not in known:
        import difflib

        close = difflib.get_close_matches(name, known, n=3)
        hint = f" Did you mean {', '.join(close)}?" if close else f" Known: {', '.join(known[:12])}, ..."
        raise UsageError(f"torchvision has no classification model named {name!r}.{hint}")
    builder_kwargs = dict(kwargs)
    weights_arg = None
    state_path = None
    w = (weights or "none")
    if w.lower() == "default":
        float_name = name.removeprefix("quantized_")
        weights_arg = tvm.get_model_weights(float_name).DEFAULT
        yield from _download_weights(weights_arg.url)
        if quantizable:
            builder_kwargs["quantize"] = False
    elif w.lower() != "none":
        state_path = Path(w).expanduser()
    import torch

    try:
        # Random initialisation from a fixed seed: the same spec gives the same model in every run, so
        # a recipe re-run reproduces its figures (and the user's own RNG state is left alone).
        with torch.random.fork_rng():
            torch.manual_seed(0)
            module = tvm.get_model(name, weights=weights_arg, **builder_kwargs)
    except TypeError as exc:
        raise UsageError(f"torchvision:{name} rejected --kwargs {kwargs}: {exc}") from None
    if state_path is not None:
        _load_state_dict_into(module, state_path)
    size = _TORCHVISION_SIZES.get(name, 224)
    notes = [] if weights_arg or state_path else [
        "weights: none (random initialisation, seed 0); accuracy figures mean nothing, error figures still do"]
    preset = weights_arg if weights_arg is not None else _default_weights(name) if state_path else None
    if preset is not None and state_path is not None:
        notes.append(f"image folders are preprocessed with {preset}'s preset (a state_dict does not say how its "
                     "model was trained); give a calibration preprocess in a recipe if yours differs")
    return LoadedModel(spec, module.eval(), "eager", InputSpec(((1, 3, size, size),)), weights=w, notes=notes,
                       preprocess=(str(preset), preset.transforms()) if preset is not None else None)


def _default_weights(name: str):
    import torchvision.models as tvm

    try:
        return tvm.get_model_weights(name.removeprefix("quantized_")).DEFAULT
    except (ValueError, AttributeError, KeyError):
        return None


def _download_weights(url: str) -> Job[None]:
    """Fetch pretrained weights into torch's hub cache with progress (a later build finds them there)."""
    import os
    import tempfile
    import urllib.request

    import torch.hub

    target = Path(torch.hub.get_dir()) / "checkpoints" / Path(url).name
    if target.exists():
        return
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        with urllib.request.urlopen(url, timeout=30) as resp:
            total = int(resp.headers.get("Content-Length") or 0)
            stage = Stage("download weights", total)
            fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".partial-")
            done = 0
            try:
                with os.fdopen(fd, "wb") as out:
                    while chunk := resp.read(1 << 20):
                        out.write(chunk)
                        done += len(chunk)
                        yield stage.step(done, f"{done / 1e6:.1f} MB from {url}")
                os.replace(tmp, target)
            finally:
                if os.path.exists(tmp):
                    os.unlink(tmp)
    except OSError as exc:
        if is_disk_full(exc):
            raise disk_full_error(target, exc) from None
        raise QtappError(f"could not download pretrained weights from {url}: {exc}. Without a network, "
                         "pass --weights PATH with a local state_dict file, or --weights none.") from None


def _load_state_dict_into(module, path: Path) -> None:
    import torch

    if not path.exists():
        raise QtappError(f"weights file not found: {path} (--weights takes none, DEFAULT or a state_dict file)")
    _require_regular(path, "weights file")
    if path.stat().st_size == 0:
        raise QtappError(f"weights file {path} is empty")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unreadable file gets the same user-facing message
        raise QtappError(f"cannot read weights {path}: {exc}. --weights takes a state_dict saved with "
                         "torch.save(model.state_dict(), path).") from None
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise QtappError(f"{path} holds a {type(state).__name__}, not a state_dict")
    try:
        module.load_state_dict(state)
    except RuntimeError as exc:
        raise QtappError(f"weights {path} do not fit the architecture: {str(exc).splitlines()[0]} ...") from None


def import_callable(spec: str, what: str = "factory"):
    """(the object `spec` names, the file it came from or None): `package.module:name` or
    `path/file.py:name`. Importing runs the module's code: callers have the user's consent."""
    target, _, attr = spec.rpartition(":")
    source_path = None
    if target.endswith(".py"):
        path = Path(target).expanduser().resolve()
        if not path.exists():
            raise QtappError(f"{what} file not found: {path}")
        _require_regular(path, f"{what} file")
        source_path = path
        mod_name = f"qtapp_user_{abs(hash(str(path)))}"
        sys.path.insert(0, str(path.parent))  # so the file's sibling imports work
        try:
            mspec = importlib.util.spec_from_file_location(mod_name, path)
            module = importlib.util.module_from_spec(mspec)
            sys.modules[mod_name] = module
            mspec.loader.exec_module(module)
        except Exception as exc:  # noqa: BLE001 - the user's file: any failure while importing it is named
            raise QtappError(f"importing {path} failed: {type(exc).__name__}: {first_line(exc)}") from None
        finally:
            sys.path.remove(str(path.parent))
    else:
        try:
            module = importlib.import_module(target)
        except ImportError as exc:
            raise QtappError(f"cannot import {target!r} for {spec}: {exc}") from None
        except Exception as exc:  # noqa: BLE001 - the user's module raised while being imported
            raise QtappError(f"importing {target} failed: {type(exc).__name__}: {first_line(exc)}") from None
    found = getattr(module, attr, None)
    if not callable(found):
        raise QtappError(f"{target} has no callable named {attr!r}")
    return found, source_path


def _load_factory(spec: str, weights: str | None, kwargs: dict) -> LoadedModel:
    import torch.nn as nn

    factory, source_path = import_callable(spec)
    import inspect

    try:
        inspect.signature(factory).bind(**kwargs)
    except TypeError as exc:
        raise UsageError(f"{spec} rejected --kwargs {kwargs}: {exc}") from None
    except ValueError:
        pass  # no signature to check (a builtin): the call below says what is wrong
    try:
        model = factory(**kwargs)
    except Exception as exc:  # noqa: BLE001 - the user's factory: any failure while building is named
        given = f" with --kwargs {kwargs}" if kwargs else ""
        raise QtappError(f"{spec} raised {type(exc).__name__} while building the model{given}: "
                         f"{first_line(exc)}") from None
    if not isinstance(model, nn.Module):
        raise QtappError(f"{spec} returned a {type(model).__name__}, not a torch.nn.Module")
    w = weights or "none"
    if w.lower() not in ("none", "default"):
        _load_state_dict_into(model, Path(w).expanduser())
    elif w.lower() == "default":
        raise UsageError("--weights DEFAULT is for torchvision models; give a state_dict path")
    return LoadedModel(spec, model.eval(), "eager", _declared_input(model), source_path=source_path, weights=w,
                       notes=as_float32(model) + split_rnns(model))


def as_float32(model) -> list[str]:
    """Convert a float64 (or float16/bfloat16) model to float32 in place, which is what torch.ao's int8
    kernels quantize from; a note saying so, or none when it already was."""
    import torch

    dtypes = {t.dtype for t in [*model.parameters(), *model.buffers()] if t.is_floating_point()}
    other = sorted(str(d).removeprefix("torch.") for d in dtypes if d != torch.float32)
    if not other:
        return []
    model.float()
    return [f"the model's weights were {', '.join(other)}: converted to float32 (int8 quantization starts from "
            "float32; the float figures are the float32 model's, its inputs are fed as float32)"]


def split_rnns(model) -> list[str]:
    """Run each multi-layer LSTM/GRU of `model` as one module per layer (rewrites.StackedLSTM/StackedGRU:
    the same outputs and states), so each layer is a point that can be kept float on its own; a note per
    stack."""
    notes = []
    for name in split_stacked_rnns(model):
        layers = model.get_submodule(name).layers
        kind = type(layers[0]).__name__
        notes.append(f"{name} (a {len(layers)}-layer {kind}) runs as {len(layers)} one-layer {kind}s, "
                     f"{name}.layers.0 to .{len(layers) - 1}: the same computation, so each layer can be kept "
                     "float on its own")
    return notes


def _declared_input(model) -> InputSpec | None:
    """A factory's model may declare `example_input_shape = (1, 3, 32, 32)` (and `example_input_dtype =
    "int64"` for token ids); use them when present."""
    shape = getattr(model, "example_input_shape", None)
    if shape:
        return InputSpec((tuple(shape),), getattr(model, "example_input_dtype", "float32"))
    if type(model).__module__.startswith("torchvision.models"):
        return IMAGENET_INPUT
    return None


def _is_torchscript(path: Path) -> bool:
    try:
        with zipfile.ZipFile(path) as zf:
            names = zf.namelist()
    except (zipfile.BadZipFile, OSError):
        return False
    return any(n.endswith("constants.pkl") or "/code/" in n or n.endswith("bytecode.pkl") for n in names)


def _is_lite(path: Path) -> bool:
    try:
        with zipfile.ZipFile(path) as zf:
            return any(n.endswith("bytecode.pkl") for n in zf.namelist())
    except (zipfile.BadZipFile, OSError):
        return False


def refuse_torchscript_for_quantizing(spec: str) -> None:
    """Refuse a TorchScript model file before it is loaded (loading it runs its code), where the job
    would refuse it anyway: TorchScript cannot be quantized."""
    path = Path(spec).expanduser()
    if looks_like_factory(spec) or spec == "demo" or spec.startswith("torchvision:") or not path.is_file():
        return
    if _is_torchscript(path):
        probe = LoadedModel(spec, None, "torchscript", None)
        raise UsageError(probe.why_not_quantizable())


def _load_file(spec: str, path: Path, trust: bool) -> LoadedModel:
    import torch

    if path.is_dir():
        raise QtappError(f"{path} is a folder, not a model file: give a .pt/.pth file, or a spec such as "
                         "file.py:callable")
    _require_regular(path, "model file")
    if path.stat().st_size == 0:
        raise QtappError(f"model file {path} is empty")

    if _is_torchscript(path):
        if not trust:  # checked from the zip's listing alone: nothing in the file has run yet
            raise ProgramFileRefused(path, "lite-interpreter (.ptl)" if _is_lite(path) else "TorchScript")
        try:
            module = torch.jit.load(str(path), map_location="cpu")
        except RuntimeError as exc:
            if "bytecode.pkl" in str(exc) or path.suffix == ".ptl":
                raise QtappError(f"{path} is a lite-interpreter (.ptl) file: it can only be run, not "
                                 "inspected. Open the full TorchScript (.pt) instead.") from None
            raise QtappError(f"cannot load TorchScript {path}: {str(exc).splitlines()[0]}") from None
        loaded = LoadedModel(spec, module.eval(), "torchscript", None, source_path=path)
        loaded.notes.append(loaded.why_not_quantizable())
        return loaded
    obj = load_pickled_module(path, trust)
    if isinstance(obj, torch.nn.Module):
        return LoadedModel(spec, obj.eval(), "eager", _declared_input(obj), source_path=path,
                           notes=(["loaded with --trust: code from the file was executed"] if trust else [])
                           + as_float32(obj) + split_rnns(obj))
    if isinstance(obj, dict):
        raise QtappError(
            f"{path} holds a bare state_dict (weights without an architecture). Give the architecture and "
            f"pass the file as its weights, e.g. `torchvision:resnet18 --weights {path}` or "
            f"`my_package.models:build_model --weights {path}`.")
    raise QtappError(f"{path} holds a {type(obj).__name__}, not a model")


def _require_regular(path: Path, what: str) -> None:
    """Refuse FIFOs, devices and sockets before opening them (reading a FIFO blocks for ever)."""
    import stat

    if not stat.S_ISREG(path.stat().st_mode):
        raise QtappError(f"{what} {path} is not a regular file (a FIFO, socket or device)")
