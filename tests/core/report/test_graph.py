"""The error on the graph (report/graph.py): each point's figures on the node that produces its value in the
float model's torch.export graph, as Model Explorer's node data, with the worst point the reddest node."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch

from qtapp.core.analysis.diagnosis import Finding
from qtapp.core.analysis.point_result import PointResult
from qtapp.core.report.graph import (
    ACCUMULATED_FILE,
    DIAGNOSIS_FILE,
    GRAPH_ID,
    LOCAL_FILE,
    colour_at,
    overlay,
    place_points,
)

FIXTURE = Path(__file__).resolve().parents[2] / "fixtures" / "graph_models.py"
# What the inventory folds into the residual model's points (run.graphing.folded_points; checked on the real
# inventory in tests/core/run/test_graphing.py): the stem's conv+bn+relu group, the add's functional ReLU, the
# mul's ReLU module (its second call).
FOLDED = {"stem.0": ("stem.0", "stem.1", "stem.2"), "/add": ("relu",), "/mul": ("act",)}
OUTLIER = Finding("outlier-range", "outliers set the range: 0.1% of values use 9 of 256 levels", {})


def _point(name, kind, op, parent, local, diagnosis=()) -> PointResult:
    return PointResult(name, kind, op, parent, op, True, "int8", local - 1.5, local, None, diagnosis=diagnosis)


POINTS = [_point("input:x", "input", "input", "", 45.0), _point("stem.0", "module", "ConvReLU2d", "stem.0", 39.0),
          _point("branch", "module", "Conv2d", "branch", 34.0), _point("/add", "op", "add", "", 33.7),
          _point("act", "module", "ReLU", "act", 36.0), _point("/mul", "op", "mul", "", 35.0),
          _point("/mean", "op", "mean", "", 28.5, (OUTLIER,)), _point("head", "module", "Linear", "head", 41.0)]


@pytest.fixture(scope="module")
def graph_nodes():
    spec = importlib.util.spec_from_file_location("graph_models_for_report", FIXTURE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    program = torch.export.export(module.build("residual"), (torch.randn(1, 3, 8, 8),))
    return list(program.graph.nodes)


def _redness(colour: str) -> int:
    r, g = int(colour[1:3], 16), int(colour[3:5], 16)
    return r - g


def test_each_point_goes_on_the_node_that_produces_its_value(graph_nodes):
    where = place_points(POINTS, graph_nodes, FOLDED)
    assert where == {"input:x": "x", "stem.0": "relu", "branch": "conv2d_1", "/add": "relu_1", "act": "relu_2",
                     "/mul": "relu_3", "/mean": "mean", "head": "linear"}
    by_name = {n.name: n for n in graph_nodes}
    assert [str(by_name[n].target) for n in ("relu", "relu_1", "relu_3")] == ["aten.relu.default"] * 3
    # Without its fusion group the stem's point would sit on its conv, whose output the int8 model never has.
    assert place_points(POINTS, graph_nodes)["stem.0"] == "conv2d"


def test_the_worst_point_gets_the_lowest_value_and_the_reddest_colour(graph_nodes):
    found = overlay(POINTS, graph_nodes, FOLDED)
    assert found.worst == ("/mean", "mean", 28.5)
    results = found.files[LOCAL_FILE][GRAPH_ID]["results"]
    assert results["mean"]["value"] == min(r["value"] for r in results.values())
    assert results["mean"]["bgColor"] == colour_at(0.0) == "#d62728"
    assert results["x"]["bgColor"] == colour_at(1.0) == "#2ca02c"  # the best point: green
    others = [r["bgColor"] for node, r in results.items() if node != "mean"]
    assert max(_redness(c) for c in others) < _redness(results["mean"]["bgColor"])
    # redder as the figure falls: the colours keep the figures' order
    ranked = sorted(results.values(), key=lambda r: r["value"])
    assert [_redness(r["bgColor"]) for r in ranked] == sorted((_redness(r["bgColor"]) for r in ranked), reverse=True)


def test_the_nodes_of_a_point_carry_its_figures_and_diagnosis_and_no_other_node_does(graph_nodes):
    files = overlay(POINTS, graph_nodes, FOLDED).files
    local = files[LOCAL_FILE][GRAPH_ID]["results"]
    assert local["relu"] == {"value": 39.0, "bgColor": local["relu"]["bgColor"], "point": "stem.0",
                             "accumulated_sqnr_db": 37.5, "diagnosis": "no worse than the rest"}
    assert local["mean"]["diagnosis"] == OUTLIER.text
    assert set(local) == {"x", "relu", "conv2d_1", "relu_1", "relu_2", "relu_3", "mean", "linear"}
    assert "conv2d" not in local and "batch_norm" not in local  # folded into the stem's point: no figure of their own
    accumulated = files[ACCUMULATED_FILE][GRAPH_ID]["results"]
    assert accumulated["mean"] == {"value": 27.0, "bgColor": "#d62728"}
    diagnosis = files[DIAGNOSIS_FILE][GRAPH_ID]["results"]
    assert diagnosis["mean"] == {"value": f"/mean: {OUTLIER.text}", "bgColor": "#d62728"}
    assert diagnosis["relu"] == {"value": "stem.0: no worse than the rest"}


def test_the_files_are_model_explorer_node_data(graph_nodes):
    files = overlay(POINTS, graph_nodes, FOLDED).files
    assert set(files) == {LOCAL_FILE, ACCUMULATED_FILE, DIAGNOSIS_FILE}
    for data in files.values():
        parsed = json.loads(json.dumps(data))
        assert list(parsed) == ["graph"]  # keyed by graph id; Model Explorer names a .pt2's one graph "graph"
        assert parsed["graph"]["name"] and parsed["graph"]["results"]
        assert set(parsed["graph"]["results"]) <= {n.name for n in graph_nodes}
    stops = [g["stop"] for g in files[LOCAL_FILE][GRAPH_ID]["gradient"]]
    assert stops[0] == 0 and stops[-1] == 1  # Model Explorer needs both ends


def test_a_point_the_graph_does_not_have_is_listed_not_placed(graph_nodes):
    found = overlay([*POINTS, _point("gone", "module", "Conv2d", "gone", 10.0)], graph_nodes, FOLDED)
    assert found.unplaced == ("gone",) and "gone" not in found.nodes
    assert found.worst[0] == "/mean"  # the worst of the points on the graph
    assert found.nodes_with_data == 8


def test_points_with_one_figure_still_get_a_colour(graph_nodes):
    same = [_point(p.name, p.kind, p.op, p.parent, 30.0) for p in POINTS]
    results = overlay(same, graph_nodes, FOLDED).files[LOCAL_FILE][GRAPH_ID]["results"]
    assert {r["bgColor"] for r in results.values()} == {"#d62728"}  # all equally the worst, no 0/0
