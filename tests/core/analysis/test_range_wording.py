"""One wording for every point's activation range (report.json, report.html, the window): the range as
calibrated, what its observer saw, the int8 grid's representable range named as such, and the levels
used counted against the whole grid, on the demo's real figures."""

from __future__ import annotations

import pytest

from qtapp.core.base.progress import drive
from qtapp.core.config.recipe import QuantRecipe
from qtapp.core.report.render import report_dict
from qtapp.core.run.session import QuantSession

OLD_KEYS = ("lo", "hi", "scale", "zero_point", "qmin", "qmax", "fixed", "per_call", "observed_min", "observed_max",
            "data_min", "data_max", "values", "clipped_low", "clipped_high", "exact_zero", "rounds_to_zero",
            "levels_used", "levels_total", "central_levels", "source", "levels", "histogram")


@pytest.fixture(scope="module")
def demo():
    session = drive(QuantSession.open(QuantRecipe(model="demo")))
    return drive(session.quantize())


def test_every_points_levels_are_counted_against_the_int8_grid(demo):
    layers = {row["name"]: row for row in report_dict(demo)["layers"]}
    ranged = {name: row["range"] for name, row in layers.items() if row["range"] is not None}
    assert {"gap", "block3.0"} <= set(ranged)
    for name, r in ranged.items():
        stats = next(p.range for p in demo.layers if p.name == name)
        assert set(OLD_KEYS) <= set(r)  # keys are only added
        assert all(r[k] == getattr(stats, k) for k in OLD_KEYS if k not in ("levels", "histogram"))
        assert r["levels"] == f"{r['levels_used']} of the int8 grid's 256 levels" and r["levels_used"] <= 256


def test_gap_names_its_calibrated_range_and_the_int8_grid_apart(demo):
    """gap shares block3.0's observer: the histogram range it chose ends at 4.94 of the 6.0 it saw; gap's own
    values end at 3.6; the int8 grid it rounds to represents 0 to 9.91 (256 levels, 128 calibrated)."""
    r = {row["name"]: row for row in report_dict(demo)["layers"]}["gap"]["range"]
    top = r["scale"] * (r["levels_total"] - 1 - r["zero_point"])
    assert r["data_max"] < top < r["observed_max"] < r["hi"]
    assert (r["calibrated_lo"], r["calibrated_hi"], r["grid_levels"]) == pytest.approx((0.0, top, 256))
    assert r["range_text"] == (f"calibrated range 0 to {top:.4g} (its observer saw 0 to {r['observed_max']:.4g}): "
                               f"128 levels in steps of {r['scale']:.3g}; the int8 grid represents 0 to {r['hi']:.4g} "
                               "(256 levels)")


def test_a_point_sharing_its_inputs_range_is_not_said_to_add_no_rounding(demo_loaded):
    """`gap` (an average of int8 values, rounded back to block3.0's grid) was said to "add no rounding of its
    own" while it had the demo's worst local SQNR and the accumulated SQNR fell there (issue 19, 5)."""
    from qtapp.core.base.progress import drive
    from qtapp.core.config.recipe import DataSpec, QuantRecipe
    from qtapp.core.run.session import QuantSession

    session = QuantSession(demo_loaded, QuantRecipe(model="demo", calibration=DataSpec(batches=2)))
    result = drive(session.quantize())
    points = {p.name: p for p in result.layers}
    gap = points["gap"]
    assert gap.local_sqnr_db == min(p.local_sqnr_db for p in result.layers if p.local_sqnr_db is not None)
    assert gap.accumulated_sqnr_db < points["block3.0"].accumulated_sqnr_db  # it does add error
    assert "no rounding of its own" not in gap.reason
    assert gap.reason.startswith("runs on int8 values and rounds its output to the range of block3.0")
