"""QuantSession: calibrate once and reconvert many, cancellation, settings changes, measuring."""

from __future__ import annotations

import pytest
import torch

from qtapp.core.base.errors import Cancelled, UsageError
from qtapp.core.base.progress import CancelToken, drive
from qtapp.core.base.tensors import is_quantized_module
from qtapp.core.config.recipe import DataSpec, QatSpec, QuantRecipe
from qtapp.core.quantize import torch_ao
from qtapp.core.run.session import QuantSession


def snapshot(module) -> dict:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def assert_unchanged(module, before: dict) -> None:
    state = module.state_dict()
    assert set(state) == set(before)
    changed = [k for k, v in state.items() if not torch.equal(v, before[k])]
    assert changed == [], f"the float model was modified: {changed}"


@pytest.fixture
def calibration_calls(monkeypatch):
    """Counts FxStaticBackend.prepare_and_calibrate calls (the wrapped job still runs)."""
    calls = []
    original = torch_ao.FxStaticBackend.prepare_and_calibrate

    def counting(self, *args, **kwargs):
        calls.append(self.name)
        return (yield from original(self, *args, **kwargs))

    monkeypatch.setattr(torch_ao.FxStaticBackend, "prepare_and_calibrate", counting)
    return calls


def test_calibrate_once_reconvert_many(demo_session, calibration_calls):
    s = demo_session
    (x,), _ = next(iter(s.open_evaluation()))  # a batch: (inputs, labels), one input here
    first = drive(s.quantize())
    calibrated = s.calibrated
    assert calibration_calls == ["fx"]

    s.inventory.set_float("block2.1")  # a fused member: its head goes float
    assert s.recipe.float_layers == ["block2.0"]
    second = drive(s.quantize())
    assert calibration_calls == ["fx"] and s.calibrated is calibrated
    assert second.float_layers == ("block2.0",)
    flags = {layer.name: layer.quantized for layer in second.layers if layer.name in s.inventory.heads}
    assert flags == {"block1.0": True, "block2.0": False, "block3.0": True, "fc1": True, "fc2": True}
    island = second.quantized_model.get_submodule("block2.0")
    assert not is_quantized_module(island) and type(island).__module__ == "torch.ao.nn.intrinsic.modules.fused"
    assert is_quantized_module(first.quantized_model.get_submodule("block2.0"))  # earlier result untouched

    s.inventory.set_float("block2", keep_float=False)
    third = drive(s.quantize())
    assert calibration_calls == ["fx"]
    with torch.no_grad():  # same calibration, same float set: the same model
        assert torch.equal(third.quantized_model(x), first.quantized_model(x))
        assert not torch.equal(second.quantized_model(x), first.quantized_model(x))


def test_a_calibration_setting_change_recalibrates(demo_session, calibration_calls):
    s = demo_session
    drive(s.quantize())
    s.update_recipe(per_channel=False)
    assert s.calibrated is None
    drive(s.quantize())
    assert calibration_calls == ["fx", "fx"] and s.calibrated.recipe.per_channel is False


def test_another_activation_range_reconverts_without_recalibrating(demo_session, calibration_calls):
    """Every range choice is observed in the one calibration pass (observers.MultiObserver)."""
    s = demo_session
    (x,), _ = next(iter(s.open_evaluation()))
    histogram = drive(s.quantize())
    calibrated = s.calibrated
    s.update_recipe(observer="minmax")
    assert s.calibrated is calibrated
    minmax = drive(s.quantize())
    assert calibration_calls == ["fx"]
    scale = lambda r: r.quantized_model.get_submodule("block2.0").scale  # noqa: E731 - its output range
    assert scale(minmax) > scale(histogram)  # min-max keeps every outlier in range: a coarser step
    s.update_recipe(observer="histogram")
    again = drive(s.quantize())
    with torch.no_grad():
        assert torch.equal(again.quantized_model(x), histogram.quantized_model(x))


def test_changing_the_method_rebuilds_the_inventory_and_keeps_float_layers(demo_session):
    s = demo_session
    s.inventory.set_float("fc1")
    s.update_recipe(method="dynamic")
    assert s.mode == "dynamic" and s.inventory.heads == ["fc1", "fc2"]
    assert s.inventory.float_layers == ["fc1"] and s.recipe.float_layers == ["fc1"]
    s.inventory.set_float("fc2")  # the session still hears the new inventory
    assert s.recipe.float_layers == ["fc1", "fc2"]


@pytest.mark.parametrize("method", ["static", "qat"])
def test_cancel_mid_calibration_leaves_the_float_model_and_session_alone(demo_loaded, method):
    before = snapshot(demo_loaded.module)
    recipe = QuantRecipe(model="demo", method=method, qat=QatSpec(epochs=1), calibration=DataSpec(batches=6))
    s = QuantSession(demo_loaded, recipe)
    cancel = CancelToken()
    job = s.calibrate(cancel)
    records = [next(job), next(job)]
    assert [(r.done, r.total) for r in records] == [(0, 6), (1, 6)]
    cancel.cancel()
    with pytest.raises(Cancelled):
        next(job)
    with pytest.raises(StopIteration):  # the job is over
        next(job)
    assert s.calibrated is None
    assert_unchanged(demo_loaded.module, before)
    assert not demo_loaded.module.training


def test_cancel_keeps_the_previous_calibration(demo_session):
    s = demo_session
    previous = drive(s.calibrate())
    cancel = CancelToken()
    job = s.calibrate(cancel)
    next(job)
    next(job)
    cancel.cancel()
    with pytest.raises(Cancelled):
        next(job)
    assert s.calibrated is previous


def test_cancel_during_evaluation_keeps_no_half_result(demo_session):
    s = demo_session
    cancel = CancelToken()

    def on_progress(p):
        if p.stage == "evaluate" and p.done == 2:
            cancel.cancel()

    with pytest.raises(Cancelled):
        drive(s.quantize(cancel), on_progress)
    # A cancelled job leaves the session exactly as it was before the job (nothing half-adopted).
    assert s.result is None and s.calibrated is None


def test_measure_size_and_latency(demo_quantized):
    result = drive(demo_quantized.measure())
    assert result.size_float > 1_000_000  # ~1.5 MB of float weights as TorchScript
    assert result.size_quantized <= 0.30 * result.size_float
    assert result.script_note == "scripted" and isinstance(result.scripted, torch.jit.ScriptModule)
    lat = result.latency
    assert lat.float_ms > 0 and lat.quantized_ms > 0 and lat.runs >= 10
    assert lat.threads == torch.get_num_threads()


def test_nothing_to_measure_or_export_before_quantizing(demo_session, tmp_path):
    with pytest.raises(UsageError, match="nothing quantized yet"):
        drive(demo_session.measure())
    with pytest.raises(UsageError, match="nothing quantized yet"):
        drive(demo_session.export(tmp_path, ["pt"]))
    assert list(tmp_path.iterdir()) == []


def test_convert_refuses_layers_outside_the_inventory(demo_session):
    calibrated = drive(demo_session.calibrate())
    with pytest.raises(UsageError, match="not layers of this model's inventory: block1.1"):
        calibrated.convert(["block1.1"])


def test_float_outputs_are_reused_only_for_the_same_evaluation_inputs(tmp_path):
    """Reconversions reuse the float model's outputs; a change to what is evaluated must not."""
    from dataclasses import replace

    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    for i in range(16):
        Image.fromarray(rng.integers(0, 255, (8, 8), dtype=np.uint8), "L").save(tmp_path / f"{i:02d}.png")
    plain = DataSpec(source=str(tmp_path), batches=2, batch_size=8, preprocess={"mean": [0.0], "std": [1.0]})
    session = drive(QuantSession.open(QuantRecipe("demo", observer="minmax", calibration=plain, evaluation=plain)))
    first = drive(session.quantize())
    session.inventory.set_float("fc2")
    again = drive(session.quantize())  # same inputs: the cached float side is exact
    assert np.array_equal(first.output.ref_values, again.output.ref_values)
    # Same folder, same batching, different preprocessing: the float side must be recomputed.
    session.update_recipe(evaluation=replace(plain, preprocess={"mean": [0.5], "std": [0.5]}))
    changed = drive(session.quantize())
    with torch.no_grad():
        x = torch.cat([xb for (xb,), _ in session.open_evaluation()])
        expected = session.loaded.module(x).flatten().numpy()
    assert np.allclose(np.sort(changed.output.ref_values), np.sort(expected), atol=1e-5)


def test_sensitivity_after_a_measured_run_keeps_its_size_and_latency(demo_loaded):
    """Sensitivity quantizes the same configuration again without timing it: the summary's Size and Latency
    went blank after it (issue 19, 2). The same configuration is the same file: its figures stay."""
    from qtapp.core.run import jobs

    session = QuantSession(demo_loaded, QuantRecipe(model="demo", calibration=DataSpec(batches=2)))
    measured = session.adopt(drive(jobs.quantize(session.snapshot(), measure=True)))
    assert measured.size_quantized and measured.latency is not None
    after = session.adopt(drive(jobs.sensitivity(session.snapshot())))
    assert after.sensitivity is not None
    assert (after.size_float, after.size_quantized, after.latency) == (
        measured.size_float, measured.size_quantized, measured.latency)
    session.inventory.set_float("fc2", True)  # another configuration: another file, not measured yet
    other = session.adopt(drive(jobs.sensitivity(session.snapshot())))
    assert other.size_quantized is None and other.latency is None
