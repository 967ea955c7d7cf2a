"""Every loader path of qtapp.core.loading, and the safe pickle loader behind model files."""

from __future__ import annotations

import importlib
import pickle
import sys
import textwrap
from pathlib import Path

import pytest
import torch
import torch.nn as nn

from qtapp.core.base.errors import ProgramFileRefused, QtappError, UsageError
from qtapp.core.base.inputs import InputSpec
from qtapp.core.base.progress import drive
from qtapp.core.config.recipe import DataSpec, QuantRecipe
from qtapp.core.model.loading import load_model
from qtapp.core.model.safe_pickle import PickleRefused
from qtapp.core.run.session import QuantSession

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures"

pytestmark = pytest.mark.filterwarnings(r"ignore:.*torch\.jit\..*deprecated:FutureWarning")


def load(spec, **kw):
    return drive(load_model(spec, **kw))


# -- demo and torchvision ------------------------------------------------------------------------------
def test_demo_loads_with_its_input_and_source_file(demo_loaded):
    assert demo_loaded.kind == "eager"
    assert demo_loaded.input_spec == InputSpec(((1, 1, 8, 8),))
    assert demo_loaded.source_path.name == "digits_cnn.pt" and demo_loaded.source_path.exists()
    assert demo_loaded.protected_paths == [demo_loaded.source_path.resolve()]
    assert not demo_loaded.eager_quantizable
    out = demo_loaded.module(torch.zeros(2, 1, 8, 8))
    assert out.shape == (2, 10)


def test_demo_refuses_weights_and_kwargs():
    with pytest.raises(UsageError, match="no --weights or --kwargs"):
        load("demo", kwargs={"x": 1})


def test_torchvision_resnet18_without_weights():
    loaded = load("torchvision:resnet18", weights="none")
    assert type(loaded.module).__name__ == "ResNet"
    assert loaded.kind == "eager" and not loaded.module.training
    assert loaded.input_spec.shapes == ((1, 3, 224, 224),)
    assert not loaded.eager_quantizable
    assert any("random initialisation" in n for n in loaded.notes)


def test_torchvision_quantizable_model_is_eager_quantizable():
    loaded = load("torchvision:quantized_mobilenet_v2")
    assert loaded.eager_quantizable
    assert hasattr(loaded.module, "quant") and callable(loaded.module.fuse_model)


def test_torchvision_misspelt_name_suggests_the_right_one():
    with pytest.raises(UsageError) as exc:
        load("torchvision:resnet81")
    assert "'resnet81'" in str(exc.value)
    assert "Did you mean" in str(exc.value) and "resnet18" in str(exc.value)


def test_torchvision_bad_kwargs_are_a_usage_error():
    with pytest.raises(UsageError, match="rejected --kwargs"):
        load("torchvision:resnet18", kwargs={"no_such_option": 1})


# -- factories ----------------------------------------------------------------------------------------
def test_package_module_callable_with_kwargs():
    loaded = load("torchvision.models:resnet18", kwargs={"num_classes": 7})
    assert loaded.module.fc.out_features == 7
    # torchvision models built through a factory still get the ImageNet input
    assert loaded.input_spec.shapes == ((1, 3, 224, 224),)
    assert loaded.source_path is None


@pytest.fixture
def tmp_package(tmp_path, monkeypatch):
    """An importable package `qtapp_testpkg.models` with a `build(width)` factory."""
    pkg = tmp_path / "qtapp_testpkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "models.py").write_text(textwrap.dedent("""
        import torch.nn as nn

        class Tiny(nn.Module):
            example_input_shape = (1, 6)

            def __init__(self, width):
                super().__init__()
                self.fc = nn.Linear(6, width)

            def forward(self, x):
                return self.fc(x)

        def build(width=4):
            return Tiny(width)

        def not_a_model():
            return 42
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    yield "qtapp_testpkg.models"
    for name in [m for m in sys.modules if m.startswith("qtapp_testpkg")]:
        monkeypatch.delitem(sys.modules, name)


def test_package_factory_with_kwargs_and_state_dict_weights(tmp_package, tmp_path):
    mod = importlib.import_module(tmp_package)
    source = mod.build(width=3)
    with torch.no_grad():
        source.fc.weight.copy_(torch.arange(18, dtype=torch.float32).view(3, 6))
    weights = tmp_path / "tiny.pth"
    torch.save(source.state_dict(), weights)

    loaded = load(f"{tmp_package}:build", weights=str(weights), kwargs={"width": 3})
    assert loaded.module.fc.out_features == 3
    assert torch.equal(loaded.module.fc.weight, source.fc.weight)
    assert loaded.input_spec.shapes == ((1, 6),)  # the model's declared example_input_shape
    assert weights.resolve() in loaded.protected_paths


def test_factory_errors_name_the_problem(tmp_package, tmp_path):
    with pytest.raises(QtappError, match="has no callable named 'nope'"):
        load(f"{tmp_package}:nope")
    with pytest.raises(QtappError, match="returned a int, not a torch.nn.Module"):
        load(f"{tmp_package}:not_a_model")
    with pytest.raises(UsageError, match="rejected --kwargs"):
        load(f"{tmp_package}:build", kwargs={"depth": 2})
    with pytest.raises(QtappError, match="cannot import 'qtapp_no_such_pkg.models'.*No module named 'qtapp_no_such_pkg'"):
        load("qtapp_no_such_pkg.models:build")
    wrong = tmp_path / "wrong.pth"
    torch.save(nn.Linear(2, 2).state_dict(), wrong)
    with pytest.raises(QtappError, match="do not fit the architecture"):
        load(f"{tmp_package}:build", weights=str(wrong))


def test_file_factory_with_kwargs_and_weights(seq_spec, tmp_path):
    sys.path.insert(0, str(FIXTURES))
    try:
        import seqmodels
    finally:
        sys.path.remove(str(FIXTURES))
    torch.manual_seed(123)
    trained = seqmodels.SeqClassifier(hidden=8, classes=3)
    weights = tmp_path / "seq.pth"
    torch.save(trained.state_dict(), weights)

    loaded = load(seq_spec, weights=str(weights), kwargs={"hidden": 8, "classes": 3})
    assert loaded.module.proj.out_features == 8 and loaded.module.head[2].out_features == 3
    for name, param in trained.state_dict().items():
        assert torch.equal(loaded.module.state_dict()[name], param), name
    # and they really are the file's weights, not what the factory initialises
    unloaded = load(seq_spec, kwargs={"hidden": 8, "classes": 3})
    assert not torch.equal(unloaded.module.proj.weight, trained.proj.weight)
    assert loaded.input_spec.shapes == ((1, 12, 16),)
    assert loaded.source_path == (FIXTURES / "seqmodels.py").resolve()


def test_missing_model_file_and_missing_weights(tmp_path, seq_spec):
    with pytest.raises(QtappError, match="model file not found"):
        load(str(tmp_path / "nope.pt"))
    with pytest.raises(QtappError, match="weights file not found"):
        load(seq_spec, weights=str(tmp_path / "nope.pth"))
    with pytest.raises(QtappError, match="factory file not found"):
        load(f"{tmp_path / 'nope.py'}:build")


# -- model files ---------------------------------------------------------------------------------------
def test_torchscript_file_loads_but_cannot_be_quantized(demo_loaded, tmp_path):
    path = tmp_path / "scripted.pt"
    torch.jit.script(demo_loaded.module).save(str(path))
    with pytest.raises(ProgramFileRefused):  # a program: loading it runs its code, only with consent
        load(str(path))
    loaded = load(str(path), trust=True)
    assert loaded.kind == "torchscript" and loaded.is_torchscript
    x = torch.randn(3, 1, 8, 8)
    assert torch.allclose(loaded.module(x), demo_loaded.module(x))
    recipe = QuantRecipe(model=str(path), input_shape="1,1,8,8", calibration=DataSpec(source="random", batches=1))
    session = QuantSession(loaded, recipe)
    assert session.inventory.heads == []
    with pytest.raises(UsageError) as exc:
        drive(session.quantize())
    message = str(exc.value)
    assert "TorchScript" in message and "no Python source" in message
    assert session.calibrated is None


def test_bare_state_dict_needs_an_architecture(demo_loaded, tmp_path):
    path = tmp_path / "weights.pth"
    torch.save(demo_loaded.module.state_dict(), path)
    with pytest.raises(QtappError) as exc:
        load(str(path))
    assert "bare state_dict" in str(exc.value) and "architecture" in str(exc.value)
    assert f"--weights {path}" in str(exc.value)


def test_pickled_torchvision_model_loads_without_trust(tmp_path):
    import torchvision

    torch.manual_seed(0)
    original = torchvision.models.resnet18(num_classes=5).eval()
    path = tmp_path / "resnet.pt"
    torch.save(original, path)
    loaded = load(str(path))
    assert type(loaded.module) is torchvision.models.ResNet
    assert loaded.kind == "eager" and loaded.notes == []  # no --trust note: no code from the file ran
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(loaded.module(x), original(x))
    assert loaded.protected_paths == [path.resolve()]


def test_pickled_custom_class_is_refused_without_running_its_code(tmp_path, monkeypatch):
    marker = tmp_path / "marker"
    monkeypatch.setenv("QTAPP_TEST_MARKER", str(marker))
    monkeypatch.syspath_prepend(str(FIXTURES))
    payload = importlib.import_module("pickle_payload")
    path = tmp_path / "custom.pt"
    torch.save(payload.MarkerNet(), path)
    # Forget the module and its import marker: a load that imported or unpickled it would leave them again.
    monkeypatch.delitem(sys.modules, "pickle_payload")
    for f in tmp_path.glob("marker.*"):
        f.unlink()

    with pytest.raises(PickleRefused) as exc:
        load(str(path))
    assert exc.value.classes == ["pickle_payload.MarkerNet"]
    assert "pickle_payload.MarkerNet" in str(exc.value) and "--trust" in str(exc.value)
    assert sorted(p.name for p in tmp_path.glob("marker.*")) == []
    assert "pickle_payload" not in sys.modules

    # The same file with explicit trust runs the file's code (which is why it needs consent).
    loaded = load(str(path), trust=True)
    assert type(loaded.module).__name__ == "MarkerNet"
    assert sorted(p.name for p in tmp_path.glob("marker.*")) == ["marker.import", "marker.setstate"]
    assert any("--trust" in n for n in loaded.notes)


def test_non_checkpoint_file_is_refused_without_trust(tmp_path):
    path = tmp_path / "legacy.pt"
    path.write_bytes(b"not a zip, not a pickle")
    with pytest.raises(QtappError, match="not a PyTorch model file") as exc:
        load(str(path))
    assert "--trust" not in str(exc.value)  # trust cannot make garbage a model: don't suggest running it
    path.write_bytes(pickle.dumps([1, 2]))  # a legacy (non-zip) pickle: only trust can read it
    with pytest.raises(QtappError, match="legacy pickle") as exc:
        load(str(path))
    assert "--trust" in str(exc.value)


def test_model_files_take_no_weights_or_kwargs(tmp_path):
    path = tmp_path / "m.pt"
    torch.save(nn.Sequential(nn.Linear(4, 2)), path)
    with pytest.raises(UsageError, match="apply to factories only"):
        load(str(path), weights=str(path))


# -- input shapes --------------------------------------------------------------------------------------
def test_wrong_input_shape_names_the_expected_shape():
    recipe = QuantRecipe(model="demo", input_shape="1,3,32,33")
    with pytest.raises(UsageError) as exc:
        drive(QuantSession.open(recipe))
    message = str(exc.value)
    assert "1x3x32x33" in message  # what was given
    assert "1x1x8x8" in message  # what the model expects
    assert "--input-shape" in message


def test_calibration_file_of_the_wrong_shape_names_the_expected_shape(demo_loaded, tmp_path):
    import numpy as np

    path = tmp_path / "calib.npy"
    np.save(path, np.zeros((4, 3, 8, 8), dtype=np.float32))
    session = QuantSession(demo_loaded, QuantRecipe(model="demo", calibration=DataSpec(source=str(path))))
    with pytest.raises(QtappError) as exc:
        drive(session.calibrate())
    assert "Nx3x8x8" in str(exc.value) and "Nx1x8x8" in str(exc.value)
    assert str(path) in str(exc.value)


def test_input_spec_parsing():
    spec = InputSpec.parse("1,3,224,224; 1x10", dtype="int64")
    assert spec.shapes == ((1, 3, 224, 224), (1, 10)) and spec.sample_shape == (3, 224, 224)
    assert InputSpec.from_json(spec.to_json()) == spec
    x, ids = spec.example(batch=2)
    assert x.shape == (2, 3, 224, 224) and ids.dtype == torch.int64
    with pytest.raises(UsageError, match="cannot read input shape '1,a'"):
        InputSpec.parse("1,a")
    with pytest.raises(UsageError, match="must be positive"):
        InputSpec.parse("1,0,8")
    with pytest.raises(UsageError, match="'bfloat8'"):
        InputSpec.parse("1,8", dtype="bfloat8")


def test_default_weights_download_shows_progress_and_lands_in_the_hub_cache(tmp_path, monkeypatch):
    import torch

    from qtapp.core.model.loading import _download_weights

    source = tmp_path / "src" / "weights-abc123.pth"
    source.parent.mkdir()
    source.write_bytes(b"x" * (3 << 20))  # 3 MB: several 1 MB chunks
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    records = list(_download_weights(source.as_uri()))
    target = tmp_path / "hub" / "checkpoints" / "weights-abc123.pth"
    assert target.read_bytes() == source.read_bytes()
    assert [r.done for r in records] == [1 << 20, 2 << 20, 3 << 20]
    assert all(r.total == 3 << 20 and r.stage == "download weights" for r in records)
    assert not list(target.parent.glob(".partial-*"))
    assert list(_download_weights(source.as_uri())) == []  # cached: nothing to fetch


def test_default_weights_without_network_says_what_to_do(tmp_path, monkeypatch):
    import torch

    from qtapp.core.base.errors import QtappError
    from qtapp.core.model.loading import _download_weights

    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    with pytest.raises(QtappError, match="--weights PATH") as info:
        list(_download_weights((tmp_path / "missing.pth").as_uri()))
    assert "could not download" in str(info.value)


def test_a_torchvision_model_without_weights_is_the_same_in_every_run():
    """Random initialisation is seeded: a recipe re-run reproduces its figures."""
    import torch

    from qtapp.core.base.progress import drive
    from qtapp.core.model.loading import load_model

    torch.manual_seed(123)
    state = torch.random.get_rng_state()
    a = drive(load_model("torchvision:squeezenet1_0")).module
    b = drive(load_model("torchvision:squeezenet1_0")).module
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
    assert torch.equal(torch.random.get_rng_state(), state)  # the caller's RNG is left alone
