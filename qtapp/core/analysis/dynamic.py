"""The per-point analysis of a dynamically quantized model: each Linear/LSTM/GRU's local and accumulated
error and its weights' error, with per-call activation ranges."""

from __future__ import annotations

from ..base.compat import quiet_ao
from ..base.progress import CancelToken, Job, Stage
from ..base.tensors import first_tensor, is_quantized_module
from ..quantize.points import QuantPoint
from .compare import is_torchao_weight, weight_data
from .point_result import PointResult, channel_weight_sqnr, outlier_channels
from .qparams import SAMPLES, Sums, chunks, dynamic_qparams
from .ranges import RangeCounter


def analyse_dynamic(float_model, qmodel, points: list[QuantPoint], float_points: set, data, engine: str,
                    samples: int = SAMPLES, cancel: CancelToken | None = None,
                    dtype: str = "qint8") -> Job[list[PointResult]]:
    """Dynamic quantization: each layer's real int8 kernel on the float model's input (local), the int8
    model's output against float (accumulated), and the range each call's input gets (int8 only:
    float16 weights leave the inputs float)."""
    import torch

    f_mods, q_mods = dict(float_model.named_modules()), dict(qmodel.named_modules())
    names = [p.name for p in points if p.name in f_mods and p.name in q_mods]
    acc = {n: Sums() for n in names}
    local = {n: Sums() for n in names}
    ranges = {n: RangeCounter(None) for n in names}
    reduce_range = engine in ("fbgemm", "x86")
    f_calls, q_calls = {}, {}

    def f_hook(name):
        def hook(_m, args, out):
            ref = first_tensor(out)
            f_calls.setdefault(name, []).append(ref)
            x = args[0] if args and torch.is_tensor(args[0]) else None
            if x is None or name in float_points:
                return
            # an embedding reads ids: no input range to round; torchao rounds each token's row on its own
            # (int8 per token) or not at all (weight-only): no one range to show
            if x.is_floating_point() and dtype == "qint8":
                ranges[name].add(x, dynamic_qparams(x, reduce_range))
            got = first_tensor(q_mods[name].forward(*args))  # forward: no hook, so not an int8-model call
            if got is not None and ref is not None and got.shape == ref.shape:
                local[name].add(ref, got)
        return hook

    handles = [f_mods[n].register_forward_hook(f_hook(n)) for n in names]
    handles += [q_mods[n].register_forward_hook(
        lambda _m, _i, out, n=n: q_calls.setdefault(n, []).append(first_tensor(out)) and None) for n in names]
    total = min(samples, data.samples)
    stage = Stage("per-point error", total, cancel)
    yield stage.step(0, "every quantized layer")
    try:
        with torch.no_grad(), quiet_ao():
            for done, chunk in chunks(data, total):
                f_calls.clear()
                q_calls.clear()
                float_model(*chunk)
                qmodel(*chunk)
                for n in names:
                    for ref, got in zip(f_calls.get(n, ()), q_calls.get(n, ())):
                        if ref is not None and got is not None and ref.shape == got.shape:
                            acc[n].add(ref, got)
                yield stage.step(done + len(chunk[0]), f"{done + len(chunk[0])}/{total} samples")
    finally:
        for h in handles:
            h.remove()
    out = []
    for p in points:
        if p.name not in acc:
            continue
        kept = p.name in float_points
        qm = q_mods[p.name]
        weight = weight_data(f_mods[p.name], qm)
        quantized = is_quantized_module(qm) or is_torchao_weight(getattr(qm, "weight", None))
        out.append(PointResult(
            p.name, p.kind, p.op, p.parent, type(qm).__name__, quantized, "int8" if not kept else "float",
            acc[p.name].db, local[p.name].db if not kept else None, None, reason=p.reason, toggle=p.toggle,
            range=ranges[p.name].result("evaluation (one range per call)"), weight=weight,
            outlier_channels=outlier_channels(weight), kept_float=kept, weight_sqnr_db=channel_weight_sqnr(weight)))
    return out
