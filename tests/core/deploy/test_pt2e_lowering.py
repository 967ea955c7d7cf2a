"""Lowering to ExecuTorch (XNNPACK) of models whose ops ExecuTorch 1.5's channels-last pass cannot lay out
as they are, what a lowering failure says, and PT2E runs that ship no .pte (skipped without the extra).

The face-detector shape (MTCNN's RNet: conv -> PReLU blocks, ceil-mode max pools, a permute before
flatten, linear heads, a PReLU after a Linear) failed in `ChannelsLastTaggedReshapePass`: XNNPACK's
partitioner takes `aten.prelu` at any rank, but the pass lays PReLU out NHWC, which needs a 4-D tensor
("Attempting to convert non-NHWC compatible node to NHWC" on the 1x128 PReLU after dense4). The ceil-mode
pools and the permute lower fine.
"""

from __future__ import annotations

import json
import textwrap

import pytest
import torch
from torch import nn

pytest.importorskip("executorch")
pytest.importorskip("torchao")

from qtapp.core.base.errors import QtappError  # noqa: E402
from qtapp.core.deploy import executorch  # noqa: E402
from qtapp.core.quantize import pt2e  # noqa: E402

RNET_SOURCE = textwrap.dedent('''
    import torch
    from torch import nn


    class RNet(nn.Module):
        """MTCNN's refinement net, in shape: 24x24 crops -> face score (2) and box offsets (4)."""

        def __init__(self):
            super().__init__()
            self.conv1, self.prelu1 = nn.Conv2d(3, 28, 3), nn.PReLU(28)
            self.pool1 = nn.MaxPool2d(3, 2, ceil_mode=True)
            self.conv2, self.prelu2 = nn.Conv2d(28, 48, 3), nn.PReLU(48)
            self.pool2 = nn.MaxPool2d(3, 2, ceil_mode=True)
            self.conv3, self.prelu3 = nn.Conv2d(48, 64, 2), nn.PReLU(64)
            self.dense4, self.prelu4 = nn.Linear(576, 128), nn.PReLU(128)
            self.dense5_1, self.dense5_2 = nn.Linear(128, 2), nn.Linear(128, 4)

        def forward(self, x):
            x = self.pool1(self.prelu1(self.conv1(x)))
            x = self.pool2(self.prelu2(self.conv2(x)))
            x = self.prelu3(self.conv3(x))
            x = x.permute(0, 3, 2, 1).contiguous()
            x = x.view(x.shape[0], -1)
            x = self.prelu4(self.dense4(x))
            return self.dense5_1(x), self.dense5_2(x)


    def build():
        torch.manual_seed(0)
        return RNet().eval()
''')
INPUT = (1, 3, 24, 24)


def _rnet():
    space: dict = {}
    exec(compile(RNET_SOURCE, "rnet.py", "exec"), space)  # noqa: S102 - our own source, above
    return space["build"]()


@pytest.fixture
def rnet_spec(tmp_path):
    path = tmp_path / "rnet.py"
    path.write_text(RNET_SOURCE)
    return f"{path}:build"


@pytest.fixture
def no_rewrite(monkeypatch):
    """The lowering as it was: no 4-D views (so the RNet fails in ExecuTorch as the user saw it)."""
    monkeypatch.setattr(executorch, "_four_d_for_xnnpack", lambda graph_module: [])


def _run_all(data: bytes, tmp_path, inputs) -> list:
    """Every output of a .pte for `inputs`, run in the ExecuTorch runtime."""
    from executorch.runtime import Runtime

    path = tmp_path / "m.pte"
    path.write_bytes(data)
    with executorch.native_stderr_to([]):
        method = Runtime.get().load_program(str(path)).load_method("forward")
        return list(method.execute(list(inputs)))


def _pt2e_int8(model, calib):
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    with pt2e.quiet_pt2e():
        prepared = prepare_pt2e(pt2e.export_graph(model, (calib[0],)).module(), pt2e.quantizer(per_channel=True))
        for x in calib:
            prepared(x)
        return convert_pt2e(prepared)


def _output_scales(converted) -> list[float]:
    """The quantization step of each output of a converted PT2E graph (its outputs are dequantize nodes)."""
    out = next(n for n in converted.graph.nodes if n.op == "output")
    return [float(dq.args[1]) for dq in out.args[0]]


def test_face_detector_int8_pte_lowers_runs_and_matches_its_pt2e_graph(tmp_path):
    torch.manual_seed(1)
    model = _rnet()
    converted = _pt2e_int8(model, [torch.randn(8, *INPUT[1:]) for _ in range(4)])
    made = executorch.pte_of(converted, (torch.randn(*INPUT),))
    assert any("4-D view" in n and "prelu4" in n and "1x128" in n for n in made.notes)
    assert "every op delegated to XNNPACK" in made.notes
    scales = _output_scales(converted)
    for _ in range(3):
        x = torch.randn(*INPUT)
        got = _run_all(made.data, tmp_path, (x,))
        with torch.no_grad():
            ref = converted(x)
        assert len(got) == 2
        for g, r, step in zip(got, ref, scales):
            assert g.shape == r.shape and float((g - r).abs().max()) <= step * 1.01  # one output step at most


def test_face_detector_float_pte_for_timing_matches_the_float_model(tmp_path):
    model = _rnet()
    made = executorch.pte_of(model, (torch.randn(*INPUT),))
    x = torch.randn(*INPUT)
    with torch.no_grad():
        ref = model(x)
    for g, r in zip(_run_all(made.data, tmp_path, (x,)), ref):
        torch.testing.assert_close(g, r, rtol=1e-4, atol=1e-5)


class _PreluAfterConv1d(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv, self.act, self.fc = nn.Conv1d(4, 8, 3), nn.PReLU(8), nn.Linear(8 * 14, 3)

    def forward(self, x):
        return self.fc(self.act(self.conv(x)).flatten(1))


class _SingleSlopeAfterLinear(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1, self.act, self.fc2 = nn.Linear(16, 32), nn.PReLU(), nn.Linear(32, 3)

    def forward(self, x):
        return self.fc2(self.act(self.fc1(x)))


class _UnbatchedPools(nn.Module):
    """2-D pools on a C x H x W tensor (torch pools it unbatched), ceil mode included."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3)

    def forward(self, x):
        y = self.conv(x)[0]
        a = nn.functional.max_pool2d(y, 3, 2, ceil_mode=True)
        b = nn.functional.avg_pool2d(y, 2)
        return a.flatten(), b.flatten()


@pytest.mark.parametrize("make, shape, reshaped", [
    (_PreluAfterConv1d, (1, 4, 16), "prelu on a 1x8x14 tensor"),
    (_SingleSlopeAfterLinear, (1, 16), "prelu on a 1x32 tensor"),
    (_UnbatchedPools, (1, 3, 12, 12), "max_pool2d on a 8x10x10 tensor"),
])
def test_other_ranks_lower_with_a_4d_view_and_compute_the_same(make, shape, reshaped, tmp_path):
    torch.manual_seed(2)
    model = make().eval()
    with torch.no_grad():  # PReLU slopes that matter (negative, above 1)
        for m in model.modules():
            if isinstance(m, nn.PReLU):
                m.weight.uniform_(-0.5, 1.5)
    made = executorch.pte_of(model, (torch.randn(*shape),))
    assert any(reshaped in n for n in made.notes), made.notes
    x = torch.randn(*shape)
    with torch.no_grad():
        ref = model(x)
    ref = ref if isinstance(ref, tuple) else (ref,)
    for g, r in zip(_run_all(made.data, tmp_path, (x,)), ref):
        torch.testing.assert_close(g, r, rtol=1e-4, atol=1e-5)


def test_cli_ships_the_face_detector_as_pte(rnet_spec, tmp_path, cli):
    out = tmp_path / "out"
    code, _stdout, err = cli(["quantize", rnet_spec, "--input-shape", "1,3,24,24", "--backend", "pt2e",
                              "--format", "pte", "--batches", "2", "--no-time-files", "--out", out])
    assert code == 0, err
    report = json.loads((out / "report.json").read_text())
    (pte,) = report["exports"]
    assert pte["verified"] and pte["sqnr_vs_float_db"] > 25 and pte["max_abs_diff"] is not None
    assert report["latency_ms"]["runtime"] == "pte" and report["latency_ms"]["quantized"] > 0  # the run was timed


def test_a_lowering_failure_names_the_op_and_its_real_cause(no_rewrite):
    with pytest.raises(QtappError) as info:
        executorch.lower_to_pte(_rnet(), (torch.randn(*INPUT),))
    text = str(info.value)
    assert "ChannelsLastTaggedReshapePass" in text and "non-NHWC compatible node" in text  # the pass and its words
    assert "prelu on a 2-D 1x128 tensor (prelu4)" in text
    assert "kept float" not in text  # no layer is: nothing to blame on float layers


def test_a_failure_naming_no_node_is_narrowed_down_by_partitioning(no_rewrite, monkeypatch):
    monkeypatch.setattr(executorch, "_failing_node", lambda root: None)
    with pytest.raises(QtappError, match=r"at prelu \(the lowering works with it kept out of the XNNPACK delegate\)"):
        executorch.lower_to_pte(_SingleSlopeAfterLinear().eval(), (torch.randn(1, 16),))


def test_a_pt2e_onnx_run_does_not_fail_on_a_pte_nobody_asked_for(rnet_spec, tmp_path, cli, no_rewrite):
    """`--backend pt2e --format onnx --onnx-quantizer ort` of a model ExecuTorch cannot lower: the run's own
    timing wanted a .pte and failed the run; now the .onnx is written, checked and timed, and the run says
    its latency was not measured."""
    out = tmp_path / "out"
    code, _stdout, err = cli(["quantize", rnet_spec, "--input-shape", "1,3,24,24", "--backend", "pt2e",
                              "--format", "onnx", "--onnx-quantizer", "ort", "--batches", "2", "--out", out])
    assert code == 0, err
    report = json.loads((out / "report.json").read_text())
    (onnx,) = report["exports"]
    assert onnx["format"] == "onnx" and onnx["verified"] and onnx["latency_ms"]["int8"] > 0
    assert report["latency_ms"]["quantized"] is None and not (out / "model.pte").exists()
    assert any(n.startswith("latency of the run not measured") for n in report["notes"])  # no .pte was built


def _bare_result(mode: str = "pt2e"):
    from types import SimpleNamespace

    from qtapp.core.report.results import RunResult

    spec = SimpleNamespace(example=lambda batch=1: (torch.randn(1, 2),))
    loaded = SimpleNamespace(module=nn.Linear(2, 2), input_spec=spec)
    return RunResult(recipe=None, model="m", mode=mode, input="1x2", calibration=None, evaluation=None), loaded


def test_measuring_a_pt2e_run_that_ships_no_pte_lowers_nothing(monkeypatch):
    from qtapp.core.base.progress import drive
    from qtapp.core.run import measuring
    from qtapp.core.run.measuring import measure_result

    def refuse(*_a, **_k):
        raise AssertionError("a .pte was lowered although none was asked for")

    monkeypatch.setattr(measuring, "pte_of", refuse)
    result, loaded = _bare_result()
    measured = drive(measure_result(result, loaded, formats=("onnx",)))
    assert measured.latency is None
    assert any("no .pte was asked for (onnx)" in n for n in measured.model_notes)


def test_a_file_whose_float_twin_cannot_be_made_is_kept_untimed(monkeypatch, tmp_path):
    from qtapp.core.base.progress import CancelToken, drive
    from qtapp.core.deploy.export import ExportResult
    from qtapp.core.run import exporting
    from qtapp.core.run.exporting import time_exports

    def fail(*_a, **_k):
        raise QtappError("lowering to ExecuTorch failed in XNNPACK's SomePass at some_op")

    monkeypatch.setattr(exporting, "pte_of", fail)
    _result, loaded = _bare_result()
    pte = ExportResult("pte", str(tmp_path / "model.pte"), 10, True, 0.0)
    (timed,) = drive(time_exports([pte], loaded, (torch.randn(1, 2),), CancelToken()))
    assert timed.latency is None and any(n.startswith("not timed: its float counterpart") for n in timed.notes)
