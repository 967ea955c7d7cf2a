"""Issue 20: torchao's quantize_ backend. 4- and 8-bit weights per Linear and Embedding layer, with int8
dynamic activations (shipped as an XNNPACK .pte) or weight-only; the points view, a search to a size budget
that forces a mix of bits, and the refusals."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("torchao")

from qtapp.core.analysis.metrics import Target  # noqa: E402
from qtapp.core.base.errors import UsageError  # noqa: E402
from qtapp.core.base.progress import drive  # noqa: E402
from qtapp.core.config.recipe import QuantRecipe  # noqa: E402
from qtapp.core.run import jobs  # noqa: E402
from qtapp.core.run.session import QuantSession  # noqa: E402
from qtapp.core.tune.search import Budget  # noqa: E402

SPEC = f"{Path(__file__).resolve().parents[2] / 'fixtures' / 'token_encoder.py'}:build"
LAYERS = ["emb", "ff1", "ff2", "head"]


def session(**changes) -> QuantSession:
    recipe = QuantRecipe(model=SPEC, input_shape="1,16", input_dtype="int64", backend="torchao",
                         **{"method": "dynamic", **changes})
    return drive(QuantSession.open(recipe, trust=True))


def _bits(qmodel, name) -> int:
    w = qmodel.get_submodule(name).weight
    return int(str(w.target_dtype).removeprefix("torch.int"))


def test_every_linear_and_embedding_gets_the_bits_asked_and_a_layer_its_own():
    s = session(weight_bits=4, overrides={"head": {"weight_bits": 8}})
    assert sorted(s.inventory.heads) == LAYERS  # LayerNorm is no torchao layer
    assert "Linear and Embedding" in s.inventory["norm"].reason
    result = drive(s.quantize())
    q = result.quantized_model
    assert {n: _bits(q, n) for n in LAYERS} == {"emb": 4, "ff1": 4, "ff2": 4, "head": 8}
    assert q.get_submodule("ff1").weight.block_size == (1, 32)  # groups of 32 along a row
    assert s.loaded.module.emb.padding_idx == 0  # the user's model untouched
    by = {p.name: p for p in result.layers}
    for name in LAYERS:  # each layer's own error (alone, on the float input) and in the model
        p = by[name]
        assert p.quantized and p.local_sqnr_db is not None and p.sqnr_db is not None
        assert p.weight.qscheme.startswith(f"int{_bits(q, name)} ")
        assert p.range is None or p.range.samples == 0  # no single activation range to show
    assert by["head"].weight_sqnr_db > by["ff1"].weight_sqnr_db + 15  # 8 bits against 4
    assert 15 < result.output.sqnr_db < 40


def test_a_group_that_does_not_split_a_row_falls_back_to_one_scale_per_channel():
    s = session(weight_bits=4, group_size=64)  # 96 weights per row in ff1 and head; 384 in ff2
    q = drive(s.quantize()).quantized_model
    assert q.get_submodule("ff1").weight.block_size == (1, 96)
    assert q.get_submodule("ff2").weight.block_size == (1, 64)


def test_a_layer_kept_float_stays_float_and_weight_only_runs():
    s = session(weight_bits=8, method="weight-only")
    s.inventory.set_float("ff2")
    result = drive(s.quantize())
    assert not hasattr(result.quantized_model.ff2.weight, "qdata")
    assert {p.name: p.kept_float for p in result.layers}["ff2"]
    assert result.output.sqnr_db > 30


@pytest.mark.parametrize("formats, method, says", [
    (["pt"], "dynamic", "TorchScript cannot hold"),
    (["ptl"], "dynamic", "TorchScript cannot hold"),
    (["onnx"], "dynamic", "torch.onnx has no form"),
    (["pte"], "weight-only", "computes torchao's weight-only Linear layers wrongly"),
])
def test_formats_that_cannot_carry_the_scheme_are_refused_before_any_work(formats, method, says):
    s = session(method=method)
    with pytest.raises(UsageError, match=says):
        s.check_export_formats(formats)


def test_static_quantization_is_not_torchaos():
    from qtapp.core.quantize.registry import graph_mode

    recipe = QuantRecipe(model=SPEC, backend="torchao", method="static")
    with pytest.raises(UsageError, match="not static"):
        graph_mode(recipe, None)


def test_the_pte_is_written_verified_and_smaller_than_8_bit(tmp_path):
    pytest.importorskip("executorch")
    s = session(weight_bits=4)
    result = drive(s.quantize())
    s.adopt_result(result)
    from qtapp.core.run.exporting import export

    done = drive(export(s.export_request(tmp_path, ["pte"])))
    (pte,) = done.exports
    assert pte.verified and pte.sqnr_vs_float_db is not None and pte.sqnr_vs_float_db > 15
    assert pte.bytes == (tmp_path / "model.pte").stat().st_size
    float_bytes = 4 * sum(p.numel() for p in s.loaded.module.parameters())
    assert pte.bytes < 0.3 * float_bytes  # packed 4-bit weights, not one byte a value
    assert "torchao" in pte.quantizer
    # verified against the run's own error, the rule said with its figures
    said = next(n for n in pte.notes if "against the in-memory model it was made from" in n)
    assert "whose own error against float is" in said and "min(30, " in said


def test_the_pte_note_names_the_kernels_the_shipped_program_calls():
    """The edge graph before to_executorch holds torchao.dequantize_affine -> embedding; the program that
    ships calls ExecuTorch's fused quantized_decomposed::embedding_4bit instead."""
    pytest.importorskip("executorch")
    from qtapp.core.deploy.executorch import pte_of

    s = session(weight_bits=4)
    made = pte_of(drive(s.quantize()).quantized_model, s.loaded.input_spec.example(batch=1))
    said = next(n for n in made.notes if n.startswith("not delegated"))
    assert "quantized_decomposed::embedding_4bit" in said
    assert "dequantize_affine" not in said and "embedding," not in said


def test_a_size_budget_forces_a_mix_of_4_and_8_bits():
    s = session(weight_bits=4)
    start = drive(jobs.quantize(s.snapshot(), measure=False))
    all8 = session(weight_bits=8)
    s8 = drive(jobs.quantize(all8.snapshot(), measure=False))
    # a target all-8-bit reaches, and a budget it does not fit: some layers 8-bit, the rest 4
    target = f"sqnr>={min(s8.result.output.sqnr_db - 1, start.result.output.sqnr_db + 8):.1f}"
    # 4-bit weights about 70 kB, 8-bit about 130 kB (the .pte's packing): 0.1 MB fits some layers in 8 bits
    outcome = drive(jobs.tune(s.snapshot(), Target.parse(target), Budget.parse("size<=0.1MB"), measure=False))
    t = outcome.tune
    assert t.best.size_bytes <= 100_000 and t.best.size_bytes > t.start.size_bytes  # within it, and priced
    eight_bit = [st.scored for st in t.steps if any(o.weight_bits == 8 for _n, o in st.scored.config.overrides)]
    assert eight_bit and all(sc.size_bytes > t.start.size_bytes for sc in eight_bit)  # an 8-bit layer costs bytes
    chosen = outcome.tune.best.config
    eight = {n for n, o in chosen.overrides if o.weight_bits == 8}
    assert eight and eight != set(LAYERS) and not chosen.float_points
    assert any(s.phase == "8-bit" for s in outcome.tune.steps)
    assert outcome.quantized.result.recipe.overrides[next(iter(eight))].weight_bits == 8


def test_sensitivity_measures_every_layer_at_each_bit_width():
    from qtapp.core.report.render import report_dict, sensitivity_text

    s = session(weight_bits=4)
    result = drive(jobs.sensitivity(s.snapshot())).result
    sens = result.sensitivity
    assert sens.quantized == "4-bit"
    assert sorted(p.name for p in sens.points) == sorted(LAYERS)
    for p in sens.points:
        at = dict(p.widths)
        assert list(at) == ["4-bit", "8-bit"] and at["4-bit"] == p.only_int8
        assert at["8-bit"] > at["4-bit"] + 10  # 8-bit weights: about 6 dB a bit more
    # each layer float, at 4 and at 8 bits alone, plus every layer 4-bit and every one float
    assert sens.conversions == 3 * len(LAYERS) + 2
    points = report_dict(result)["sensitivity"]["points"]
    assert all(set(p["only_at"]) == {"4-bit", "8-bit"} for p in points)
    text = "\n".join(sensitivity_text(result))
    assert "only it 4-bit" in text and "only it 8-bit" in text and "every toggleable point 4-bit" in text


def test_a_bits_budget_holds_the_mean_bits_and_mixes_widths():
    s = session(weight_bits=4)
    values = {n: s.loaded.module.get_submodule(n).weight.numel() for n in LAYERS}
    total = sum(values.values())
    limit = 6.46  # every layer 8-bit is 8, the embedding and the head 8-bit 5.64, ff1 or ff2 as well 6.82
    outcome = drive(jobs.tune(s.snapshot(), Target.parse("sqnr>=60"), Budget.parse(f"bits<={limit}"),
                              measure=False))
    t = outcome.tune
    chosen = t.best.config
    eight = {n for n, o in chosen.overrides if o.weight_bits == 8}
    assert eight and set(LAYERS) - eight - chosen.float_points  # a mix: some layers 8-bit, some still 4
    width = {n: 32 if n in chosen.float_points else 8 if n in eight else 4 for n in LAYERS}
    expected = sum(width[n] * values[n] for n in LAYERS) / total
    assert t.best.bits == pytest.approx(expected) and t.best.bits <= limit
    assert not t.reached  # 60 dB is out of reach: the best the budget allows
    within = [st.scored for st in t.steps if st.within_budget]
    assert all(sc.bits <= limit for sc in within) and not any(sc.bits <= limit for sc in
                                                              (st.scored for st in t.steps if not st.within_budget))
    assert t.best.score >= max(sc.score for sc in within) - 0.2  # the best within it (0.2 dB: a move's margin)
    assert t.to_json()["chosen"]["mean_weight_bits"] == pytest.approx(expected, abs=1e-3)


def test_a_size_budget_from_8_bit_weights_starts_the_search_at_4_bits():
    s = session(weight_bits=8)
    outcome = drive(jobs.tune(s.snapshot(), Target.parse("sqnr>=60"), Budget.parse("size<=0.1MB"), measure=False))
    t = outcome.tune
    assert any("started from every layer at 4 bits" in n for n in t.notes)
    assert outcome.quantized.result.recipe.weight_bits == 4
    assert t.best.size_bytes <= 100_000
    assert {n for n, o in t.best.config.overrides if o.weight_bits == 8}  # some layers back at 8


def test_a_run_whose_groups_do_not_split_some_rows_says_which_and_what_would():
    from qtapp.core.report.notes import notes

    result = drive(jobs.quantize(session(weight_bits=4, group_size=64).snapshot(), measure=False)).result
    said = [n.text for n in notes(result) if n.code == "group-fallback"]
    assert len(said) == 1
    assert "emb (96 wide), ff1 (96 wide), head (96 wide)" in said[0] and "ff2" not in said[0]
    assert "--group-size 32 splits every row" in said[0]
    grouped = drive(jobs.quantize(session(weight_bits=4).snapshot(), measure=False)).result
    assert not [n for n in notes(grouped) if n.code == "group-fallback"]


@pytest.mark.parametrize("method, bits, ship", [  # 8da4w and its .pte: the tests above
    ("dynamic", 8, "pte"),  # 8da8w: int8 weights per channel
    ("weight-only", 4, "pt2"),  # weight-only: no .pte (XNNPACK computes it wrongly), a .pt2
    ("weight-only", 8, "pt2"),
])
def test_each_scheme_quantizes_every_layer_shows_its_points_and_ships_a_verified_file(tmp_path, method, bits, ship):
    if ship == "pte":
        pytest.importorskip("executorch")
    from qtapp.core.run.exporting import export

    s = session(weight_bits=bits, method=method)
    result = drive(s.quantize())
    q = result.quantized_model
    assert {n: _bits(q, n) for n in LAYERS} == dict.fromkeys(LAYERS, bits)
    # activations: int8 per token (dynamic) or none (weight-only), on the Linear layers
    act = [q.get_submodule(n).weight.activation_quantization for n in ("ff1", "ff2")]
    assert [a is None for a in act] == [method == "weight-only"] * 2
    for p in result.layers:
        if p.name in LAYERS:
            assert p.local_sqnr_db is not None and p.sqnr_db is not None
            assert p.weight.qscheme.startswith(f"int{bits} ")
    assert result.output.sqnr_db > (15 if bits == 4 else 30)
    s.adopt_result(result)
    done = drive(export(s.export_request(tmp_path, [ship])))
    (made,) = done.exports
    assert made.verified and made.bytes == (tmp_path / f"model.{ship}").stat().st_size
