"""graph.pt2 (deploy/pt2.py): the float model as torch.export sees it, or one line saying why it cannot be."""

from __future__ import annotations

import importlib.util
import io
from pathlib import Path

import torch

from qtapp.core.deploy.pt2 import export_float_graph, pt2_bytes

FIXTURE = Path(__file__).resolve().parents[2] / "fixtures" / "graph_models.py"


def _build(kind: str):
    spec = importlib.util.spec_from_file_location("graph_models_for_deploy", FIXTURE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.build(kind)


def test_the_float_graph_saves_and_loads_back_with_the_model_s_weights():
    model = _build("residual")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    program, why = export_float_graph(model, (torch.randn(1, 3, 8, 8),))
    assert why == "" and program is not None
    loaded = torch.export.load(io.BytesIO(pt2_bytes(program)))
    x = torch.randn(2, 3, 8, 8)
    with torch.no_grad():
        assert torch.allclose(loaded.module()(x[:1]), model(x[:1]), atol=1e-6)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # traced, not changed


def test_a_model_torch_export_cannot_capture_gets_no_graph_and_one_line_why():
    program, why = export_float_graph(_build("data_dependent"), (torch.randn(1, 16),))
    assert program is None
    assert why.startswith("torch.export cannot capture this model (") and "\n" not in why
