"""Latency of the files that ship: TorchScript timed in a separate process, interleaved, with the
thread count and the machine's other load recorded."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

pytestmark = pytest.mark.filterwarnings(r"ignore:.*torch\.jit\..*deprecated:FutureWarning")

from qtapp.core.base.errors import Cancelled
from qtapp.core.base.progress import CancelToken, drive
from qtapp.core.deploy.measure import measure_files, measure_many


@pytest.fixture
def two_files(tmp_path):
    fast = torch.jit.script(torch.nn.Linear(8, 8).eval())
    slow = torch.jit.script(torch.nn.Sequential(torch.nn.Linear(8, 256),
                                                *[torch.nn.Linear(256, 256) for _ in range(30)]).eval())
    paths = tmp_path / "fast.pt", tmp_path / "slow.pt"
    torch.jit.save(fast, str(paths[0]))
    torch.jit.save(slow, str(paths[1]))
    return paths


def test_several_int8_files_are_timed_in_one_process_each_with_its_own_figure(two_files):
    fast, slow = two_files
    lats = drive(measure_many(fast, [slow, fast, slow], (torch.randn(1, 8),), threads=1, min_runs=5, max_runs=10))
    assert len(lats) == 3 and len({lat.runs for lat in lats}) == 1  # interleaved: the same rounds for each
    assert lats[0].quantized_ms > 3 * lats[1].quantized_ms and lats[2].quantized_ms > 3 * lats[1].quantized_ms
    assert all(lat.float_ms == lats[0].float_ms for lat in lats)  # one float file, timed once per round


def test_files_are_timed_in_another_process_with_the_threads_asked(two_files):
    records = []
    lat = drive(measure_files(*two_files, (torch.randn(1, 8),), threads=1, min_runs=5, max_runs=10), records.append)
    assert lat.runs >= 5 and lat.threads == 1
    assert lat.quantized_ms > lat.float_ms  # the second file is much bigger: must be slower
    assert lat.other_load is not None and lat.other_load >= 0.0
    # time left comes from the pace of the timed rounds, not from the process start-up; the first batch of
    # timed rounds gives no pace yet (it read "1/50, ~0 s left")
    timed = [r for r in records if r.done >= 1]
    assert timed[0].eta_s is None
    assert all(r.eta_s is None or 0 < r.eta_s < 10 for r in timed[1:-1])
    assert records[-1].done == records[-1].total <= 10  # the bar ends full, at the runs made (not at max_runs)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="other-load accounting reads /proc/stat")
def test_a_busy_machine_is_recorded(two_files):
    hog = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        lat = drive(measure_files(*two_files, (torch.randn(1, 8),), threads=1, min_runs=10, max_runs=40, budget_s=2))
    finally:
        hog.kill()
        hog.wait()
    assert lat.other_load > 0.5  # the busy loop kept about one core busy


def test_cancel_stops_the_timing_process(two_files):
    cancel = CancelToken()

    def on_progress(p):
        if p.done >= 2:
            cancel.cancel()

    with pytest.raises(Cancelled):
        drive(measure_files(*two_files, (torch.randn(1, 8),), min_runs=40, max_runs=40, budget_s=60, cancel=cancel),
              on_progress)


def test_rounds_reach_the_parent_in_batches(two_files):
    """One line per round of a tiny model kept the parent busy reading them (measured as other load)."""
    records = []
    lat = drive(measure_files(two_files[0], two_files[0], (torch.randn(1, 8),), threads=1, min_runs=5, max_runs=10),
                records.append)
    assert lat.runs > 200 and len(records) < lat.runs / 10
    assert records[-1].message == f"{lat.runs} runs in a separate process"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="other-load accounting reads /proc/stat")
def test_threads_beyond_the_free_cores_are_not_used_and_the_note_says_so(two_files):
    """On 2 cores with one kept busy, 2 threads timed the demo at 76 ms where 1 thread takes 0.2 ms (issue
    19, 1): threads that outnumber free cores wait on each other at every op. The worker times on the
    cores left free, and the report says so."""
    import os

    from qtapp.core.config.recipe import QuantRecipe
    from qtapp.core.report.notes import notes
    from qtapp.core.report.results import RunResult

    cores = os.cpu_count() or 1
    hogs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(cores - 1)]
    try:
        lat = drive(measure_files(*two_files, (torch.randn(1, 8),), threads=cores, min_runs=5, max_runs=10))
    finally:
        for hog in hogs:
            hog.kill()
            hog.wait()
    assert lat.threads_asked == cores and lat.threads < cores
    result = RunResult(recipe=QuantRecipe(model="demo"), model="demo", mode="fx", input="1x8", calibration=None,
                       evaluation=None, latency=lat)
    said = [n.text for n in notes(result) if n.code == "fewer-threads"]
    assert said and said[0].startswith(f"the run's latency was timed on {lat.threads} thread(s), not {cores}")


def test_files_timed_on_fewer_threads_are_said_in_one_note():
    """The run's latency and each exported file timed on 1 thread of 2 made one note each (five notes for one
    busy core with the busy-machine ones); one note names them all."""
    from qtapp.core.config.recipe import QuantRecipe
    from qtapp.core.deploy.export import ExportResult
    from qtapp.core.deploy.measure import Latency
    from qtapp.core.report.notes import notes
    from qtapp.core.report.results import RunResult

    lat = {fmt: Latency(1.0, 0.5, 10, 1, 0.0, fmt, threads_asked=2) for fmt in ("pt", "ptl")}
    exports = tuple(ExportResult(fmt, f"model.{fmt}", 10, True, 0.0, latency=lat[fmt]) for fmt in ("pt", "ptl"))
    result = RunResult(recipe=QuantRecipe(model="demo"), model="demo", mode="fx", input="1x8", calibration=None,
                       evaluation=None, latency=lat["pt"], exports=exports)
    said = [n.text for n in notes(result) if n.code == "fewer-threads"]
    assert len(said) == 1 and said[0].startswith("the run's latency, .pt, .ptl were timed on 1 thread(s), not 2")


# Runs latency_worker.main on a spec, then reads ExecuTorch's own threadpool in the same process: the count
# the worker reports is compared with the pool the .pte actually ran on.
_WORKER_THEN_POOL = """
import sys
from qtapp.core.deploy import latency_worker
latency_worker.main([sys.argv[1]])
from executorch.extension.pybindings.portable_lib import _threadpool_get_thread_count
sys.stderr.write(f"POOL {_threadpool_get_thread_count()}\\n")
"""


def test_a_pte_is_timed_on_the_threads_the_worker_reports(tmp_path):
    """ExecuTorch's threadpool ignores torch.set_num_threads: it held one thread per core while the worker
    said the .pte was timed on 1 thread. The worker sizes it before loading and reports the pool's size."""
    import json

    pytest.importorskip("executorch")
    from qtapp.core.deploy.executorch import pte_of
    from qtapp.core.deploy.measure import worker_env

    example = (torch.randn(1, 8),)
    pte = tmp_path / "m.pte"
    pte.write_bytes(pte_of(torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU()).eval(), example).data)
    torch.save(list(example), tmp_path / "inputs.pt")
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps({"float": str(pte), "quantized": str(pte), "inputs": str(tmp_path / "inputs.pt"),
                                "threads": 1, "warmup": 1, "min_runs": 3, "max_runs": 3, "budget_s": 0.1,
                                "kind": "pte"}))
    done = subprocess.run([sys.executable, "-c", _WORKER_THEN_POOL, str(spec)], capture_output=True, text=True,
                          env=worker_env(), cwd=tmp_path, timeout=120)
    assert done.returncode == 0, done.stderr[-500:]
    reported = json.loads(done.stdout.strip().splitlines()[-1])["threads"]
    pool = int(next(line for line in done.stderr.splitlines() if line.startswith("POOL ")).split()[1])
    assert reported == pool == 1
