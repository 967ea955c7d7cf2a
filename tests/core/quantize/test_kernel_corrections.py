"""Known int8 kernel defects are corrected by default and said; a point whose kernel cannot be corrected
can still be kept float (a rewrite on the converted copy). The model: conv -> PReLU blocks, every slope
below 1 (MTCNN's shape), where torch's quantized::prelu rounds the positive side's 1.0 with the slopes'
parameters and shrinks every positive activation (1.1 dB before the correction, 19.5 dB after)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from qtapp.core.base.progress import drive
from qtapp.core.config.recipe import DataSpec, QatSpec, QuantRecipe
from qtapp.core.run.session import QuantSession

pytestmark = pytest.mark.filterwarnings(r"ignore:.*torch\.jit\..*deprecated:FutureWarning")

SPEC = f"{Path(__file__).resolve().parents[2] / 'fixtures' / 'prelu_net.py'}:build"
PRELUS = ["body.1", "body.4", "body.7", "act"]


def is_int8(module) -> bool:
    return type(module).__module__.startswith("torch.ao.nn.quantized") and type(module).__name__ == "PReLU"


def session(**recipe) -> QuantSession:
    return drive(QuantSession.open(QuantRecipe(model=SPEC, calibration=DataSpec(batches=4), **recipe)))


@pytest.mark.parametrize("engine", ["fbgemm", "x86", "qnnpack"])
def test_int8_prelu_computes_what_float_does_by_default(engine):
    s = session(engine=engine)
    result = drive(s.quantize())
    assert result.output.sqnr_db > 15  # 1.1 dB with the slopes' own range (every positive activation shrank)
    by_name = {p.name: p for p in result.layers}
    for name in PRELUS:
        assert by_name[name].quantized and not any(d.code == "kernel-mismatch" for d in by_name[name].diagnosis)
    assert [c["op"] for c in result.corrections] == ["PReLU"] and result.corrections[0]["points"] == PRELUS
    assert is_int8(dict(result.quantized_model.named_modules())["act"])


def test_qat_gets_the_same_correction():
    s = session(method="qat", qat=QatSpec(epochs=1))
    result = drive(s.quantize())
    assert result.output.sqnr_db > 15 and result.corrections[0]["points"] == PRELUS


def test_a_prelu_can_be_kept_float_after_one_calibration():
    s = session()
    first = drive(s.quantize())
    assert {"body.1", "act"} <= set(s.inventory.heads)  # toggles, though they hold no weights to quantize
    s.inventory.set_float_layers(["body.1", "act"])
    second = drive(s.quantize())
    assert s.calibrated is not None and second.float_layers == ("body.1", "act")
    modules = dict(second.quantized_model.named_modules())
    assert type(modules["body.1"]).__name__ == "FloatPReLU" and is_int8(modules["body.4"])
    x = torch.randn(4, 3, 24, 24)
    with torch.no_grad():  # the float island computes float PReLU on the dequantized conv output
        out = second.quantized_model(x)[0]
    assert torch.isfinite(out).all()
    assert second.output.sqnr_db >= first.output.sqnr_db - 1
    assert second.corrections[0]["points"] == ["body.4", "body.7"]
    by_name = {p.name: p for p in second.layers}
    assert by_name["act"].kept_float and not by_name["act"].quantized
