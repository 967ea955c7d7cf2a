"""Every size tune shows is the size of the file that ships: the cost model, pinned to the start's and
the float model's measured files, against the TorchScript file each configuration really writes, for every
kind of move (a point float, one weight scale per tensor, another range, equalisation, dynamic float16,
dynamic per-channel), within 2%. Dynamic float16 weights ship as float32: no smaller than float."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from qtapp.core.analysis.metrics import Target
from qtapp.core.base.progress import drive
from qtapp.core.config.recipe import DataSpec, QuantRecipe
from qtapp.core.deploy.export import script_bytes
from qtapp.core.deploy.measure import to_torchscript
from qtapp.core.run import jobs
from qtapp.core.run.session import QuantSession
from qtapp.core.tune.scoring import Config
from qtapp.core.tune.search import Budget

pytestmark = pytest.mark.filterwarnings(r"ignore:.*torch\.jit\..*deprecated:FutureWarning")

SEQ = f"{Path(__file__).resolve().parents[2] / 'fixtures' / 'seqmodels.py'}:build"


def scorer_for(recipe):
    session = drive(QuantSession.open(recipe))
    snap = session.snapshot()
    start = drive(jobs.quantize(snap, measure=True))
    snap = jobs.from_start(snap, start)
    return snap, jobs.make_scorer(snap, start, Target.parse("sqnr>=99"), "sqnr", list(snap.inventory.heads))


def shipped_bytes(scorer, snap, config) -> int:
    qmodel, _ = scorer.convert(config)
    scripted, _ = to_torchscript(qmodel, snap.loaded.input_spec.example(batch=1))
    return len(script_bytes(scripted))


def test_static_moves_are_sized_as_their_files():
    snap, scorer = scorer_for(QuantRecipe(model="demo", calibration=DataSpec(batches=2)))
    c = Config.of(snap.recipe)
    moves = {"start": c, "a layer float": c.with_float(["fc1"]), "two layers float": c.with_float(["fc1", "block2.0"]),
             "one scale per tensor": c.with_override("fc1", per_channel=False),
             "another range": c.with_override("fc1", observer="minmax"), "equalisation": replace(c, equalize=True),
             "everything float": c.with_float(list(snap.inventory.heads))}
    for move, config in moves.items():
        estimated, actual = scorer.score(config).size_bytes, shipped_bytes(scorer, snap, config)
        assert abs(estimated - actual) <= 0.02 * actual, (move, estimated, actual)


def test_dynamic_moves_are_sized_as_their_files_and_float16_does_not_compress():
    snap, scorer = scorer_for(QuantRecipe(model=SEQ, method="dynamic", kwargs={"hidden": 256}))
    c = Config.of(snap.recipe)
    moves = {"start": c, "lstm float16": c.with_override("lstm", dtype="float16"), "a layer float": c.with_float(["proj"]),
             "two float16": c.with_override("lstm", dtype="float16").with_override("gru", dtype="float16"),
             "per-channel": c.with_override("lstm", per_channel=True)}
    for move, config in moves.items():
        estimated, actual = scorer.score(config).size_bytes, shipped_bytes(scorer, snap, config)
        assert abs(estimated - actual) <= 0.02 * actual, (move, estimated, actual)
    all_half = c
    for head in snap.inventory.heads:
        all_half = all_half.with_override(head, dtype="float16")
    half = scorer.score(all_half)
    assert half.size_bytes >= 0.98 * scorer.float_bytes and not scorer.compresses(half)
    assert scorer.compresses(scorer.score(c))


def test_tune_reports_the_measured_figures_of_the_configuration_it_writes():
    session = drive(QuantSession.open(QuantRecipe(model="demo", calibration=DataSpec(batches=2))))
    outcome = drive(jobs.tune(session.snapshot(), Target.parse("sqnr>=10"), Budget.parse(None)))
    t, written = outcome.tune, outcome.quantized.result
    assert t.best.size_bytes == written.size_quantized and t.best.latency_ms == written.latency.quantized_ms
    assert all(s.scored.size_bytes == written.size_quantized for s in t.steps if s.scored.config == t.best.config)
