"""The graph job (run/graphing.py) on a real session: the inventory's fusion groups and absorbed ops put each
point's figures on the node producing its value, the files land in the folder and name real node ids, and a
model torch.export cannot capture gets no files and a reason."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from qtapp.core.base.progress import drive
from qtapp.core.config.recipe import DataSpec, QuantRecipe
from qtapp.core.report.graph import GRAPH_ID
from qtapp.core.run.graphing import GRAPH_FILE, folded_points, graph_request, write_graph
from qtapp.core.run.session import QuantSession

SPEC = f"{Path(__file__).resolve().parents[2] / 'fixtures' / 'graph_models.py'}:build"


def _analysed(kind: str, **recipe) -> QuantSession:
    session = drive(QuantSession.open(QuantRecipe(model=SPEC, kwargs={"kind": kind},
                                                  calibration=DataSpec(source="random", batches=2), **recipe)))
    drive(session.quantize())
    return session


def test_the_graph_job_writes_the_graph_and_node_data_on_its_real_node_ids(tmp_path):
    session = _analysed("residual")
    assert folded_points(session.inventory) == {"stem.0": ("stem.0", "stem.1", "stem.2"), "/add": ("relu",),
                                                "/mul": ("act",)}
    files = drive(write_graph(graph_request(session, tmp_path / "g")))
    assert files.written == (GRAPH_FILE, "node_data.json", "node_data_accumulated.json", "node_data_diagnosis.json")
    assert sorted(p.name for p in (tmp_path / "g").iterdir()) == sorted(files.written)
    program = torch.export.load(tmp_path / "g" / GRAPH_FILE)
    ids = {n.name for n in program.graph.nodes}
    local = json.loads((tmp_path / "g" / "node_data.json").read_text())[GRAPH_ID]["results"]
    assert set(local) <= ids and len(local) == len(session.result.layers) == 8
    on = {entry["point"]: node for node, entry in local.items()}
    assert on["stem.0"] == "relu" and on["/add"] == "relu_1" and on["/mul"] == "relu_3"
    worst = min(session.result.layers, key=lambda p: p.local_sqnr_db)
    assert files.overlay.worst[:2] == (worst.name, on[worst.name]) and local[on[worst.name]]["bgColor"] == "#d62728"
    args = files.model_explorer_args()
    assert args[0] == str(tmp_path / "g" / GRAPH_FILE) and args[1].endswith("/node_data.json")  # it colours the graph


def test_a_model_torch_export_cannot_capture_gets_no_files_and_the_reason(tmp_path):
    session = _analysed("data_dependent", method="dynamic")
    files = drive(write_graph(graph_request(session, tmp_path / "g")))
    assert files.written == () and files.overlay is None and not (tmp_path / "g").exists()
    assert files.summary().startswith("no graph.pt2 written: torch.export cannot capture this model (")
