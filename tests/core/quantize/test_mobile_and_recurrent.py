"""Real-model traits the defaults must handle: a conv read only by a ReLU6 is given the clamped range,
a depthwise conv's input channels are evened out for one int8 range, and a multi-layer LSTM is split so one
layer that int8 cannot carry can stay float while the rest shrink."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn as nn

from qtapp.core.base.progress import drive
from qtapp.core.config.recipe import DataSpec, QuantRecipe
from qtapp.core.model.rewrites import StackedGRU, StackedLSTM
from qtapp.core.quantize.equalize import (
    DepthwisePair,
    depthwise_scales,
    equalize_depthwise,
    find_depthwise_pairs,
    watching_depthwise_inputs,
)
from qtapp.core.quantize.observers import MultiObserver, bound_clamped_observers
from qtapp.core.run import jobs
from qtapp.core.run.session import QuantSession

pytestmark = [pytest.mark.filterwarnings(r"ignore:.*torch\.jit\..*deprecated:FutureWarning"),
              pytest.mark.filterwarnings(r"ignore:LSTM with projections is not supported with oneDNN:UserWarning")]

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "mobile_blocks.py"


def _session(spec, **changes):
    return drive(QuantSession.open(QuantRecipe(model=f"{FIXTURES}:{spec}", **changes)))


def _layer(result, name):
    return next(p for p in result.layers if p.name == name)


# -- a range read only through a clamp -------------------------------------------------------------------

class _Clamps(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a, self.b, self.c = nn.Conv2d(3, 4, 1), nn.Conv2d(4, 4, 1), nn.Conv2d(4, 4, 1)
        self.head = nn.Linear(4, 2)

    def forward(self, x):
        y = nn.functional.relu6(self.a(x))  # a: read only by the ReLU6
        z = self.b(y)
        w = torch.clamp(z, 0.0, 6.0) + z  # b: read by a clamp and an add: its range must stay whole
        v = torch.nn.functional.hardtanh(self.c(w), -1.0, 1.0).mean((2, 3))  # c, then a mean of the clamp
        return self.head(v)


def test_an_observer_read_only_through_a_clamp_watches_the_clamped_values():
    from torch.ao.quantization.quantize_fx import prepare_fx

    from qtapp.core.quantize.qconfigs import fx_mapping

    model = _Clamps().eval()
    prepared = prepare_fx(model, fx_mapping(QuantRecipe(model="x")), (torch.randn(1, 3, 4, 4),))
    bounded = bound_clamped_observers(prepared)
    nodes = {n.name: n for n in prepared.graph.nodes}

    def observer_after(name):
        return next(u.target for u in nodes[name].users)

    assert bounded[observer_after("a")] == (0.0, 6.0)
    assert observer_after("b") not in bounded  # the add reads it unclamped
    assert bounded[observer_after("c")] == (-1.0, 1.0)  # shared with the hardtanh and the mean after it
    prepared(torch.randn(8, 3, 4, 4) * 50)
    obs = prepared.get_submodule(observer_after("a"))
    assert isinstance(obs, MultiObserver) and float(obs.min_val) >= 0.0 and float(obs.max_val) <= 6.0


def test_a_conv_before_a_relu6_gets_a_range_from_zero_and_the_analysis_compares_clamped_values():
    session = _session("build_inverted_residual", equalize_depthwise=False)
    result = drive(jobs.quantize(session.snapshot(), measure=False)).result
    conv = _layer(result, "conv")
    assert conv.range.lo == 0.0  # the raw conv outputs are negative half the time; int8 keeps [0, 6]
    assert conv.local_sqnr_db > 25  # against the clamped float values, not the raw ones it never carries


# -- depthwise input equalisation ------------------------------------------------------------------------

def _fixture(name):
    import importlib.util

    spec = importlib.util.spec_from_file_location("mobile_blocks", FIXTURES)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return getattr(mod, name)


def test_depthwise_pairs_are_found_and_scaling_keeps_the_float_outputs_on_calibration_data():
    model = _fixture("build_inverted_residual")()
    pairs = find_depthwise_pairs(model)
    assert pairs == [DepthwisePair("conv", "dw", "bn", "act")]  # dw -> project is not depthwise
    data = [(torch.randn(8, 3, 16, 16, generator=torch.Generator().manual_seed(i)),) for i in range(3)]
    with watching_depthwise_inputs(model, pairs) as peaks, torch.no_grad():
        for inputs in data:
            model(*inputs)
    scales = depthwise_scales(peaks)
    assert float(scales["dw"].max()) == 16.0 and float(scales["dw"].min()) == 1.0  # quiet ones up, capped
    evened, info = equalize_depthwise(model, pairs, scales, data[0])
    with torch.no_grad():
        for inputs in data:  # exact on every calibration batch, ReLU6 included
            assert torch.allclose(model(*inputs), evened(*inputs), rtol=1e-4, atol=1e-5)
    assert info["scaled_channels"] == 15  # every channel but the loudest
    assert torch.equal(model.bn.weight, _fixture("build_inverted_residual")().bn.weight)  # original untouched


def test_no_pair_where_the_feeding_layer_is_read_twice_or_the_conv_is_not_depthwise():
    class Twice(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a, self.dw, self.g = nn.Conv2d(4, 4, 1), nn.Conv2d(4, 4, 3, groups=4), nn.Conv2d(4, 4, 3, groups=2)

        def forward(self, x):
            y = torch.relu(self.a(x))
            return self.dw(y).sum() + y.sum() + self.g(self.a(x) * 0 + x).sum()

    assert find_depthwise_pairs(Twice()) == []


def test_depthwise_equalisation_is_on_by_default_and_improves_the_int8_output():
    plain_session = _session("build_inverted_residual", equalize_depthwise=False)
    plain = drive(jobs.quantize(plain_session.snapshot(), measure=False)).result
    evened = drive(jobs.quantize(_session("build_inverted_residual").snapshot(), measure=False)).result
    assert evened.output.sqnr_db > plain.output.sqnr_db + 3
    assert "depthwise input equalisation" in evened.calib_stats["depthwise_equalized"]
    assert "depthwise_equalized" not in plain.calib_stats


def test_the_recipe_and_cli_can_turn_it_off():
    from qtapp.cli import build_parser

    recipe = QuantRecipe(model="demo")
    assert recipe.equalize_depthwise is True
    assert QuantRecipe.from_dict({**recipe.to_dict(), "equalize_depthwise": False}).equalize_depthwise is False
    args = build_parser().parse_args(["quantize", "demo", "--out", "x", "--no-equalize-depthwise"])
    assert args.equalize_depthwise is False


# -- stacked RNNs ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("kind,kw", [(nn.LSTM, {}), (nn.LSTM, {"bidirectional": True}),
                                     (nn.LSTM, {"proj_size": 5}), (nn.GRU, {"bidirectional": True})])
@pytest.mark.parametrize("batch_first", [True, False])
def test_a_split_rnn_computes_the_same_outputs_and_states(kind, kw, batch_first):
    torch.manual_seed(0)
    rnn = kind(7, 11, num_layers=3, batch_first=batch_first, **kw).eval()
    split = (StackedLSTM if kind is nn.LSTM else StackedGRU)(rnn).eval()
    x = torch.randn(4, 6, 7)
    d = 2 if kw.get("bidirectional") else 1
    batch = 4 if batch_first else 6
    h0 = torch.randn(3 * d, batch, kw.get("proj_size", 11))
    hx = (h0, torch.randn(3 * d, batch, 11)) if kind is nn.LSTM else h0
    with torch.no_grad():
        for args in ((x,), (x, hx)):
            ref, got = rnn(*args), split(*args)
            for a, b in zip(torch.utils._pytree.tree_leaves(ref), torch.utils._pytree.tree_leaves(got)):
                assert torch.equal(a, b)
    torch.jit.script(split)  # .pt files are scripted first


def test_loading_splits_a_stacked_lstm_into_one_point_per_layer():
    session = _session("build_mel_encoder", method="dynamic")
    names = [p.name for p in session.inventory.points.values()] if hasattr(session.inventory.points, "values") \
        else [p.name for p in session.inventory.points]
    assert {"lstm.layers.0", "lstm.layers.1", "lstm.layers.2", "linear"} <= set(names)
    assert any("lstm (a 3-layer LSTM) runs as 3 one-layer LSTMs" in n for n in session.loaded.notes)


def test_the_first_lstm_layer_of_a_model_fed_decades_is_named_worst_and_can_be_kept_float_alone(tmp_path):
    np.savez(tmp_path / "mels.npz", x=_fixture("mel_power")(64).numpy())
    data = DataSpec(source=str(tmp_path / "mels.npz"), batches=4, batch_size=16)
    whole = drive(jobs.quantize(_session("build_mel_encoder", method="dynamic", evaluation=data).snapshot())).result
    first_float = drive(jobs.quantize(_session("build_mel_encoder", method="dynamic", evaluation=data,
                                               float_layers=["lstm.layers.0"]).snapshot())).result
    local = {p.name: p.local_sqnr_db for p in whole.layers if p.local_sqnr_db is not None}
    assert min(local, key=local.get) == "lstm.layers.0"  # where tune starts
    assert local["lstm.layers.0"] < local["lstm.layers.1"] - 10
    assert first_float.output.sqnr_db > whole.output.sqnr_db + 6
    assert whole.size_quantized < first_float.size_quantized < first_float.size_float  # layers 1, 2, linear shrink
