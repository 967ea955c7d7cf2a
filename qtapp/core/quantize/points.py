"""Every quantization point: each place where the quantizer rounds a value to int8, or could and does not.

Points come from what the quantizer actually did, never from a list of module types: in FX mode the
prepared graph's observers (each observed node is a point; an op the backend left unobserved is a
point that runs in float, with the reason); in eager mode the modules that carry an observer; in
dynamic mode the layers it quantizes.

Names, so a user can find a point:
  layer1.0.conv1     a module's output (a second call of the same module: layer1.0.relu@1)
  layer1.0/add       a functional op called inside module layer1.0; the second add there is
                     layer1.0/add_1 (the index torch's QConfigMapping counts); top-level ops: /flatten
  input:x            a model input

Whether a point can be kept float, and how, comes from converting the prepared model once and
looking at what torch produced for it (see `classify`): torch honours "keep float" after calibration
for weighted layers and for the functional ops it lowers to int8 kernels; for the rest it either
already runs the op in float or keeps it in int8 whatever the setting, and the point says so.
"""

from __future__ import annotations

import operator
from collections import defaultdict
from dataclasses import dataclass, field, replace
from typing import Any

# Tensor plumbing: listed only where the quantizer observes it (a point), never as a float op.
_PLUMBING = frozenset({
    "getattr", "getitem", "size", "dim", "shape", "numel", "contiguous", "view", "reshape", "flatten", "transpose",
    "permute", "squeeze", "unsqueeze", "expand", "expand_as", "chunk", "split", "unbind", "type", "to", "float",
    "detach", "clone", "dropout", "identity", "t", "narrow", "select", "repeat", "tile",
})
# Ops that move or select int8 values without computing new ones: with their input's range they add no error.
EXACT_OPS = frozenset({
    "MaxPool1d", "MaxPool2d", "MaxPool3d", "max_pool1d", "max_pool2d", "max_pool3d", "ReLU", "relu", "relu_",
    "Flatten", "Identity", "Dropout", "flatten", "reshape", "view", "transpose", "permute", "squeeze", "unsqueeze",
    "contiguous", "chunk", "split", "getitem", "cat", "stack", "ChannelShuffle", "channel_shuffle", "pad",
})
_RELU_LIKE = frozenset({"ReLU", "relu", "relu_", "ReLU6", "relu6"})
_FUSABLE_BEFORE_RELU = frozenset({"add", "iadd", "mul", "imul"})
# convert_fx's own plumbing: never a point's counterpart.
_CONVERT_INSERTED = frozenset({"quantize_per_tensor", "quantize_per_channel", "dequantize", "quantize_per_tensor_dynamic",
                               "getattr"})
# Lowered int8 ops and the float op they implement (add_relu is an add with its ReLU fused).
_CANONICAL = {"iadd": "add", "add_relu": "add", "add_scalar": "add", "add_scalar_relu": "add", "imul": "mul",
              "mul_relu": "mul", "mul_scalar": "mul", "mul_scalar_relu": "mul", "bmm": "matmul"}


@dataclass(frozen=True)
class QuantPoint:
    name: str
    kind: str  # "input" | "module" | "op" | "constant" (a tensor the model holds, rounded like an activation)
    op: str  # module type (ConvReLU2d, Hardswish) or function name (add, cat, mean)
    parent: str  # the tree row it belongs to: the module itself, or the module an op is called in
    observed: bool  # the quantizer rounds this output to int8
    weighted: bool = False
    fused: tuple[str, ...] = ()  # other ops folded into this point (a ReLU after an add)
    absorbs: tuple[str, ...] = ()  # modules whose call is folded into this point (that ReLU's module)
    fixed_range: tuple[float, float] | None = None  # sigmoid/softmax/tanh: a range fixed by the op
    shares_range: str | None = None  # the point whose range (the same observer) it reuses
    inputs: tuple[str, ...] = ()  # the points whose values it reads
    runs: str = ""  # "int8" | "float" once classified against a converted model
    toggle: str | None = None  # how torch keeps it float after calibration: "module" | "op" | None
    reason: str = ""  # why it is not quantized, or why it cannot be kept float
    # Handles into the prepared model (not part of the public figures).
    node: str | None = field(default=None, compare=False)  # FX node whose output is the point's value
    root: str | None = field(default=None, compare=False)  # first node of a fused pattern (the add of add+relu)
    observer: str | None = field(default=None, compare=False)  # path of the observer module
    scope: str = field(default="", compare=False)  # module path the op is called in
    target: Any = field(default=None, compare=False)  # the function (op), method name or module path
    order: int = field(default=0, compare=False)  # torch's index of this call among same-target calls in scope

    @property
    def label(self) -> str:
        """The short name shown in a tree row: `add`, `conv1`, `input x`."""
        if self.kind in ("input", "constant"):
            return self.name.split(":", 1)[0] + ":" + self.name.split(":", 1)[-1].rpartition(".")[2]
        if self.kind == "op":
            return self.name.rpartition("/")[2]
        return self.name.rpartition(".")[2] or self.name

    @property
    def description(self) -> str:
        op = self.op + (" + " + " + ".join(self.fused) if self.fused else "")
        return f"{op} ({'functional op' if self.kind == 'op' else self.kind})"

    def to_json(self) -> dict:
        return {"name": self.name, "kind": self.kind, "op": self.op, "parent": self.parent, "observed": self.observed,
                "weighted": self.weighted, "fused": list(self.fused), "fixed_range": self.fixed_range,
                "shares_range": self.shares_range, "inputs": list(self.inputs), "runs": self.runs or None,
                "toggle": self.toggle,
                "reason": self.reason or None}


def is_observer(module) -> bool:
    from torch.ao.quantization.observer import _is_activation_post_process

    return _is_activation_post_process(module)


def _fn_name(target) -> str:
    return target if isinstance(target, str) else getattr(target, "__name__", None) or str(target)


def _node_op(node, modules) -> str:
    if node.op == "call_module":
        return type(modules[node.target]).__name__
    if node.op == "placeholder":
        return "input"
    return _fn_name(node.target)


def _tensor_args(node) -> list:
    import torch.fx

    out = []
    for a in node.args:
        if isinstance(a, torch.fx.Node):
            out.append(a)
        elif isinstance(a, (list, tuple)):
            out += [b for b in a if isinstance(b, torch.fx.Node)]
    return out


def _int8_weight_kinds():
    import torch.nn as nn

    return (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d, nn.Linear,
            nn.Embedding, nn.EmbeddingBag)


def _has_weight(module) -> bool:
    """True for the layers whose weights the quantizer rounds to int8 (conv, linear, embedding, and the
    fused modules built on them); a LayerNorm's or PReLU's parameters stay float."""
    if type(module).__module__.startswith("torch.ao.nn.intrinsic"):
        module = next(iter(module.children()), None)
    return module is not None and isinstance(module, _int8_weight_kinds())


def _rounds(observer) -> bool:
    import torch

    return getattr(observer, "dtype", None) in (torch.quint8, torch.qint8, torch.uint8, torch.int8)


def _fixed_range(observer) -> tuple[float, float] | None:
    if "FixedQParams" not in type(observer).__name__:
        return None
    scale, zp = (float(v) for v in observer.calculate_qparams())
    return (scale * (observer.quant_min - zp), scale * (observer.quant_max - zp))


def fx_points(prepared) -> list[QuantPoint]:
    """The points of an FX-prepared (observed or QAT) GraphModule, in graph order, not yet classified."""
    # A shared observer is one object under two names: named_modules() would list it once.
    modules = {n.target: prepared.get_submodule(n.target) for n in prepared.graph.nodes if n.op == "call_module"}
    scope_of = prepared.meta["_observed_graph_module_attrs"].node_name_to_scope
    nodes = list(prepared.graph.nodes)
    is_obs = {n: n.op == "call_module" and is_observer(modules[n.target]) for n in nodes}
    observer_of = {}
    for n in nodes:  # an observer of a float dtype (a placeholder) rounds nothing: not a point's
        if is_obs[n] and n.args and hasattr(n.args[0], "op") and _rounds(modules[n.target]):
            observer_of.setdefault(n.args[0], n)
    # torch's own index for set_module_name_object_type_order: call_function nodes per (scope, target).
    order, counts = {}, defaultdict(int)
    method_order, method_counts = {}, defaultdict(int)
    for n in nodes:
        if n.op == "call_function":
            key = (scope_of[n.name][0], n.target)
            order[n], counts[key] = counts[key], counts[key] + 1
        elif n.op == "call_method":
            key = (scope_of[n.name][0], n.target)
            method_order[n], method_counts[key] = method_counts[key], method_counts[key] + 1
    # A ReLU right after an unobserved add/mul is one fused int8 op (add_relu): the point is the add's.
    root_of, absorbed = {}, set()
    for n in nodes:
        if n in observer_of and _node_op(n, modules) in _RELU_LIKE:
            src = _tensor_args(n)[:1]
            if src and src[0].op == "call_function" and src[0] not in observer_of and len(src[0].users) == 1 \
                    and _fn_name(src[0].target) in _FUSABLE_BEFORE_RELU:
                root_of[n], absorbed = src[0], absorbed | {src[0]}
    # A module returning a tuple is observed through its getitem: the module's point, not the getitem's.
    via_getitem = {}
    for n in nodes:
        if n in observer_of and n.op == "call_function" and n.target is operator.getitem \
                and getattr(n.args[0], "op", None) == "call_module":
            via_getitem.setdefault(n.args[0], (n, n.args[1]))

    points, calls = [], defaultdict(int)
    taken = {g for g, _ in via_getitem.values()}
    for n in nodes:
        if n.op == "get_attr" and n in observer_of:  # a tensor the model holds, rounded like an activation
            pass
        elif is_obs[n] or n in absorbed or n in taken or n.op not in ("placeholder", "call_module", "call_function",
                                                                       "call_method"):
            continue
        value = via_getitem.get(n, (n, 0))[0]
        observed = value in observer_of
        op = _node_op(n, modules)
        if not observed and (n.op == "placeholder" or op in _PLUMBING or op in _CONVERT_INSERTED):
            continue
        obs_node = observer_of.get(value)
        observer = modules[obs_node.target] if obs_node is not None else None
        root = root_of.get(n)
        if n.op == "placeholder":
            name, kind, parent, scope = f"input:{n.name}", "input", "", ""
        elif n.op == "get_attr":
            owner = n.target.rpartition(".")[0]
            name, kind, parent, scope = f"const:{n.target}", "constant", owner, owner
            op = "tensor"
        elif n.op == "call_module" and root is None:
            k = calls[n.target]
            calls[n.target] += 1
            name, kind, parent, scope = n.target if not k else f"{n.target}@{k}", "module", n.target, n.target
            index = via_getitem.get(n, (None, 0))[1]
            if index:
                name += f"[{index}]"
        else:
            head = root or n
            scope = scope_of[head.name][0]
            if head.op == "call_function":
                idx = order[head]
                fname = _fn_name(head.target)
            else:
                idx = method_order[head]
                fname = head.target
            name = f"{scope}/{fname}" + (f"_{idx}" if idx else "")
            kind, parent = "op", scope
            op = _fn_name(head.target)
        shares = None
        if observer is not None:
            for src in _tensor_args(root or n):  # an op's inputs are its producers' observer nodes
                src_obs = src if is_obs.get(src) else observer_of.get(src)
                if src_obs is not None and src_obs is not obs_node and modules[src_obs.target] is observer:
                    shares = src_obs  # resolved to a point name below
                    break
        head = root or n
        points.append(QuantPoint(
            name=name, kind=kind, op=op, parent=parent, observed=observed,
            weighted=n.op == "call_module" and _has_weight(modules[n.target]),
            fused=(_node_op(n, modules),) if root is not None else (),
            absorbs=(n.target,) if root is not None and n.op == "call_module" else (),
            fixed_range=_fixed_range(observer) if observer is not None else None,
            shares_range=shares.args[0].name if shares is not None else None,
            node=value.name, root=head.name, observer=obs_node.target if obs_node is not None else None,
            scope=scope, target=head.target, order=order.get(head, method_order.get(head, 0))))
    by_node = {p.node: p.name for p in points}
    by_node.update({p.root: p.name for p in points if p.root})
    producers: dict = {}

    def producing_points(node) -> tuple[str, ...]:
        """The points whose values reach `node`, through observers and unlisted plumbing."""
        if node in producers:
            return producers[node]
        producers[node] = ()
        found: list[str] = []
        for src in _tensor_args(node):
            if is_obs.get(src):
                src = src.args[0]
            name = by_node.get(src.name)
            found += [name] if name is not None else list(producing_points(src))
        producers[node] = tuple(dict.fromkeys(found))
        return producers[node]

    node_of = {n.name: n for n in nodes}
    return [replace(p, shares_range=by_node.get(p.shares_range, p.shares_range),
                    inputs=tuple(i for i in producing_points(node_of[p.root]) if i != p.name)) for p in points]


def merge_classification(points: list[QuantPoint], classified) -> list[QuantPoint]:
    """`points` (read off a calibrated model) with how each runs and toggles from `classified` (the
    inventory's points, found by converting the same model once with every point in int8)."""
    by_name = {p.name: p for p in classified}
    out = []
    for p in points:
        c = by_name.get(p.name)
        out.append(replace(p, runs=c.runs, toggle=c.toggle, reason=c.reason) if c is not None else p)
    return out


# -- what torch made of each point ---------------------------------------------------------------------

def _family(node) -> tuple | None:
    if node.op == "call_module":
        return ("module", node.target)
    if node.op not in ("call_function", "call_method"):
        return None
    name = _fn_name(node.target)
    if name in _CONVERT_INSERTED:
        return None
    return ("fn", _CANONICAL.get(name, name))


def align(prepared, converted) -> dict[str, str]:
    """{prepared node name: converted node name} for the nodes whose counterpart is certain.

    convert_fx keeps the name of every node it does not rewrite (modules, tensor ops on int8 values) and
    creates the lowered int8 ops (quantized add, add_relu, matmul) under new names in graph order; those
    are matched in order within their op family, and only where both sides have the same count."""
    conv_nodes = [n for n in converted.graph.nodes if _family(n) is not None]
    by_name = {n.name: n for n in conv_nodes}
    mapping, unmatched_p, unmatched_c = {}, defaultdict(list), defaultdict(list)
    used = set()
    for n in prepared.graph.nodes:
        fam = _family(n)
        if fam is None or (n.op == "call_module" and is_observer(prepared.get_submodule(n.target))):
            continue
        c = by_name.get(n.name)
        if c is not None and _family(c) == fam:
            mapping[n.name] = c.name
            used.add(c.name)
        else:
            unmatched_p[fam].append(n.name)
    for c in conv_nodes:
        if c.name not in used:
            unmatched_c[_family(c)].append(c.name)
    for fam, names in unmatched_p.items():
        if len(names) == len(unmatched_c.get(fam, ())):
            mapping.update(zip(names, unmatched_c[fam]))
    return mapping


def _is_int8_module(module) -> bool:
    mod = type(module).__module__
    return mod.startswith(("torch.ao.nn.quantized", "torch.ao.nn.intrinsic.quantized"))


def _float_output_int8_module(module) -> bool:
    """Quantized modules whose output is float: weight-only embeddings and dynamic layers."""
    mod = type(module).__module__
    return ".dynamic" in mod or "embedding_ops" in mod


def _is_lowered_op(node) -> bool:
    import torch

    return node.op == "call_function" and isinstance(node.target, torch._ops.OpOverloadPacket) \
        and str(node.target).startswith("quantized.")


def int8_values(converted) -> dict[str, bool]:
    """{node name: True when its output is an int8 (quantized) tensor}, propagated through the graph:
    quantize nodes, int8 modules and lowered int8 ops make int8 values, dequantize makes float ones, and
    any other op passes its first input's kind on (a ReLU or a cat on int8 values stays int8)."""
    out: dict[str, bool] = {}
    for n in converted.graph.nodes:
        name = _fn_name(n.target) if n.op in ("call_function", "call_method") else ""
        inputs = _tensor_args(n)
        passes = bool(inputs) and out.get(inputs[0].name, False)
        if n.op == "placeholder" or name == "dequantize":
            out[n.name] = False
        elif name in ("quantize_per_tensor", "quantize_per_channel") or _is_lowered_op(n):
            out[n.name] = True
        elif n.op == "call_module":
            m = converted.get_submodule(n.target)
            out[n.name] = (_is_int8_module(m) and not _float_output_int8_module(m)) or (not _is_int8_module(m) and passes)
        else:
            out[n.name] = passes
    return out


def runs_in(converted, node, int8: dict[str, bool]) -> str:
    """"int8" when the converted node computes on int8 values, "float" when its inputs are float."""
    if node.op == "call_module" and _is_int8_module(converted.get_submodule(node.target)):
        return "int8"
    if _is_lowered_op(node):
        return "int8"
    inputs = _tensor_args(node)
    return "int8" if inputs and int8.get(inputs[0].name, False) else "float"


def quantized_sources(converted) -> dict[str, str]:
    """{input or held tensor node: the quantize node that rounds it}: their int8 values."""
    out = {}
    for n in converted.graph.nodes:
        if n.op == "call_function" and _fn_name(n.target) == "quantize_per_tensor" and n.args \
                and getattr(n.args[0], "op", None) in ("placeholder", "get_attr"):
            out.setdefault(n.args[0].name, n.name)
    return out


def point_value_node(point: QuantPoint, mapping: dict[str, str]) -> str | None:
    """The converted node whose output is the point's value: its own node, else its pattern's root
    (an add+relu point is one add_relu node once lowered)."""
    return mapping.get(point.node) or (mapping.get(point.root) if point.root != point.node else None)


def classify(points: list[QuantPoint], prepared, converted, engine: str) -> list[QuantPoint]:
    """Fill in how each point runs in `converted` (all points quantized) and how it can be kept float."""
    mapping = align(prepared, converted)
    nodes = {n.name: n for n in converted.graph.nodes}
    int8 = int8_values(converted)
    mapping.update(quantized_sources(converted))
    out = []
    for p in points:
        name = point_value_node(p, mapping)
        node = nodes.get(name) if name else None
        runs = ("int8" if p.kind in ("input", "constant") else runs_in(converted, node, int8)) if node is not None else ""
        if p.kind != "input" and p.observed and not runs:
            runs = "int8"  # observed but rewritten beyond recognition: its output is rounded all the same
        lowered = node is not None and _is_lowered_op(node)
        toggle, reason = _toggle_rule(p, runs, lowered, engine)
        out.append(replace(p, runs=runs, toggle=toggle, reason=reason))
    return [replace(p, reason=_input_reason(p, out)) if p.kind == "input" else p for p in out]


def _input_reason(p: QuantPoint, points: list[QuantPoint]) -> str:
    """Which op rounds a model input, and whether keeping that op float keeps the input float."""
    readers = [q for q in points if p.name in q.inputs]
    if not readers:
        return "the model's input, rounded to int8 for the first int8 op"
    togglable = [q.name for q in readers if q.toggle]
    if togglable:
        return (f"the model's input, rounded to int8 for {', '.join(q.name for q in readers)}; keep "
                f"{' and '.join(togglable)} float to keep the input float")
    return (f"the model's input, rounded to int8 for {', '.join(q.name for q in readers)}, which torch keeps in int8 "
            "whatever its setting: the input stays int8")


# Modules torch.ao converts to int8 whatever their setting, that the app can keep float by swapping them,
# in the converted copy only, for a module of another type computing the same (torch_ao.float_rewrite).
FLOAT_REWRITES = frozenset({"PReLU"})

_FLOAT_REASONS = {
    "MultiheadAttention": "torch.ao's FX mode keeps nn.MultiheadAttention in float (its quantizable version needs "
                          "eager mode); dynamic quantization covers its feed-forward Linear layers",
    "LSTM": "no static int8 kernel for LSTM here: it runs in float; the dynamic method quantizes it",
    "GRU": "no static int8 kernel for GRU here: it runs in float; the dynamic method quantizes it",
}


def _toggle_rule(p: QuantPoint, runs: str, lowered: bool, engine: str) -> tuple[str | None, str]:
    if p.kind == "constant":
        return None, (f"a tensor the model holds ({p.target}), rounded to int8 like an activation because the op it "
                      "feeds had an int8 pattern when calibrated: torch rounds it whatever that op's setting, even "
                      "when the op then runs in float (a float island dequantizes it again)")
    if p.kind == "input":
        return None, ("the model's input, rounded to int8 for the first int8 op; keep that op float to keep the "
                      "input float")
    if not p.observed:
        why = _FLOAT_REASONS.get(p.op) or (f"torch.ao has no int8 {p.op} for {engine}: it runs in float between a "
                                           "dequantize and a quantize")
        return None, f"not quantized: {why}"
    if p.kind == "module" and "@" in p.name:
        module = p.name.split("@", 1)[0]
        return None, (f"a later call of {module}: torch keeps a module float for all its calls, so keep {module} "
                      "float to keep this one float")
    if p.weighted and p.kind == "module":
        return "module", ""
    if p.kind == "module" and p.op in FLOAT_REWRITES:  # kept float by a rewrite at conversion (backends)
        return "module", ""
    if p.kind == "op" and lowered and callable(p.target):
        return "op", ""
    if p.shares_range:
        return None, (f"runs on int8 values and rounds its output to the range of {p.shares_range} (the same "
                      "observer), not to one of its own; torch keeps it in int8 whatever its setting")
    if p.kind == "op" and callable(p.target) and runs == "int8":
        return None, (f"{p.op} on int8 values is not a separate int8 kernel torch can swap: it stays on int8 "
                      "values whatever its setting, with the range of its inputs")
    if runs == "float":
        return None, ("runs in float already (no int8 kernel for it): its output is rounded to int8 because the "
                      "next op runs in int8; keep that op float to avoid it")
    if p.kind == "op" and not callable(p.target):
        return None, (f"a tensor method (x.{p.op}()): torch can keep it float only with its whole module "
                      f"({p.scope or 'the model'}) or every .{p.op}() in the model")
    return None, (f"torch.ao converts {p.op} to int8 whatever its setting once calibrated (its float setting "
                  "is ignored by convert_fx); its output range is what decides its error")


# -- eager mode and dynamic mode ----------------------------------------------------------------------

def eager_points(prepared, example) -> list[QuantPoint]:
    """Points of an eager-mode prepared model: every module carrying an observer, in execution order
    (found by running `example` once with hooks), FloatFunctional ops named by the method called.
    The run updates observer statistics: pass a copy, or an uncalibrated model."""
    import torch
    from torch.ao.nn.quantized import FloatFunctional
    from torch.ao.quantization import DeQuantStub, QuantStub

    carriers = {name: m for name, m in prepared.named_modules()
                if hasattr(m, "activation_post_process") and not isinstance(m, DeQuantStub)}
    first_call: dict[str, int] = {}
    method: dict[str, str] = {}
    handles, patched = [], []

    def note(name):
        first_call.setdefault(name, len(first_call))

    for name, m in carriers.items():
        if isinstance(m, FloatFunctional):
            for meth in ("add", "add_relu", "add_scalar", "mul", "mul_scalar", "cat"):
                orig = getattr(m, meth)

                def wrapper(*a, _orig=orig, _name=name, _meth=meth, **k):
                    note(_name)
                    method.setdefault(_name, _meth)
                    return _orig(*a, **k)

                setattr(m, meth, wrapper)
                patched.append((m, meth))
        else:
            handles.append(m.register_forward_pre_hook(lambda _m, _i, name=name: note(name)))
    try:
        with torch.no_grad():
            prepared(*example)
    finally:
        for h in handles:
            h.remove()
        for m, meth in patched:
            delattr(m, meth)  # the instance attribute goes; the class method shows again
    points = []
    # A module that never runs (a residual add a block does not use) rounds nothing: not a point.
    ordered = sorted((n for n in carriers if n in first_call), key=first_call.get)
    for name in ordered:
        m = carriers[name]
        parent = name.rpartition(".")[0]
        if isinstance(m, QuantStub):
            points.append(QuantPoint(name, "input", "QuantStub", name, True, observer=name, runs="int8",
                                     reason="the model's input, rounded to int8 by its QuantStub"))
        elif isinstance(m, FloatFunctional):
            points.append(QuantPoint(name, "op", method.get(name, "add"), parent, True, observer=name,
                                     reason="eager mode cannot keep a FloatFunctional float (its inputs are int8); "
                                            "FX mode (--static-mode fx) can keep residual adds float"))
        else:
            obs = m.activation_post_process
            points.append(QuantPoint(name, "module", type(m).__name__, name, True, weighted=_has_weight(m),
                                     fixed_range=_fixed_range(obs), runs="int8", toggle="module", observer=name))
    # Eager mode has no graph: "the point before" is the one that ran before it.
    return [replace(p, inputs=(points[i - 1].name,) if i else ()) for i, p in enumerate(points)]


def dynamic_points(model, heads) -> list[QuantPoint]:
    """Points of dynamic quantization: the layers it quantizes (weights int8 or float16, each call's input
    rounded with a range computed on the fly)."""
    modules = dict(model.named_modules())
    return [QuantPoint(h, "module", type(modules[h]).__name__, h, True, weighted=True, runs="int8", toggle="module")
            for h in heads]
