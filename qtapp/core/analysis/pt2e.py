"""Per-point error of a PT2E model: the same three figures as for torch.ao, read off the graphs.

The calibrated (prepared) graph, run with its observers as identities, is the float model with
BatchNorm folded as the quantizer folds it; the converted graph keeps the names of its compute nodes
and puts quantize/dequantize pairs where the XNNPACK quantizer rounds. So for each point, the node
that computes its value has the same name on both sides:
  accumulated  the converted graph's value there (after its output rounding) against the float one
  local        the converted graph run with every compute node's output replaced by its float value
               before its consumers read it: each point then sees float inputs (rounded to its own
               input grid) and its own weights and output rounding only
  normalised   the RMS of the output rounding of the float value, over the output grid's scale

A point is mapped to its node by the module the op came from (`nn_module_stack`): a module point is the
first op of its module, followed along its fusion (conv -> relu); a functional op is the n-th op of
that name called in its module. Points that cannot be found in the graph are listed without figures.
"""

from __future__ import annotations

import math

from ..base.progress import CancelToken, Job, Stage
from .point_result import PointResult
from .qparams import Sums, chunks

CHUNK, SAMPLES = 8, 16
# ops a module runs that do not compute on its input (an LSTM's zero initial state, a shape)
_NOT_COMPUTE = frozenset({"t", "view", "reshape", "flatten", "zeros", "ones", "full", "empty", "sym_size", "arange",
                          "scalar_tensor", "zeros_like", "ones_like"})
# what the XNNPACK quantizer rounds together with the op before it
_ACTIVATIONS = frozenset({"relu", "relu6", "hardtanh", "clamp"})
_ROUNDING = ("quantize_per_tensor", "quantize_per_channel")
_UNROUNDING = ("dequantize_per_tensor", "dequantize_per_channel")


def _kind(node) -> str:
    """'q', 'dq' or '' for a call_function node."""
    name = str(node.target)
    if any(k in name for k in _UNROUNDING):
        return "dq"
    if any(k in name for k in _ROUNDING):
        return "q"
    return ""


def _op_name(node) -> str:
    name = str(getattr(node.target, "__name__", node.target)).split(".")[0]
    return name.rstrip("_")


def _owner(node) -> str:
    stack = node.meta.get("nn_module_stack") or {}
    return list(stack.values())[-1][0] if stack else ""


def _compute_nodes(graph_module) -> list:
    return [n for n in graph_module.graph.nodes if n.op == "call_function" and not _kind(n)
            and "getitem" not in str(n.target)]


def map_points(converted, points, with_starts: bool = False):
    """{point name: (the node computing its value, the dequantize node of its output rounding or None)}
    (and, `with_starts`, {point name: the point's first op})."""
    compute = _compute_nodes(converted)
    placeholders = {n.name: n for n in converted.graph.nodes if n.op == "placeholder"}
    by_owner: dict[str, list] = {}
    for n in compute:
        by_owner.setdefault(_owner(n), []).append(n)
    starts = {}
    for p in points:
        if p.kind == "module":
            nodes = [n for n in by_owner.get(p.name, []) if _op_name(n) not in _NOT_COMPUTE]
            start = nodes[0] if nodes else None
        elif p.kind == "op":
            same = [n for n in by_owner.get(p.scope, []) if _op_name(n) == p.op.rstrip("_")]
            start = same[p.order] if p.order < len(same) else None
        elif p.kind == "input":
            start = placeholders.get(p.name.split(":", 1)[-1])
        else:
            start = None
        if start is not None:
            starts[p.name] = start
    other_starts = {}
    for name, node in starts.items():
        other_starts.setdefault(node, set()).add(name)
    out = {}
    for name, start in starts.items():
        end = start
        # Along the ops the quantizer rounds as one (conv -> relu, add -> relu): while the value reaches a
        # single consumer unrounded and that consumer is not another point's op.
        while start.op != "placeholder":
            users = [u for u in end.users if u.op == "call_function" and not _kind(u)]
            if len(end.users) != 1 or len(users) != 1:
                break
            nxt = users[0]
            fused = _op_name(nxt) in _ACTIVATIONS or "getitem" in str(nxt.target)  # conv+relu, lstm -> output
            inside = _owner(nxt) == _owner(start) and not (other_starts.get(nxt, set()) - {name})
            if not (fused or inside):
                break
            end = nxt
        q = next((u for u in end.users if _kind(u) == "q"), None)
        dq = next((u for u in q.users if _kind(u) == "dq"), None) if q is not None else None
        out[name] = (end, dq)
    return (out, starts) if with_starts else out


def _interpreter(graph_module, on_value):
    import torch
    from torchao.quantization.pt2e import FakeQuantizeBase, ObserverBase

    class Tap(torch.fx.Interpreter):
        def call_module(self, target, args, kwargs):
            if isinstance(self.fetch_attr(target), (ObserverBase, FakeQuantizeBase)):
                return args[0]  # an observer, as an identity: calibration stays as it was
            return super().call_module(target, args, kwargs)

        def run_node(self, n):
            return on_value(self, n, super().run_node(n))

    return Tap(graph_module)


def analyse_pt2e(prepared, converted, points, float_points: set, data, samples: int = SAMPLES,
            cancel: CancelToken | None = None) -> Job[list]:
    """PointResult for every point of `points` (the inventory's), measured on the first `samples` samples."""
    import torch

    where, starts = map_points(converted, points, with_starts=True)
    acc = {p: Sums() for p in where}
    local = {p: Sums() for p in where}
    rounding = {p: [0.0, 0, None] for p in where}
    total = min(samples, data.samples)
    stage = Stage("per-point error", total, cancel)
    yield stage.step(0, "every quantization point (PT2E graph)")
    wanted = {(dq.name if dq is not None else end.name) for end, dq in where.values()}
    compute_names = {n.name for n in converted.graph.nodes if n.op == "call_function" and not _kind(n)} | \
        {n.name for n in converted.graph.nodes if n.op == "placeholder"}
    with torch.no_grad():
        for done, chunk in chunks(data, total):
            floats = {}

            def keep_float(_interp, n, value):
                if n.name in compute_names and torch.is_tensor(value):
                    floats[n.name] = value.clone()  # the graph has in-place ops (relu_, add_): keep a copy
                return value

            _interpreter(prepared, keep_float).run(*chunk)
            got, own, own_q = {}, {}, {}

            def accumulated(_interp, n, value):
                if torch.is_tensor(value) and n.name in wanted:
                    got[n.name] = value.clone()
                return value

            _interpreter(converted, accumulated).run(*chunk)

            def isolated(interp, n, value):
                if n.name in compute_names and n.name in floats:
                    own[n.name] = value.clone()  # computed from float inputs; its consumers read the float value
                    return floats[n.name].clone()
                kind = _kind(n) if n.op == "call_function" else ""
                if kind == "q" and n.args and getattr(n.args[0], "name", None) in own:
                    rest = interp.map_nodes_to_values(n.args[1:], n)
                    own_q[n.name] = n.target(own[n.args[0].name], *rest)
                elif kind == "dq" and n.args and getattr(n.args[0], "name", None) in own_q:
                    rest = interp.map_nodes_to_values(n.args[1:], n)
                    own[n.name] = n.target(own_q[n.args[0].name], *rest).clone()
                return value

            _interpreter(converted, isolated).run(*chunk)
            for name, (end, dq) in where.items():
                ref = floats.get(end.name)
                if ref is None:
                    continue
                value_at = dq.name if dq is not None else end.name
                if value_at in got:
                    acc[name].add(ref, got[value_at])
                if value_at in own:
                    local[name].add(ref, own[value_at])
                if dq is not None:
                    scale, zp, lo, hi = (float(dq.args[1]), int(dq.args[2]), int(dq.args[3]), int(dq.args[4])) \
                        if all(not hasattr(a, "op") for a in dq.args[1:5]) else (None,) * 4
                    if scale:
                        rounded = torch.fake_quantize_per_tensor_affine(ref.float(), scale, zp, lo, hi)
                        err = rounded - ref.float()
                        r = rounding[name]
                        r[0] += float((err * err).sum())
                        r[1] += err.numel()
                        r[2] = scale
            yield stage.step(done + len(chunk[0]), f"{done + len(chunk[0])}/{total} samples")
    out = []
    for p in points:
        kept = p.name in float_points
        if p.name not in where:
            out.append(PointResult(p.name, p.kind, p.op, p.parent, p.op, False, "", None, None, None, inputs=p.inputs,
                                   reason=p.reason or "not found in the PT2E graph (no op of this module there)",
                                   toggle=p.toggle, kept_float=kept))
            continue
        end, dq = where[p.name]
        sq, n, scale = rounding[p.name]
        start = starts[p.name]
        dq_inputs = [a for a in start.all_input_nodes if _kind(a) == "dq"]
        int8_weights = any(b.op == "get_attr" for a in dq_inputs for b in a.all_input_nodes)
        int8_in = bool(dq_inputs)
        # int8 kernels once lowered: an op with int8 weights, or int8 values in and a rounded value out
        runs_int8 = not kept and (int8_weights or (int8_in and dq is not None))
        reason = p.reason if "PT2E" in p.reason else (
            "" if dq is not None else "kept float" if kept else
            "the XNNPACK quantizer has no int8 pattern for it: it runs in float" if not runs_int8 else
            "its output is not rounded to int8 here: the op after it reads it in float")
        out.append(PointResult(
            p.name, p.kind, p.op, p.parent, _op_name(end), dq is not None, "int8" if runs_int8 else "float",
            acc[p.name].db, local[p.name].db, math.sqrt(sq / n) / scale if n and scale else None, inputs=p.inputs,
            reason=reason, toggle=p.toggle, kept_float=kept))
    return out
