"""torch.ao's int8 kernels against the float op on the SAME int8 input (torch 2.14, FX static mode), and
the app's corrections of the ones that disagree.

The torch tests build each op alone between quantize and dequantize (or a weight-only module), quantize it
with torch's own defaults (`get_default_qconfig_mapping(engine)`, native backend config, as the app's FX
mode does), and compare the int8 op's output with the float op applied to its dequantized int8 input (and
int8 weights), rounded to the int8 output's own scale and zero point: an exact kernel is within one output
step. Each shows the disagreement under torch's defaults where it happens (and agreement on the engines
where it does not): when a torch release fixes a kernel, its test fails and the app's correction can go.

The app tests (`test_app_...`) run THE APP's default (QuantSession, as tests/core/test_kernel_corrections.py
does) on a small model holding the op, and check that its int8 model computes what float does there and
that the report's `corrections` names the points corrected, and only those. They fail without the app's
corrections (qconfigs.KERNEL_CORRECTIONS). benchmarks/kernel_agreement.md has the full table.
"""

from __future__ import annotations

import copy
import math
import sys
import warnings
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from qtapp.core.quantize.observers import NonZeroZeroPointObserver

ENGINES = ["fbgemm", "x86", "qnnpack"]
C = 8
IMG = (C, 10, 10)

pytestmark = pytest.mark.filterwarnings("ignore")


@pytest.fixture(autouse=True)
def _restore_engine():
    before = torch.backends.quantized.engine
    yield
    torch.backends.quantized.engine = before


def _data(shape, n=3, seed=0, scale=1.0):
    gen = torch.Generator().manual_seed(seed)
    return [(torch.randn(4, *shape, generator=gen) * scale,) for _ in range(n)]


def _quantize(model, calib, engine, mapping=None, app_rewrite=False):
    """torch's FX static quantization of `model` for `engine`; with `app_rewrite`, the app's conversion-time
    corrections (torch_ao.kernel_rewrite) applied to the prepared model first, as the app's convert does."""
    from torch.ao.quantization import get_default_qconfig_mapping
    from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx

    from qtapp.core.quantize.torch_ao import kernel_rewrite

    torch.backends.quantized.engine = engine
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        prepared = prepare_fx(copy.deepcopy(model).eval(), mapping or get_default_qconfig_mapping(engine), calib[0])
        with torch.no_grad():
            for xs in calib:
                prepared(*xs)
        if app_rewrite:
            kernel_rewrite(prepared, (), engine)
        return convert_fx(prepared)


def _op_io(qmodel, inputs):
    """(the int8 op's input, its output) for the model's one compute node (its last node that is not a
    quantize, dequantize or attribute), as the converted model ran it."""

    class Recorder(torch.fx.Interpreter):
        seen: list = []

        def run_node(self, n):
            out = super().run_node(n)
            name = getattr(n.target, "__name__", str(n.target))
            if n.op in ("call_module", "call_function", "call_method") and name not in (
                    "quantize_per_tensor", "dequantize", "getattr") and not str(n.target).startswith("_"):
                self.seen.append(([self.env[a] if isinstance(a, torch.fx.Node) else a for a in n.args], out))
            return out

    rec = Recorder(qmodel, garbage_collect_values=False)
    rec.seen = []
    with torch.no_grad():
        rec.run(*inputs)
    args, out = rec.seen[-1]
    return args[0], out


def _steps(out, ref) -> tuple[int, float]:
    """(largest difference in output steps, SQNR in dB) of an int8 output against `ref` (the float op on
    the same int8 input) rounded to that output's own quantization: what an exact kernel returns."""
    ideal = torch.quantize_per_tensor(ref.float(), out.q_scale(), out.q_zero_point(), out.dtype)
    steps = int((out.int_repr().int() - ideal.int_repr().int()).abs().max())
    a, b = ideal.dequantize(), out.dequantize()
    noise = float(((a - b) ** 2).sum())
    return steps, (math.inf if noise == 0 else 10 * math.log10(float((a * a).sum()) / noise))


def _worst(qmodel, tests, reference) -> tuple[int, float]:
    worst, sqnr = 0, math.inf
    for xs in tests:
        x, out = _op_io(qmodel, xs)
        with torch.no_grad():
            s, q = _steps(out, reference(x.dequantize()))
        worst, sqnr = max(worst, s), min(sqnr, q)
    return worst, sqnr


class One(nn.Module):
    def __init__(self, op):
        super().__init__()
        self.op = op

    def forward(self, x):
        return self.op(x)


# -- quantized::prelu ----------------------------------------------------------------------------------

def _prelu(slopes):
    m = nn.PReLU(len(slopes))
    with torch.no_grad():
        m.weight.copy_(torch.tensor(slopes))
    return m


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("slopes", [
    pytest.param([0.05 + 0.07 * i for i in range(C)], id="all-below-1"),  # MTCNN's trained PReLUs
    pytest.param([-0.5 + 0.15 * i for i in range(C)], id="negative-and-below-1"),
    pytest.param([0.25], id="single-default-0.25"),  # nn.PReLU()
])
def test_int8_prelu_scales_positive_inputs_by_the_largest_slope(engine, slopes):
    """quantized::prelu multiplies positive inputs by 1.0 rounded with the slopes' own quantization (quint8,
    min-max over the slopes): with every slope below 1, 1.0 saturates at the largest slope, so positive
    values shrink (75 to 151 steps off, 3 to 7 dB). Correction: observe the slopes over a range that also
    holds 0 and 1 (the app's observers.SlopeObserver): within one step."""
    from torch.ao.quantization import QConfig, get_default_qconfig_mapping

    from qtapp.core.quantize.observers import SlopeObserver

    model = One(_prelu(slopes)).eval()
    calib, tests = _data(IMG), _data(IMG, seed=1)

    def reference(q):
        return lambda x: F.prelu(x, q.op.weight.dequantize())

    default = _quantize(model, calib, engine)
    steps, sqnr = _worst(default, tests, reference(default))
    assert steps >= 50 and sqnr < 10, (steps, sqnr)  # far more than one step: the kernel disagrees

    mapping = get_default_qconfig_mapping(engine)
    mapping.set_object_type(nn.PReLU, QConfig(activation=mapping.global_qconfig.activation, weight=SlopeObserver))
    corrected = _quantize(model, calib, engine, mapping)
    assert _worst(corrected, tests, reference(corrected))[0] <= 1


# -- quantized::conv_transpose on the x86 engine (oneDNN) ---------------------------------------------

def _x86_takes_onednn() -> bool:
    """torch's x86 engine packs a conv for oneDNN instead of FBGEMM when the CPU has AVX512-VNNI (Linux),
    the weight is symmetric (zero point 0), output_padding is 0 and groups <= 100 (should_use_onednn_quant)."""
    try:
        return sys.platform.startswith("linux") and "avx512_vnni" in Path("/proc/cpuinfo").read_text()
    except OSError:
        return False


def _conv_transpose_reference(q):
    m = q.op
    w = m.weight().dequantize()
    return lambda x: F.conv_transpose2d(x, w, m.bias(), m.stride, m.padding, m.output_padding, m.groups, m.dilation)


@pytest.mark.parametrize("engine", ENGINES + ["fbgemm-made, run under x86"])
def test_int8_conv_transpose_on_x86_onednn_computes_garbage(engine):
    """On an AVX512-VNNI CPU the x86 engine runs a ConvTranspose with symmetric weights and no output_padding
    on oneDNN, whose int8 transposed convolution is wrong when a group's in and out channels differ (8 -> 4
    here: about 100 steps off, -3 dB; 8 -> 8 and depthwise agree). torch's default mapping gives every
    engine symmetric per-tensor ConvTranspose weights, and a .pt is repacked under the engine of the process
    that loads it (x86 by default), so an fbgemm-made file is hit too. Correction (the app's, on every
    engine): a weight observer whose zero point is never 0 (observers.NonZeroZeroPointObserver): the FBGEMM
    kernel on every engine, also after reloading."""
    import io

    from torch.ao.quantization import QConfig, get_default_qconfig_mapping

    made_for = engine.split("-")[0]
    model = One(nn.ConvTranspose2d(C, 4, 3, stride=2)).eval()
    calib, tests = _data(IMG), _data(IMG, seed=1)
    q = _quantize(model, calib, made_for)
    if engine.startswith("fbgemm-made"):
        buf = io.BytesIO()
        torch.jit.save(torch.jit.trace(q, tests[0]), buf)
        torch.backends.quantized.engine = "x86"
        buf.seek(0)
        loaded = torch.jit.load(buf)
        with torch.no_grad():
            outs = [(loaded(*xs), model(*xs)) for xs in tests]
        # the file's own output against the float model: garbage under x86 + oneDNN, ~30 dB under FBGEMM
        sqnr = min(10 * math.log10(float((f * f).sum()) / float(((f - o) ** 2).sum())) for o, f in outs)
        assert (sqnr < 5) if _x86_takes_onednn() else (sqnr > 25), sqnr
        return
    steps, sqnr = _worst(q, tests, _conv_transpose_reference(q))
    if made_for == "x86" and _x86_takes_onednn():
        assert steps >= 30 and sqnr < 5, (steps, sqnr)
    else:
        assert steps <= 1, (steps, sqnr)

    mapping = get_default_qconfig_mapping(made_for)
    mapping.set_object_type(nn.ConvTranspose2d, QConfig(activation=mapping.global_qconfig.activation,
                                                          weight=NonZeroZeroPointObserver))
    corrected = _quantize(model, calib, made_for, mapping)
    assert corrected.op.weight().q_zero_point() != 0
    assert _worst(corrected, tests, _conv_transpose_reference(corrected))[0] <= 1


# -- quantized::avg_pool2d on qnnpack ---------------------------------------------------------------

def _ends(qmodel, inputs):
    """(the model's int8 input, its int8 output) for `x -> quantize -> ... -> dequantize`: whatever runs
    between (an int8 op, or the app's float op between a dequantize and a quantize)."""
    gm = qmodel
    env = _values(gm, inputs)
    nodes = list(gm.graph.nodes)
    first = next(n for n in nodes if getattr(n.target, "__name__", "") == "quantize_per_tensor")
    last = next(n for n in nodes if n.op == "output").args[0]  # the final dequantize
    return env[first.name], env[last.args[0].name]


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("pool", [
    pytest.param(lambda: nn.AvgPool2d(3, 2, padding=1, count_include_pad=False), id="count_include_pad=False"),
    pytest.param(lambda: nn.AvgPool2d(2, divisor_override=5), id="divisor_override"),
])
def test_qnnpack_avg_pool_ignores_count_include_pad_and_divisor_override(engine, pool):
    """quantized avg_pool2d on the qnnpack engine (quint8, ceil_mode=False) calls QNNPACK's average pooling,
    which takes neither count_include_pad nor divisor_override: border windows and every window with a
    divisor override are off by 10 to 30 steps (11 to 16 dB; AvgPool1d too, which calls it). fbgemm and x86
    agree. Its qconfig None does not help (the op runs on int8 whatever). Correction (the app's
    torch_ao.kernel_rewrite, on qnnpack): the module swapped for rewrites.FloatAvgPool in the copy about to
    be converted, so it runs in float on the dequantized int8 input, rounded back with the input's range."""
    layer = pool()
    model = One(layer).eval()
    calib, tests = _data(IMG), _data(IMG, seed=1)
    q = _quantize(model, calib, engine)
    steps, sqnr = _worst(q, tests, layer)
    if engine == "qnnpack":
        assert steps >= 5 and sqnr < 20, (steps, sqnr)
    else:
        assert steps <= 1, (steps, sqnr)
    corrected = _quantize(model, calib, engine, app_rewrite=True)
    assert (type(corrected.op).__name__ == "FloatAvgPool") == (engine == "qnnpack")
    for xs in tests:
        x, out = _ends(corrected, xs)
        assert _steps(out, layer(x.dequantize()))[0] <= (0 if engine == "qnnpack" else 1)


# -- quantized::conv_transpose3d on qnnpack -------------------------------------------------------

@pytest.mark.parametrize("engine", ENGINES)
def test_qnnpack_conv_transpose3d_computes_garbage(engine):
    """A ConvTranspose3d quantized for qnnpack computes nothing like the float op on its own int8 input and
    int8 weights (about 200 steps off, -10 dB; qnnpack cannot even unpack 3-D weights). fbgemm agrees, x86
    only off oneDNN (see the ConvTranspose test above). Correction (the app's qconfigs.fx_mapping): keep
    ConvTranspose3d float on qnnpack."""
    from torch.ao.quantization import get_default_qconfig_mapping

    model = One(nn.ConvTranspose3d(C, 4, 3)).eval()
    calib, tests = _data((C, 4, 4, 4)), _data((C, 4, 4, 4), seed=1)
    mapping = get_default_qconfig_mapping(engine)
    if engine == "x86":  # the oneDNN defect is the other test's: take FBGEMM's kernel here
        from torch.ao.quantization import QConfig

        mapping.set_object_type(nn.ConvTranspose3d, QConfig(activation=mapping.global_qconfig.activation,
                                                              weight=NonZeroZeroPointObserver))
    q = _quantize(model, calib, engine, mapping)
    observer = mapping.object_type_qconfigs[nn.ConvTranspose3d].weight()
    observer(model.op.weight)
    scale, zero_point = observer.calculate_qparams()  # the int8 weights convert made (qnnpack cannot unpack them)
    w = torch.quantize_per_tensor(model.op.weight.detach(), float(scale), int(zero_point), torch.qint8).dequantize()
    steps, sqnr = _worst(q, tests, lambda x: F.conv_transpose3d(x, w, model.op.bias))
    if engine == "qnnpack":
        assert steps >= 30 and sqnr < 5, (steps, sqnr)
    else:
        assert steps <= 1, (steps, sqnr)


# -- quantized::embedding_bag_byte ------------------------------------------------------------------

class Bag(nn.Module):
    def __init__(self, mode):
        super().__init__()
        self.bag = nn.EmbeddingBag(50, 16, mode=mode)

    def forward(self, ids, offsets):
        return self.bag(ids, offsets)


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("mode", ["mean", "max", "sum"])
def test_int8_embedding_bag_sums_whatever_its_mode(engine, mode):
    """torch.ao's int8 EmbeddingBag (weight-only, float_qparams_weight_only_qconfig) keeps `mode` but calls
    quantized::embedding_bag_byte with mode 0, and that kernel sums whatever mode it is given: "mean" (the
    default of nn.EmbeddingBag) and "max" return the sum (relative error about 2 to 4). Corrections (the
    app's torch_ao.kernel_rewrite, every engine): mean = the int8 kernel's sum with per-sample weights
    1 / bag size (exact); max: kept float (rewrites.FloatEmbeddingBag)."""
    from torch.ao.quantization import float_qparams_weight_only_qconfig, get_default_qconfig_mapping

    gen = torch.Generator().manual_seed(0)
    batches = [(torch.randint(0, 50, (20,), generator=gen), torch.tensor([0, 5, 9, 15])) for _ in range(3)]
    torch.manual_seed(0)
    model = Bag(mode).eval()
    mapping = get_default_qconfig_mapping(engine).set_object_type(nn.EmbeddingBag, float_qparams_weight_only_qconfig)
    q = _quantize(model, batches, engine, mapping)
    w = q.bag.weight().dequantize()

    def error(module):
        with torch.no_grad():
            return max(float((module(*b) - F.embedding_bag(b[0], w, b[1], mode=mode)).norm()
                             / F.embedding_bag(b[0], w, b[1], mode=mode).norm()) for b in batches)

    corrected = _quantize(model, batches, engine, mapping, app_rewrite=True)
    if mode == "sum":
        assert error(q) < 1e-5 and type(corrected.bag) is type(q.bag)  # agrees: left alone
        return
    assert error(q) > 0.5  # not the bag's mean or max: its sum
    if mode == "mean":
        assert type(corrected.bag) is type(q.bag) and error(corrected) < 1e-5  # int8 rows, their mean
    else:
        assert type(corrected.bag).__name__ == "FloatEmbeddingBag"
        with torch.no_grad():
            assert all(torch.equal(corrected(*b), model(*b)) for b in batches)


def test_bag_mean_weights_make_the_int8_sum_a_mean():
    """rewrites.bag_mean_weights, on 1-D ids with offsets (empty bags, include_last_offset, padding_idx) and
    2-D ids: the int8 kernel's weighted sum is F.embedding_bag's mean over the same int8 rows."""
    import torch.ao.nn.quantized as nnq
    from torch.ao.quantization import float_qparams_weight_only_qconfig

    from qtapp.core.model.rewrites import bag_mean_weights

    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(0, 20, (12,), generator=gen)
    ids[[1, 2, 7]] = 3
    cases = [(ids, torch.tensor([0, 0, 4, 4, 9]), False),  # two empty bags
             (ids, torch.tensor([0, 0, 4, 4, 9, 12]), True),  # the last offset ends the last bag
             (ids.view(3, 4), None, False)]
    for padding_idx in (None, 3):
        for x, offsets, last in cases:
            torch.manual_seed(0)
            bag = nn.EmbeddingBag(20, 8, mode="sum", padding_idx=padding_idx, include_last_offset=last)
            bag.qconfig = float_qparams_weight_only_qconfig
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                qbag = nnq.EmbeddingBag.from_float(bag)
            w = qbag.weight().dequantize()
            got = qbag(x, offsets, bag_mean_weights(x, offsets, -1 if padding_idx is None else padding_idx, last))
            want = F.embedding_bag(x, w, offsets, mode="mean", padding_idx=padding_idx, include_last_offset=last)
            assert torch.allclose(got, want, atol=1e-6), (padding_idx, last, x.dim())


# -- the app's defaults: each finding, quantized by the app ---------------------------------------------

SELF = Path(__file__).resolve()


class ConvTNet(nn.Module):
    """x -> Linear (over the last axis) -> ConvTranspose 8 -> 4 (stride 2; a module or the functional op)
    -> Linear: the ConvTranspose between int8 layers, 1-, 2- or 3-D (no Conv3d: qnnpack cannot unpack its
    int8 weights for the app's weight view)."""

    def __init__(self, dims: int = 2, functional: bool = False) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.dims, self.functional = dims, functional
        self.lin1 = nn.Linear(6, 6)
        self.up = [nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d][dims - 1](C, 4, 3, stride=2)
        self.lin2 = nn.Linear(13, 4)
        self.example_input_shape = (1, C, *[6] * dims)

    def forward(self, x):
        h = self.lin1(x)
        if self.functional:
            d = self.dims
            op = [F.conv_transpose1d, F.conv_transpose2d, F.conv_transpose3d][d - 1]
            h = op(h, self.up.weight, self.up.bias, [2] * d, [0] * d, [0] * d, 1, [1] * d)
        else:
            h = self.up(h)
        return self.lin2(h)


def conv_t_net(dims: int = 2, functional: bool = False) -> ConvTNet:
    return ConvTNet(dims, functional).eval()


class Pools(nn.Module):
    """conv -> AvgPool2d count_include_pad=False -> AvgPool2d divisor_override -> AvgPool2d (plain, padded)
    -> F.avg_pool2d count_include_pad=False -> flatten -> AvgPool1d count_include_pad=False -> F.avg_pool1d
    count_include_pad=False -> Conv1d: the pools share the conv's int8 range."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, C, 3, padding=1)
        self.pad_pool = nn.AvgPool2d(3, 2, padding=1, count_include_pad=False)
        self.div_pool = nn.AvgPool2d(2, divisor_override=3)
        self.plain = nn.AvgPool2d(2, padding=1)
        self.pool1d = nn.AvgPool1d(3, 1, padding=1, count_include_pad=False)
        self.head = nn.Conv1d(C, 4, 1)
        self.example_input_shape = (1, 3, 16, 16)

    def forward(self, x):
        h = self.plain(self.div_pool(self.pad_pool(self.conv(x))))
        h = F.avg_pool2d(h, 3, 1, 1, count_include_pad=False).flatten(2)
        return self.head(F.avg_pool1d(self.pool1d(h), 3, 1, 1, count_include_pad=False))


def pools() -> Pools:
    return Pools().eval()


class Bags(nn.Module):
    """Four EmbeddingBags over the same ids (one bag per row): mean (nn.EmbeddingBag's default), max, sum,
    and mean with a padding_idx, concatenated into a Linear."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.bag_mean = nn.EmbeddingBag(50, 16)
        self.bag_max = nn.EmbeddingBag(50, 16, mode="max")
        self.bag_sum = nn.EmbeddingBag(50, 16, mode="sum")
        self.bag_pad = nn.EmbeddingBag(50, 16, padding_idx=0)
        self.fc = nn.Linear(64, 4)
        self.example_input_shape = (1, 6)

    def forward(self, ids):
        return self.fc(torch.cat([self.bag_mean(ids), self.bag_max(ids), self.bag_sum(ids), self.bag_pad(ids)], 1))


def bags() -> Bags:
    return Bags().eval()


def _app(factory: str, engine: str, **recipe):
    """(session, result) of the app's default quantization of this file's `factory` for `engine`."""
    from qtapp.core.base.progress import drive
    from qtapp.core.config.recipe import DataSpec, QuantRecipe
    from qtapp.core.run.session import QuantSession

    s = drive(QuantSession.open(QuantRecipe(model=f"{SELF}:{factory}", engine=engine,
                                            calibration=DataSpec(batches=2, batch_size=8),
                                            evaluation=DataSpec(batches=1, batch_size=16), **recipe)))
    return s, drive(s.quantize())


def _corrections(result) -> list[tuple[str, list[str]]]:
    return [(c["op"], c["points"]) for c in result.corrections]


def _what(result, op: str, point: str) -> str:
    return next(c["what"] for c in result.corrections if c["op"] == op and point in c["points"])


def _values(qmodel, inputs) -> dict:
    """{node name: its value} of one run of a converted GraphModule."""
    env = {}

    class Recorder(torch.fx.Interpreter):
        def run_node(self, n):
            env[n.name] = super().run_node(n)
            return env[n.name]

    with torch.no_grad():
        Recorder(qmodel).run(*inputs)
    return env


def _sqnr(ref, out) -> float:
    return 10 * math.log10(float((ref * ref).sum()) / max(float(((ref - out) ** 2).sum()), 1e-30))


@pytest.mark.parametrize("engine,dims,functional", [
    ("fbgemm", 2, False), ("x86", 2, False), ("qnnpack", 2, False), ("x86", 1, False), ("x86", 3, False),
    ("x86", 2, True),
])
def test_app_conv_transpose_computes_what_float_does(engine, dims, functional):
    """The app gives every ConvTranspose (module or functional) weights with a zero point other than 0, so
    no engine sends it to oneDNN's wrong int8 transposed conv (x86 on this AVX512-VNNI CPU: 2 -> 28 to 33 dB
    with the app's mapping before); fbgemm and qnnpack keep their figures. The report names it."""
    s, result = _app("conv_t_net", engine, kwargs={"dims": dims, "functional": functional})
    assert result.output.sqnr_db > 24, result.output.sqnr_db
    op = f"conv_transpose{dims}d" if functional else f"ConvTranspose{dims}d"
    point = f"/{op}" if functional else "up"
    assert _corrections(result) == [(op, [point])] and "zero point other than 0" in _what(result, op, point)
    if not functional:
        assert result.quantized_model.up.weight().q_zero_point() != 0


def test_app_conv_transpose_file_made_on_fbgemm_computes_right_under_x86():
    """TorchScript repacks conv weights under the engine of the process that loads the file, and x86 is
    torch's default engine: an fbgemm-made file with symmetric ConvTranspose weights computed garbage in a
    fresh process (2 dB). With the app's weights it takes FBGEMM's kernel there too."""
    import io

    from qtapp.core.deploy.measure import to_torchscript

    s, result = _app("conv_t_net", "fbgemm")
    x = s.loaded.input_spec.example()[0].repeat(4, *[1] * 3)
    torch.manual_seed(1)
    x = torch.randn_like(x)
    scripted, _ = to_torchscript(result.quantized_model, (x,))
    buf = io.BytesIO()
    torch.jit.save(scripted, buf)
    torch.backends.quantized.engine = "x86"
    buf.seek(0)
    loaded = torch.jit.load(buf)
    with torch.no_grad():
        assert _sqnr(s.loaded.module(x), loaded(x)) > 24


@pytest.mark.parametrize("functional", [False, True], ids=["module", "functional"])
def test_app_keeps_conv_transpose3d_float_on_qnnpack(functional):
    """QNNPACK's int8 ConvTranspose3d is wrong (-10 dB) and cannot unpack its weights (the app's weight view
    and TorchScript's save both failed): on qnnpack the app keeps it float, and says so."""
    s, result = _app("conv_t_net", "qnnpack", kwargs={"dims": 3, "functional": functional})
    assert result.output.sqnr_db > 24, result.output.sqnr_db
    op, point = ("conv_transpose3d", "/conv_transpose3d") if functional else ("ConvTranspose3d", "up")
    assert _corrections(result) == [(op, [point])] and "kept float" in _what(result, op, point)
    if not functional:
        assert type(result.quantized_model.up) is nn.ConvTranspose3d


def test_app_keeps_conv_transpose_float_on_onednn():
    """oneDNN's int8 transposed conv is wrong when a group's in and out channels differ, and it refuses
    weights with a zero point other than 0 (torch's own onednn mapping made the app fail at prepare: a
    per-channel ConvTranspose): on onednn the app keeps every ConvTranspose float."""
    s, result = _app("conv_t_net", "onednn")
    assert result.output.sqnr_db > 24 and type(result.quantized_model.up) is nn.ConvTranspose2d
    assert _corrections(result) == [("ConvTranspose2d", ["up"])]
    assert "kept float" in _what(result, "ConvTranspose2d", "up")


def _pool_steps(qmodel, inputs, name: str) -> int:
    """Largest difference, in output steps, between the converted model's `name` pool (a module, or the
    node of a functional call) and the float pool on the same int8 input, rounded to that output's scale
    and zero point."""
    env = _values(qmodel, inputs)
    node = next(n for n in qmodel.graph.nodes if (n.op == "call_module" and n.target == name)
                or (n.op == "call_function" and n.name == name))
    if node.op == "call_module":
        op = qmodel.get_submodule(name)
        op = getattr(op, "pool", op)  # the app's FloatAvgPool holds the float pool
    else:
        fn, args, kwargs = node.target, node.args[1:], node.kwargs  # F's pool, or the app's float one

        def op(x):
            return fn(x, *args, **kwargs)
    x = env[node.args[0].name]
    if not x.is_quantized:  # a float pool: on the dequantized int8 value, rounded by the quantize after it
        x = env[node.args[0].args[0].name]
        node = next(iter(node.users))
    with torch.no_grad():
        return _steps(env[node.name], op(x.dequantize()))[0]


@pytest.mark.parametrize("engine", ["qnnpack", "fbgemm"])
def test_app_avg_pool_computes_what_float_does(engine):
    """On qnnpack the app swaps each AvgPool1d/2d with count_include_pad=False (and padding) or a
    divisor_override, in the copy it converts, for a float pool on the dequantized int8 input rounded back
    to the input's range (F.avg_pool1d/2d calls likewise): 0 steps from the float op (10 to 30 before); a
    plain pool stays int8. fbgemm's pools agree and are left alone. Only the corrected pools are named;
    the calibration is not touched."""
    from qtapp.core.deploy.measure import to_torchscript

    s, result = _app("pools", engine)
    q = result.quantized_model
    torch.manual_seed(1)
    x = torch.randn(4, 3, 16, 16)
    for name in ("pad_pool", "div_pool", "plain", "avg_pool2d", "pool1d", "avg_pool1d"):
        assert _pool_steps(q, (x,), name) <= (0 if engine == "qnnpack" and name != "plain" else 1), name
    corrected = ["pad_pool", "div_pool", "pool1d"] if engine == "qnnpack" else []
    swapped = [n for n in ("pad_pool", "div_pool", "plain", "pool1d") if type(q.get_submodule(n)).__name__ == "FloatAvgPool"]
    assert swapped == corrected
    assert _corrections(result) == ([("AvgPool1d", ["pool1d"]), ("AvgPool2d", ["pad_pool", "div_pool"]),
                                     ("avg_pool1d", ["/avg_pool1d"]), ("avg_pool2d", ["/avg_pool2d"])]
                                    if engine == "qnnpack" else [])
    assert type(s.calibrated.prepared.pad_pool) is nn.AvgPool2d  # the stored calibration keeps its pool
    scripted, how = to_torchscript(q, (x,))
    with torch.no_grad():
        assert how == "scripted" and torch.equal(scripted(x), q(x))


@pytest.mark.parametrize("engine", ENGINES)
def test_app_embedding_bag_computes_what_float_does(engine):
    """The app's int8 EmbeddingBag mode "mean" is the int8 kernel's sum with per-sample weights 1 / bag size
    (its non-padding entries): the mean of the int8 rows, exact; mode "max" stays float; "sum" is left
    alone (the model: -10 dB before, its bags returned sums). The report names mean and max, not sum; a bag
    set float after the calibration is left to torch (and not named), and the calibration is not touched."""
    from qtapp.core.base.progress import drive
    from qtapp.core.deploy.measure import to_torchscript

    s, result = _app("bags", engine, input_dtype="int64")
    assert result.output.sqnr_db > 24, result.output.sqnr_db
    q, model = result.quantized_model, s.loaded.module
    ids = torch.randint(0, 50, (8, 6), generator=torch.Generator().manual_seed(1))
    ids[0, :3] = 0  # padding entries for bag_pad
    env = _values(q, (ids,))
    for name, mode in (("bag_mean", "mean"), ("bag_sum", "sum"), ("bag_pad", "mean")):
        w = q.get_submodule(name).weight().dequantize()  # int8 rows
        want = F.embedding_bag(ids, w, mode=mode, padding_idx=model.get_submodule(name).padding_idx)
        assert torch.allclose(env[name], want, atol=1e-5), name
    assert type(q.bag_max).__name__ == "FloatEmbeddingBag"
    with torch.no_grad():
        assert torch.equal(env["bag_max"], model.bag_max(ids))
    assert _corrections(result) == [("EmbeddingBag", ["bag_mean", "bag_pad"]), ("EmbeddingBag", ["bag_max"])]
    assert '"mean"' in _what(result, "EmbeddingBag", "bag_mean") and '"max"' in _what(result, "EmbeddingBag", "bag_max")
    scripted, how = to_torchscript(q, (ids,))
    with torch.no_grad():
        assert how == "scripted" and torch.equal(scripted(ids), q(ids))
    if engine != "fbgemm":
        return
    s.inventory.set_float_layers(["bag_mean", "bag_max"])  # after one calibration: another conversion of it
    second = drive(s.quantize())
    assert second.float_layers == ("bag_mean", "bag_max") and second.output.sqnr_db > 24
    assert type(second.quantized_model.bag_mean) is nn.EmbeddingBag  # float, as torch keeps it
    assert _corrections(second) == [("EmbeddingBag", ["bag_pad"])]
    prepared = s.calibrated.prepared
    assert prepared.bag_mean.mode == "mean" and type(prepared.bag_max) is nn.EmbeddingBag
    assert not any(n.op == "call_function" and "bag_mean" in n.name for n in prepared.graph.nodes)


@pytest.mark.parametrize("engine", ENGINES)
def test_app_dynamic_embedding_bag_computes_what_float_does(engine):
    """The same defect under --method dynamic (no graph to rewrite): a mean bag is wrapped so the int8
    kernel's sum gets weights 1 / bag size, a max bag stays float, a sum bag is left alone; the report
    names mean and max. Before: the mean bag returned sums."""
    from qtapp.core.deploy.measure import to_torchscript

    s, result = _app("bags", engine, input_dtype="int64", method="dynamic")
    q, model = result.quantized_model, s.loaded.module
    ids = torch.randint(0, 50, (8, 6), generator=torch.Generator().manual_seed(1))
    ids[0, :3] = 0
    with torch.no_grad():
        for name, mode in (("bag_mean", "mean"), ("bag_pad", "mean")):
            bag = q.get_submodule(name)
            assert type(bag).__name__ == "MeanEmbeddingBag"
            want = F.embedding_bag(ids, bag.bag.weight().dequantize(), mode=mode,
                                   padding_idx=model.get_submodule(name).padding_idx)
            assert torch.allclose(bag(ids), want, atol=1e-5), name
        assert type(q.bag_max) is torch.nn.EmbeddingBag  # float
    assert _corrections(result) == [("EmbeddingBag", ["bag_mean", "bag_pad"]), ("EmbeddingBag", ["bag_max"])]
    assert result.output.sqnr_db > 24, result.output.sqnr_db
    scripted, how = to_torchscript(q, (ids,))
    with torch.no_grad():
        assert torch.allclose(scripted(ids), q(ids))
