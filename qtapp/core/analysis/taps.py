"""Taps: modules put into a copy of the float model (and of the int8 model) that report the value at each
quantization point, and the weight copies the static analysis fake-quantizes."""

from __future__ import annotations

import copy

from ..base.compat import quiet_ao
from ..base.tensors import first_tensor, is_quantized_module
from ..quantize.points import align, int8_values, is_observer, point_value_node, quantized_sources, runs_in
from ..quantize.qconfigs import weight_observer


class TapBook:
    """What the taps report to during one pass (a plain object: the taps are modules, this is not)."""

    def __init__(self) -> None:
        self.values: dict[str, object] = {}
        self.pending: dict[str, object] = {}  # weighted points: the output with int8 weights
        self.calls: dict[int, int] = {}  # calls of each hooked module so far in this pass
        self.keep = True
        self.on_value = None

    def seen(self, name: str, x, fresh: bool = False) -> None:
        """`x` is the value at point `name` now; kept (with `keep`) as a copy unless `fresh` (made for this
        call alone): a later in-place op (ReLU6(inplace=True), add_) would otherwise change what is kept."""
        if self.on_value is not None:
            self.on_value(name, x)
        if self.keep and name not in self.values:
            self.values[name] = _snapshot(x) if not fresh else x


def _snapshot(x):
    """A copy of a point's tensor as it is now, which later in-place ops on the original cannot change."""
    import torch

    return x.detach().clone() if torch.is_tensor(x) else x


def make_tap(book: TapBook, name: str, clamp: tuple | None = None):
    """A module reporting the value at point `name` to `book`. With `clamp` (an observer whose readers all
    clamp: observers.bound_clamped_observers), the value reported is the clamped one: the int8 tensor there
    stands for it, and the readers compute nothing else."""
    import torch

    class Tap(torch.nn.Module):
        def forward(self, x):
            if clamp is None:
                book.seen(name, x)
            else:
                book.seen(name, x.clamp(*clamp), fresh=True)
            return x

    return Tap()


def set_path(root, path: str, module) -> None:
    parent, _, attr = path.rpartition(".")
    setattr(root.get_submodule(parent) if parent else root, attr, module)


def _weight_observer(module):
    qconfig = getattr(module, "qconfig", None)
    if qconfig is not None and qconfig.weight is not None:
        return qconfig.weight()
    return None


def _fake_quant_weight(weight, observer):
    import torch

    with quiet_ao():
        observer(weight.detach())
        scale, zp = observer.calculate_qparams()
    scale, zp = scale.float(), zp.float()
    qmin, qmax = observer.quant_min, observer.quant_max
    if scale.numel() > 1:
        shape = [1] * weight.dim()
        shape[observer.ch_axis] = -1
        scale, zp = scale.reshape(shape), zp.reshape(shape)
    return (torch.clamp(torch.round(weight / scale + zp), qmin, qmax) - zp) * scale


def int8_weight_copy(module, per_channel: bool | None = None):
    """A copy of a float (fused) module whose weight is rounded to int8 as convert_fx rounds it (or with
    the scales a per-point override asks for); a QAT module rounds its own weights in forward (with its
    trained range), so its copy keeps doing that."""
    import torch
    from torch.ao.quantization import FakeQuantizeBase

    wfq = getattr(module, "weight_fake_quant", None)
    if isinstance(wfq, FakeQuantizeBase):
        dup = copy.deepcopy(module)
        dup.weight_fake_quant.enable_fake_quant()
        dup.weight_fake_quant.disable_observer()
        return dup
    target = module
    inner = next(iter(module.children()), None) if type(module).__module__.startswith("torch.ao.nn.intrinsic") else None
    if inner is not None and isinstance(getattr(inner, "weight", None), torch.Tensor):
        target = inner
    observer = _weight_observer(module) or _weight_observer(target)
    if per_channel is not None and observer is not None:
        observer = weight_observer(per_channel)()
    if observer is None or not isinstance(getattr(target, "weight", None), torch.Tensor):
        return None
    dup = copy.deepcopy(module)
    dup_target = next(iter(dup.children())) if target is not module else dup
    with torch.no_grad():
        dup_target.weight.copy_(_fake_quant_weight(dup_target.weight, observer))
    return dup


def disable_weight_fake_quant(model) -> None:
    """QAT modules round their weights in forward: off for the float side."""
    from torch.ao.quantization import FakeQuantizeBase

    for m in model.modules():
        wfq = getattr(m, "weight_fake_quant", None)
        if isinstance(wfq, FakeQuantizeBase):
            wfq.disable_fake_quant()


def strip_observers(module) -> None:
    """Eager prepared modules call their output observer in a forward hook: a copy used as a float op
    must not. (A fake-quantizer's own observer, also named activation_post_process, stays.)"""
    for m in list(module.modules()):
        if is_observer(m):
            continue
        if is_observer(getattr(m, "activation_post_process", None) or object()):
            del m.activation_post_process
            m._forward_hooks.clear()


def unwrap_island(module):
    """An eager float island is Sequential(DeQuantStub, layer, QuantStub): its layer."""
    import torch.nn as nn

    if isinstance(module, nn.Sequential) and len(module) == 3 and type(module[0]).__name__ == "DeQuantStub":
        return module[1]
    return module


def int8_taps(qmodel, points, prepared, kernel_refs: dict, mode: str):
    """A function that runs the int8 model on a chunk and returns {point: its int8 tensor} (and the inputs
    and output of each module point with a float reference op in `kernel_refs`), with each point's
    converted type, where it runs, and whether its value is int8. `prepared`: the observed model that
    `qmodel` was converted from."""
    import torch

    if mode == "eager":
        return _eager_int8_taps(qmodel, points)
    mapping = align(prepared, qmodel)
    nodes = {n.name: n for n in qmodel.graph.nodes}
    mapping.update(quantized_sources(qmodel))  # inputs and held tensors: the quantize node that reads them
    int8 = int8_values(qmodel)

    wanted, value_type, runs, flags = {}, {}, {}, {}
    for p in points:
        node_name = point_value_node(p, mapping)
        if node_name is None:
            continue
        node = nodes[node_name]
        quantize = [u for u in node.users if u.op == "call_function"
                    and getattr(u.target, "__name__", "") == "quantize_per_tensor"]
        runs[p.name] = "int8" if p.kind in ("input", "constant") else runs_in(qmodel, node, int8)
        # An op that runs in float has its output rounded by the quantize node after it: that is the point's value.
        wanted[quantize[0].name if quantize and not int8.get(node_name, False) else node_name] = p.name
        flags[p.name] = int8.get(node_name, False) or bool(quantize)
        if node.op == "call_module":
            value_type[p.name] = type(qmodel.get_submodule(node.target)).__name__
        elif node.op in ("call_function", "call_method"):
            value_type[p.name] = str(node.target) if hasattr(node.target, "_qualified_op_name") or \
                isinstance(node.target, torch._ops.OpOverloadPacket) else getattr(node.target, "__name__", str(node.target))

    checked = {node_name for node_name, point in wanted.items() if nodes[node_name].op == "call_module"
               and point in kernel_refs}

    class Recorder(torch.fx.Interpreter):
        def run_node(self, n):
            if n.name in checked:
                args, kwargs = self.fetch_args_kwargs_from_env(n)
                result = self.call_module(n.target, args, kwargs)
                self.io[wanted[n.name]] = (args, result)
            else:
                result = super().run_node(n)
            name = wanted.get(n.name)
            if name is not None:
                # its grid is read off it; a copy: an in-place op after it (ReLU6) would change the original
                self.record[name] = _snapshot(first_tensor(result, dequantize=False))
            return result

    def run(chunk):
        rec = Recorder(qmodel)
        rec.record, rec.io = {}, {}
        rec.run(*chunk)
        return rec.record, rec.io

    return run, value_type, runs, flags


def _eager_int8_taps(qmodel, points):
    modules = dict(qmodel.named_modules())
    record: dict = {}
    io: dict = {}
    value_type, runs, flags = {}, {}, {}
    for p in points:
        m = modules.get(p.name)
        if m is None:
            continue
        value_type[p.name] = type(unwrap_island(m)).__name__
        flags[p.name] = is_quantized_module(unwrap_island(m))  # a float island's layer is float
        runs[p.name] = "int8" if flags[p.name] else "float"

    def run(chunk):
        record.clear()
        handles, patched = [], []
        for p in points:
            m = modules.get(p.name)
            if m is None:
                continue
            if hasattr(m, "add") and type(m).__name__ == "QFunctional":
                for meth in ("add", "add_relu", "add_scalar", "mul", "mul_scalar", "cat"):
                    orig = getattr(m, meth)

                    def wrapper(*a, _orig=orig, _name=p.name, **k):
                        out = _orig(*a, **k)
                        if _name not in record:
                            record[_name] = _snapshot(out)
                        return out
                    setattr(m, meth, wrapper)
                    patched.append((m, meth))
            else:
                def hook(_m, args, out, name=p.name):
                    if name not in record:  # a copy, as the float side keeps: in-place ops come later
                        record[name] = _snapshot(first_tensor(out, dequantize=False))
                    if p.kind == "module":
                        io.setdefault(name, (args, out))
                handles.append(m.register_forward_hook(hook))
        io.clear()
        try:
            qmodel(*chunk)
        finally:
            for h in handles:
                h.remove()
            for m, meth in patched:
                delattr(m, meth)
        return dict(record), dict(io)

    return run, value_type, runs, flags
