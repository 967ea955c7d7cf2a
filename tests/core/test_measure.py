"""Latency measurement: medians of interleaved runs, and the machine's other load recorded."""

import sys

import pytest
import torch

from qtapp.core.measure import measure_latency
from qtapp.core.progress import drive


def test_latency_records_runs_threads_and_other_load():
    fast = torch.nn.Linear(8, 8).eval()
    slow = torch.nn.Sequential(*[torch.nn.Linear(256, 256) for _ in range(30)]).eval()
    example = (torch.randn(1, 8),)
    lat = drive(measure_latency(fast, torch.nn.Sequential(torch.nn.Linear(8, 256), slow).eval(), example,
                                min_runs=5, max_runs=10))
    assert lat.runs >= 5 and lat.threads == torch.get_num_threads()
    assert lat.quantized_ms > lat.float_ms  # the "quantized" side here is much bigger: must be slower
    if sys.platform.startswith("linux"):
        assert lat.other_load is not None and lat.other_load >= 0.0
    else:
        pytest.skip("other-load accounting reads /proc/stat")
