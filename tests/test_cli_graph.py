"""analyze --graph: graph.pt2 and Model Explorer's node data beside report.json, on the graph's real node ids;
a model torch.export cannot capture still finishes its analysis, with one line saying why there is no graph."""

from __future__ import annotations

import json
from pathlib import Path

import torch

FIXTURE_SPEC = f"{Path(__file__).resolve().parent / 'fixtures' / 'graph_models.py'}:build"


def test_analyze_graph_writes_the_graph_and_its_node_data_on_real_node_ids(tmp_path, cli):
    out = tmp_path / "a"
    code, stdout, stderr = cli(["analyze", "demo", "--batches", "2", "--out", out, "--graph"])
    assert code == 0, stderr
    assert sorted(p.name for p in out.iterdir()) == ["graph.pt2", "node_data.json", "node_data_accumulated.json",
                                                     "node_data_diagnosis.json", "recipe.json", "report.json"]
    program = torch.export.load(out / "graph.pt2")
    ids = {n.name for n in program.graph.nodes}
    local = json.loads((out / "node_data.json").read_text())["graph"]["results"]
    assert local and set(local) <= ids
    for name in ("node_data_accumulated.json", "node_data_diagnosis.json"):
        assert set(json.loads((out / name).read_text())["graph"]["results"]) <= ids
    layers = json.loads((out / "report.json").read_text())["layers"]
    assert sorted(entry["point"] for entry in local.values()) == sorted(p["name"] for p in layers)
    worst = min(layers, key=lambda p: p["local_sqnr_db"])
    node = next(n for n, entry in local.items() if entry["point"] == worst["name"])
    assert local[node]["bgColor"] == "#d62728" and local[node]["value"] == round(worst["local_sqnr_db"], 2)
    on = {entry["point"]: n for n, entry in local.items()}
    assert on["block1.0"] == "relu" and on["fc1"] == "relu_3"  # conv+bn+relu and linear+relu: after the ReLU
    assert f"wrote       {out / 'graph.pt2'}, node_data.json" in stdout
    assert f"worst {worst['name']} {worst['local_sqnr_db']:.1f} dB on node {node} (red)" in stdout
    assert f"model-explorer {out / 'graph.pt2'} --node_data_paths=" in stdout


def test_analyze_graph_of_a_model_torch_export_cannot_capture_still_finishes(tmp_path, cli):
    out = tmp_path / "u"
    code, stdout, stderr = cli(["analyze", FIXTURE_SPEC, "--kwargs", '{"kind": "data_dependent"}', "--method", "dynamic",
                                "--batches", "2", "--out", out, "--graph"])
    assert code == 0, stderr
    assert sorted(p.name for p in out.iterdir()) == ["recipe.json", "report.json"]
    said = [line for line in stdout.splitlines() if "graph.pt2" in line]
    assert len(said) == 1 and said[0].strip().startswith("graph       no graph.pt2 written: torch.export cannot capture")


def test_analyze_graph_needs_an_output_folder(cli):
    code, _, stderr = cli(["analyze", "demo", "--graph"])
    assert code == 2 and "--graph writes graph.pt2 and node_data.json into the result folder" in stderr
