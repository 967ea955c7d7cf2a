"""Issue 20: a budget on bytes (size<=, bits<=) ranks moves by what they gain per byte they add, and
where the target is out of reach fills what the budget leaves with moves the greedy prefix skipped.
A scorer whose scores and sizes are sums of per-layer figures makes the arithmetic checkable."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from qtapp.core.analysis.metrics import MetricValue, Target
from qtapp.core.base.progress import drive
from qtapp.core.tune.costs import CostModel
from qtapp.core.tune.scoring import Scored
from qtapp.core.tune.search import Budget, tune

BASE_SCORE, BASE_BYTES = 10.0, 1000
# layer: (what keeping it float gains, dB; bytes it adds)
LAYERS = {"c": (1.0, 50), "b": (3.0, 300), "d": (0.4, 50), "a": (5.0, 4000)}


class SumScorer:
    """Scores a configuration as the start's score plus each float layer's gain, sized likewise."""

    def __init__(self, target: str) -> None:
        self.target = Target.parse(target)
        self.metric = ("sqnr", None)
        self.snap = SimpleNamespace(recipe=SimpleNamespace(float_layers=[], overrides={}, equalize=False))
        self.conversions, self.calibrations = 0, 1

    def score(self, config, cancel=None) -> Scored:
        self.conversions += 1
        score = BASE_SCORE + sum(LAYERS[n][0] for n in config.float_points)
        size = BASE_BYTES + sum(LAYERS[n][1] for n in config.float_points)
        return Scored(config, MetricValue("sqnr", None, score), score, score, size, None)

    def score_all(self, configs, cancel=None):
        for c in configs:
            yield self.score(c)

    def better(self, a, b) -> bool:
        return a.score > b.score + 1e-9

    def compresses(self, scored) -> bool:
        return True


def _float_after(budget: str, target: str = "sqnr>=100"):
    result = drive(tune(SumScorer(target), Target.parse(target), Budget.parse(budget), list(LAYERS)))
    return result, set(result.best.config.float_points)


def test_a_size_budget_ranks_moves_by_gain_per_byte_and_fills_what_the_prefix_left():
    result, chosen = _float_after(f"size<={(BASE_BYTES + 120) / 1e6}MB")
    ranking = [s.move for s in result.steps if s.move.startswith("only")]
    assert len(ranking) == 4
    # c 0.02 dB/B, b 0.01, d 0.008, a 0.00125: the prefix takes c, b breaks the budget; d still fits
    assert chosen == {"c", "d"}
    assert result.best.size_bytes == BASE_BYTES + 100 and result.best.score == pytest.approx(11.4)
    assert any("as well (fills the budget)" in s.move for s in result.steps)
    assert not result.reached


def test_without_a_budget_on_bytes_the_ranking_is_by_gain_alone():
    result, chosen = _float_after("float<=1")
    assert chosen == {"a"}  # the largest gain, whatever its bytes


def test_the_target_reached_within_a_bits_budget():
    # a mean-bits budget reads Scored.bits; here the scorer sets none, so only the target decides
    result, chosen = _float_after("bits<=4.5", target="sqnr>=11")
    assert result.reached and chosen == {"c"}


@pytest.mark.parametrize("text, ok", [("bits<=4.5", True), ("bits<=6", True), ("bits<=4.5MB", False),
                                      ("bits<=4%", False)])
def test_a_bits_budget_is_read_and_takes_no_unit(text, ok):
    if ok:
        b = Budget.parse(text)
        assert b.kind == "bits" and b.on_bytes
    else:
        with pytest.raises(Exception, match="bits<=N"):
            Budget.parse(text)


def test_mean_bits_weighs_each_layer_by_its_values():
    costs = CostModel({"x": 3000, "y": 1000}, {"x": 0, "y": 0}, 0, bits=(4, 32))
    assert costs.mean_bits(set()) == 4
    assert costs.mean_bits(set(), float16={"y"}) == pytest.approx((3000 * 4 + 1000 * 8) / 4000)
    assert costs.mean_bits({"x"}) == pytest.approx((3000 * 32 + 1000 * 4) / 4000)
    ao = CostModel({"x": 3000, "y": 1000}, {"x": 0, "y": 0}, 0)  # torch.ao: int8, float16, float
    assert ao.mean_bits(set(), float16={"x"}) == pytest.approx((3000 * 16 + 1000 * 8) / 4000)


def test_when_every_move_breaks_the_budget_the_smallest_prefix_that_reaches_the_target_is_chosen():
    # c+b reaches 14 dB at +350 B; c+b+d scores more (14.4) at +400 B, within the budget too: the target
    # is met by the smaller one, which is the tune's answer (the whole ranking, with a, breaks the budget)
    result, chosen = _float_after(f"size<={(BASE_BYTES + 500) / 1e6}MB", target="sqnr>=13.5")
    assert result.reached and chosen == {"c", "b"}
    assert result.best.size_bytes == BASE_BYTES + 350
