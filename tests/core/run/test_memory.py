"""What stays in memory after the window's jobs: the session's models, and no model a job tried."""

from __future__ import annotations

import gc

import torch

from qtapp.core.analysis.metrics import Target
from qtapp.core.base.progress import drive
from qtapp.core.config.recipe import DataSpec, QuantRecipe
from qtapp.core.run import jobs
from qtapp.core.run.session import QuantSession
from qtapp.core.tune.search import Budget


def _live_modules() -> int:
    """Every nn.Module alive in the process, whoever holds it (type(), not isinstance: torch's deprecated
    torch.distributed.reduce_op warns when asked for its __class__)."""
    gc.collect()
    return sum(issubclass(type(o), torch.nn.Module) for o in gc.get_objects())


def test_sensitivity_and_tune_leave_no_model_they_tried_alive(demo_loaded):
    """Each configuration a sensitivity run or a tune converts is dropped once it is scored: after them
    the process holds as many modules as after the quantize they start from (the session's own). torch's
    FX memo of each model's device (functools.cache keyed on the module) kept every model prepare_fx and
    convert_fx saw: 38 MB per conversion of resnet18, a window at 6.4 GB after Sensitivity and Tune."""
    s = QuantSession(demo_loaded, QuantRecipe(model="demo", calibration=DataSpec(batches=2)))
    s.adopt(drive(jobs.quantize(s.snapshot(), measure=False)))
    after_quantize = _live_modules()

    s.adopt(drive(jobs.sensitivity(s.snapshot())))
    conversions = s.result.sensitivity.conversions
    assert conversions >= 8  # enough models tried for one kept each to show
    assert _live_modules() <= after_quantize

    tuned = drive(jobs.tune(s.snapshot(), Target.parse("sqnr>=60"), Budget.parse("float<=2"), measure=False))
    assert tuned.tune.conversions >= 5
    s.adopt_tuned(tuned)
    del tuned
    # The tune's result model is another configuration's (two points float): a few modules more at most.
    assert _live_modules() <= after_quantize + 8
