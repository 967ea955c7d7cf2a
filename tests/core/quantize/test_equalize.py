"""Cross-layer equalisation: which layer pairs it scales (only those it keeps exact), that the float
model computes the same afterwards, and that the channel ranges and the int8 error improve."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn as nn

from qtapp.core.base.errors import QtappError
from qtapp.core.base.progress import drive
from qtapp.core.config.recipe import QuantRecipe
from qtapp.core.quantize.equalize import Pair, equalize, find_pairs
from qtapp.core.run import jobs
from qtapp.core.run.session import QuantSession

KINDS_SPEC = f"{Path(__file__).resolve().parents[2] / 'fixtures' / 'point_kinds.py'}:build"


def session_of(kind, **changes):
    return drive(QuantSession.open(QuantRecipe(model=KINDS_SPEC, kwargs={"kind": kind}, **changes)))


def test_the_pair_through_batchnorm_and_relu_is_found_and_equalised_exactly():
    session = session_of("imbalanced")
    pairs = find_pairs(session.loaded.module, session.inventory)
    assert pairs == [Pair("conv1", "conv2", "bn1")]  # conv2 -> mean -> head: the mean is in between
    model = session.loaded.module
    example = (torch.randn(8, 3, 8, 8, generator=torch.Generator().manual_seed(3)),)
    equalised, info = equalize(model, pairs, example)
    with torch.no_grad():
        ref, got = model(*example), equalised(*example)
    assert torch.allclose(ref, got, rtol=1e-5, atol=1e-6)  # the same function
    assert info["max_ratio_before"] > 50 and info["max_ratio_after"] < info["max_ratio_before"] / 5
    assert torch.equal(model.bn1.weight, session.loaded.module.bn1.weight)  # the original is untouched
    assert not torch.equal(equalised.bn1.weight, model.bn1.weight)  # the scale went into bn1, not conv1
    assert torch.equal(equalised.conv1.weight, model.conv1.weight)


@pytest.mark.parametrize("per_channel", [True, False])
def test_equalising_improves_the_int8_output_of_an_imbalanced_model(per_channel):
    plain = drive(jobs.quantize(session_of("imbalanced", per_channel=per_channel).snapshot(), measure=False)).result
    evened_session = session_of("imbalanced", per_channel=per_channel, equalize=True)
    evened = drive(jobs.quantize(evened_session.snapshot(), measure=False)).result
    assert evened.output.sqnr_db > plain.output.sqnr_db + 1.5
    assert "cross-layer equalisation of 1 pair(s)" in evened.calib_stats["equalized"]


class _Chains(nn.Module):
    """Pairs that must not be equalised: ReLU6 between, a grouped second conv, a layer read twice."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = nn.Conv2d(3, 8, 1), nn.Conv2d(8, 8, 3, padding=1, groups=8)  # b is depthwise
        self.c, self.d = nn.Conv2d(8, 8, 1), nn.Conv2d(8, 8, 1)
        self.e, self.f = nn.Conv2d(8, 8, 1), nn.Conv2d(8, 8, 1)

    def forward(self, x):
        x = self.b(torch.relu(self.a(x)))  # second conv grouped
        x = self.d(nn.functional.relu6(self.c(x)))  # ReLU6: not positively homogeneous
        y = self.e(x)
        return self.f(torch.relu(y)) + y  # e is read twice


def test_pairs_that_would_change_the_model_are_not_taken(tmp_path):
    spec = tmp_path / "chains.py"
    spec.write_text("import sys\nsys.path.insert(0, %r)\nfrom test_equalize import _Chains\n"
                    "def build():\n    return _Chains().eval()\n" % str(Path(__file__).parent))
    recipe = QuantRecipe(model=f"{spec}:build", input_shape="1,3,8,8")
    session = drive(QuantSession.open(recipe))
    pairs = find_pairs(session.loaded.module, session.inventory)
    # depthwise b -> pointwise c (only the second must mix channels), and d -> e with nothing between;
    # not a -> b (b grouped), c -> d (ReLU6), e -> f (e is read twice)
    assert pairs == [Pair("b", "c", None), Pair("d", "e", None)]


def test_a_pair_that_is_not_what_it_seems_is_refused_not_applied():
    model = nn.Sequential(nn.Linear(4, 4), nn.Tanh(), nn.Linear(4, 2)).eval()  # tanh is not homogeneous
    with torch.no_grad():
        model[0].weight[0] *= 50
    with pytest.raises(QtappError, match="changed the float model's outputs"):
        equalize(model, [Pair("0", "2")], (torch.randn(16, 4),))


def test_dynamic_quantization_refuses_equalize():
    from qtapp.core.base.errors import UsageError

    with pytest.raises(UsageError, match="equalize"):
        QuantRecipe(model="demo", method="dynamic", equalize=True).check_applicable()
