"""Load a pickled nn.Module without running code from the file.

`torch.load(weights_only=True)` refuses any class it does not know. We allow the classes of torch.nn
and torchvision's models (resolved by importing only torch/torchvision modules, never the file's
own), and refuse anything else by name unless the user explicitly trusts the file.
"""

from __future__ import annotations

import importlib
import inspect
from pathlib import Path

from ..base.errors import QtappError

# Torch's weights-only unpickler lets a pickle CALL any global it is allowed to name. So the allowlist
# names classes (constructing a module or a Parameter runs no code from the file) and a few pure tensor
# functions that modules keep as attributes (TransformerEncoderLayer's activation), never whole
# packages' functions: some torch.nn functions import any module by name (torch.nn.attention's
# _fa3_import_module), which would run code from the working directory.
MODULE_PREFIXES = ("torch.nn.", "torchvision.models.", "torchvision.ops.")
ALLOWED_CLASSES = frozenset({"builtins.set", "builtins.frozenset", "torch.Size", "functools.partial",
                             "torch.nn.parameter.Parameter", "torch.nn.parameter.Buffer"})
ALLOWED_FUNCTIONS = frozenset(f"torch.nn.functional.{name}" for name in (
    "relu", "relu6", "gelu", "silu", "mish", "hardswish", "hardsigmoid", "sigmoid", "tanh", "elu", "selu",
    "celu", "leaky_relu", "softplus", "softmax", "log_softmax", "glu", "hardtanh", "logsigmoid"))


def _import(qualname: str):
    module_name, _, attr = qualname.rpartition(".")
    try:
        return getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError, ValueError):
        return None


def _resolve_allowed(qualname: str):
    """The object named `qualname` if it is on the allowlist, else None."""
    if qualname in ALLOWED_CLASSES or qualname in ALLOWED_FUNCTIONS:
        return _import(qualname)
    if not qualname.startswith(MODULE_PREFIXES):
        return None
    obj = _import(qualname)
    import torch.nn as nn

    return obj if inspect.isclass(obj) and issubclass(obj, nn.Module) else None


def load_pickled_module(path: Path, trust: bool):
    import pickle

    import torch

    try:
        unsafe = torch.serialization.get_unsafe_globals_in_checkpoint(str(path))
    except Exception:  # noqa: BLE001 - not a torch zip checkpoint: told apart below (pickle or garbage)
        unsafe = None
    if unsafe is None:
        with open(path, "rb") as f:
            head = f.read(2)
        if not head.startswith(b"\x80"):  # not a pickle either: no amount of trust makes it a model
            raise QtappError(f"{path} is not a PyTorch model file (neither a torch checkpoint nor a pickle): "
                             "it may be truncated or of another format")
        if not trust:
            raise QtappError(f"{path} is a legacy pickle, which cannot be read without running code from it. "
                             "If you trust the file, pass --trust (this executes code from the file).")
        return _load_trusted(path)
    allowed, refused = [], []
    for name in unsafe:
        obj = _resolve_allowed(name)
        (allowed if obj is not None else refused).append(obj if obj is not None else name)
    if refused and not trust:
        raise PickleRefused(path, refused)
    if refused:
        return _load_trusted(path)
    try:
        with torch.serialization.safe_globals(allowed):
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise QtappError(f"cannot load {path} safely: {str(exc).splitlines()[0]}") from None


def _load_trusted(path: Path):
    import torch

    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except ModuleNotFoundError as exc:  # the pickle names its classes by module: that module must import
        raise QtappError(f"cannot load {path}: it was saved with classes from the Python module {exc.name!r}, which "
                         f"does not import here; run qtapp from the folder that holds {exc.name.split('.')[0]}.py, "
                         "or add that folder to PYTHONPATH (or save a state_dict and load it with its factory)") from None
    except Exception as exc:  # noqa: BLE001 - the user's file, any failure is reported as such
        raise QtappError(f"cannot load {path}: {type(exc).__name__}: {exc}") from None


class PickleRefused(QtappError):
    """A pickle needs classes outside the allowlist; the GUI asks for consent, the CLI needs --trust."""

    def __init__(self, path: Path, classes: list[str]) -> None:
        self.path, self.classes = path, classes
        super().__init__(
            f"{path} needs classes outside the safe allowlist (torch.nn and torchvision models): "
            f"{', '.join(sorted(classes))}. Loading it would execute code from the file. If you trust "
            "the file, pass --trust; otherwise save a state_dict and load it with its architecture.")
