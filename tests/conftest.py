"""Shared fixtures for the core and CLI tests: no network, no Qt, small models only."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

if os.environ.get("PYTEST_XDIST_WORKER"):
    # Two test workers on two cores: each runs torch (and the processes it starts) on one intra-op thread.
    # With torch's default of one per core, three or four processes' OpenMP threads wait on cores another
    # holds, and a run slows several-fold at random (resnet18's quantize: 11 s alone, 53 s in the suite).
    os.environ["OMP_NUM_THREADS"] = os.environ["MKL_NUM_THREADS"] = "1"
    import torch

    torch.set_num_threads(1)

TESTS = Path(__file__).resolve().parent
FIXTURES = TESTS / "fixtures"
# Linear + LSTM + GRU classifier, loaded through the file.py:callable path.
SEQ_SPEC = f"{FIXTURES / 'seqmodels.py'}:build"


@pytest.fixture(scope="session")
def seq_spec() -> str:
    return SEQ_SPEC


@pytest.fixture(scope="session")
def demo_loaded():
    """The bundled digits CNN, loaded once; tests must not modify its module."""
    from qtapp.core.base.progress import drive
    from qtapp.core.model.loading import load_model

    return drive(load_model("demo"))


@pytest.fixture(scope="session")
def seq_loaded():
    from qtapp.core.base.progress import drive
    from qtapp.core.model.loading import load_model

    return drive(load_model(SEQ_SPEC))


@pytest.fixture
def demo_session(demo_loaded):
    """A fresh static-FX session on the demo (calibration on 4 batches of its calibration split)."""
    from qtapp.core.config.recipe import DataSpec, QuantRecipe
    from qtapp.core.run.session import QuantSession

    return QuantSession(demo_loaded, QuantRecipe(model="demo", calibration=DataSpec(batches=4)))


@pytest.fixture(scope="session")
def demo_quantized(demo_loaded):
    """A demo session quantized once (static FX, fbgemm) and shared by read-only tests."""
    from qtapp.core.base.progress import drive
    from qtapp.core.config.recipe import QuantRecipe
    from qtapp.core.run.session import QuantSession

    session = QuantSession(demo_loaded, QuantRecipe(model="demo"))
    drive(session.quantize())
    return session



@pytest.fixture(scope="session")
def cli():
    """qtapp-cli's main(argv) in this process: cli(argv) -> (exit code, stdout, stderr)."""
    import contextlib
    import io

    from qtapp.cli import main

    def run(argv) -> tuple[int, str, str]:
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = main([str(a) for a in argv])
            except SystemExit as exc:  # argparse's own exits
                code = exc.code
        return code, out.getvalue(), err.getvalue()

    return run
