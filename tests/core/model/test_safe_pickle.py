"""The pickle allowlist admits classes and a few pure tensor functions, never a package's functions:
a pickle may CALL whatever it is allowed to name."""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import sys
import zipfile

import pytest
import torch
import torch.nn as nn

from qtapp.core.model import safe_pickle
from qtapp.core.model.safe_pickle import PickleRefused, load_pickled_module


def _crafted_checkpoint(path, module: str, func: str, arg: str) -> None:
    """A real torch checkpoint whose data.pkl calls module.func(arg) while loading."""
    torch.save({"w": torch.zeros(1)}, path)
    payload = (b"\x80\x02" + f"c{module}\n{func}\n".encode() + b"X" + len(arg).to_bytes(4, "little") + arg.encode()
               + b"\x85R.")  # PROTO 2, GLOBAL, BINUNICODE arg, TUPLE1, REDUCE, STOP
    with zipfile.ZipFile(path) as zf:
        entries = {name: zf.read(name) for name in zf.namelist()}
    data = next(n for n in entries if n.endswith("data.pkl"))
    entries[data] = payload
    with zipfile.ZipFile(path, "w") as zf:
        for name, content in entries.items():
            zf.writestr(name, content)


def test_a_pickle_calling_a_torch_nn_function_that_imports_by_name_runs_nothing(tmp_path, monkeypatch):
    """torch.nn.attention._fa3._fa3_import_module(name) imports any module: it must not be callable."""
    canary = tmp_path / "CANARY"
    (tmp_path / "evil_canary_mod.py").write_text(f"open({str(canary)!r}, 'w').write('ran')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "evil_canary_mod", raising=False)
    model = tmp_path / "model.pt"
    _crafted_checkpoint(model, "torch.nn.attention._fa3", "_fa3_import_module", "evil_canary_mod")
    with pytest.raises(PickleRefused) as exc:
        load_pickled_module(model, trust=False)
    assert "torch.nn.attention._fa3._fa3_import_module" in str(exc.value)
    assert not canary.exists()


def _walk(prefix_package):
    pkg = importlib.import_module(prefix_package)
    yield pkg.__name__, pkg
    for info in pkgutil.walk_packages(pkg.__path__, pkg.__name__ + "."):
        if any(part.startswith("_") and part not in ("__init__",) for part in info.name.split(".")[2:]) and \
                "_fa3" not in info.name and "_deprecation_utils" not in info.name:
            continue  # private modules: walked where a known import-by-name function lives
        try:
            yield info.name, importlib.import_module(info.name)
        except Exception:  # noqa: BLE001 - optional back ends that do not import here are not on any list
            continue


def test_the_allowlist_admits_only_module_classes_and_named_objects():
    admitted = []
    for package in ("torch.nn", "torchvision.models", "torchvision.ops"):
        for mod_name, mod in _walk(package):
            for attr, obj in list(vars(mod).items()):
                if not callable(obj):
                    continue
                qualname = f"{mod_name}.{attr}"
                if safe_pickle._resolve_allowed(qualname) is not None:
                    admitted.append((qualname, obj))
    assert len(admitted) > 100  # the module classes are there
    named = safe_pickle.ALLOWED_CLASSES | safe_pickle.ALLOWED_FUNCTIONS
    wrong = [q for q, obj in admitted
             if not (inspect.isclass(obj) and issubclass(obj, nn.Module)) and q not in named]
    assert wrong == []
    assert safe_pickle._resolve_allowed("torch.nn.attention._fa3._fa3_import_module") is None
    assert safe_pickle._resolve_allowed("torch.nn.utils._deprecation_utils.lazy_deprecated_import") is None
    assert safe_pickle._resolve_allowed("torchvision.models.get_weight") is None
    for name in safe_pickle.ALLOWED_FUNCTIONS:  # pure tensor math from torch.nn.functional only
        obj = safe_pickle._import(name)
        assert name.startswith("torch.nn.functional.") and (inspect.isfunction(obj) or inspect.isbuiltin(obj))


@pytest.mark.parametrize("build", [
    lambda: nn.TransformerEncoderLayer(8, 2, dim_feedforward=16, batch_first=True),  # keeps F.relu
    lambda: __import__("torchvision").models.mobilenet_v3_small(weights=None),  # keeps functools.partial
])
def test_real_models_still_load_without_trust(tmp_path, build):
    model = build().eval()
    path = tmp_path / "m.pt"
    torch.save(model, path)
    loaded = load_pickled_module(path, trust=False)
    assert type(loaded) is type(model)
