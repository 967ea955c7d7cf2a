"""deploy/pt2.py: graph.pt2, the float model as torch.export sees it (or one line saying why it cannot be),
and the .pt2 export format of a torchao run (refused, saying why, for the other backends)."""

from __future__ import annotations

import importlib.util
import io
from pathlib import Path

import pytest
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


TOKEN_ENCODER = f"{Path(__file__).resolve().parents[2] / 'fixtures' / 'token_encoder.py'}:build"


def _session(backend: str, method: str, **changes):
    from qtapp.core.base.progress import drive
    from qtapp.core.config.recipe import QuantRecipe
    from qtapp.core.run.session import QuantSession

    recipe = QuantRecipe(model=TOKEN_ENCODER, input_shape="1,16", input_dtype="int64", backend=backend, method=method,
                         **changes)
    return drive(QuantSession.open(recipe, trust=True))


def test_a_torchao_run_exports_a_verified_pt2_timed_against_float_s(tmp_path):
    """`.pt2` (torch.export.save) for torchao runs: loaded back with torch.export.load, it is the in-memory
    model exactly; its latency comes from the worker, against the float model's own .pt2."""
    import os

    pytest.importorskip("torchao")
    from qtapp.core.base.progress import drive
    from qtapp.core.deploy.measure import measure_files
    from qtapp.core.deploy.pt2 import pt2_file
    from qtapp.core.run.exporting import export

    s = _session("torchao", "dynamic", weight_bits=4)
    s.adopt_result(drive(s.quantize()))
    done = drive(export(s.export_request(tmp_path, ["pt2"])))
    (pt2,) = done.exports
    path = tmp_path / "model.pt2"
    assert pt2.format == "pt2" and pt2.path == str(path)
    assert pt2.verified and pt2.max_abs_diff == 0.0 and "identical to the in-memory model" in pt2.notes[-1]
    assert pt2.bytes == os.path.getsize(path)
    assert pt2.sqnr_vs_float_db is not None and pt2.sqnr_vs_float_db > 15  # 4-bit weights: far from exact
    loaded = torch.export.load(str(path))
    assert any(type(p).__name__ == "IntxUnpackedToInt8Tensor" for p in loaded.state_dict.values())
    example = s.loaded.input_spec.example(batch=1)
    float_path = tmp_path / "float.pt2"
    float_path.write_bytes(pt2_file(s.loaded.module, example))
    assert pt2.bytes < 0.6 * os.path.getsize(float_path)  # int8 values (int4 unpacked) against float32
    lat = drive(measure_files(float_path, path, example, threads=1, min_runs=3, max_runs=5, budget_s=0.5,
                              kind="pt2"))
    assert lat.format == "pt2" and lat.runs >= 3 and lat.float_ms > 0 and lat.quantized_ms > 0


@pytest.mark.parametrize("backend, method, says", [
    ("torch.ao", "dynamic", "cannot capture torch.ao's packed int8 weights"),
    ("torch.ao", "static", "cannot capture torch.ao's packed int8 weights"),
    ("pt2e", "static", "PT2E reference graph"),
])
def test_pt2_is_refused_up_front_where_it_cannot_ship(backend, method, says):
    from qtapp.core.base.errors import UsageError

    s = _session(backend, method)
    with pytest.raises(UsageError, match=says):
        s.check_export_formats(["pt2"])
    assert says in s.unavailable_formats()["pt2"]
