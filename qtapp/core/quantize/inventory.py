"""The layer inventory: every named module as a tree, every quantization point in it, and what is float.

This object owns the per-layer quantize toggles (the GUI's tree is a view over it). Toggles act on
fusion-group heads: a BatchNorm folded into its conv toggles the conv, and says so; a container
toggles every quantizable layer under it; a name that does not exist is refused, never ignored.

Quantization points (points.py) that are not modules (a functional `add`, a model input) are rows of
their own under the module they are called in, named `layer1.0/add`; a module's own point (its output)
is on its row. A point torch can keep float after calibration is a toggle target like a layer.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from typing import Callable

from ..base.compat import forgetting_ao_models, quiet_ao
from ..base.errors import UsageError, first_line
from ..config.recipe import QuantRecipe
from .base import set_engine
from .fusion import eager_fusion_groups, fx_fusion_groups
from .points import FLOAT_REWRITES, QuantPoint, classify, dynamic_points, eager_points, fx_points
from .qconfigs import fx_mapping, static_qconfig


@dataclass
class LayerInfo:
    name: str  # full dotted module name; "" is the model itself
    type: str
    params: int  # this module and everything under it
    bytes: int  # parameters and buffers, this module and everything under it
    output_shape: str | None = None
    quantizable: bool = False  # a toggle target: a fusion-group head or a standalone supported layer
    reason: str = ""  # why it is not a toggle target (or, for members, which head it follows)
    group_head: str | None = None  # set on every member of a fusion group, head included
    group: list[str] = field(default_factory=list)  # on heads: the whole group
    children: list[str] = field(default_factory=list)
    kind: str = "module"  # "module", or "op" / "input" for a point that is not a module
    scope: str | None = None  # for op and input rows: the module row they are listed under
    point: QuantPoint | None = None  # the quantization point of this row, if it is one

    @property
    def parent(self) -> str | None:
        if self.scope is not None:
            return self.scope
        return None if not self.name else self.name.rpartition(".")[0]

    @property
    def short_name(self) -> str:
        if self.kind != "module" and self.point is not None:
            return self.point.label
        return self.name.rpartition(".")[2] or "(model)"


def static_kinds():
    import torch.nn as nn

    return (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d,
            nn.Linear, nn.BatchNorm2d, nn.BatchNorm3d, nn.Embedding, nn.EmbeddingBag)


def torchao_kinds():
    import torch.nn as nn

    return (nn.Linear, nn.Embedding)


def dynamic_kinds():
    import torch.nn as nn

    return (nn.Linear, nn.LSTM, nn.GRU, nn.LSTMCell, nn.GRUCell, nn.RNNCell, nn.Embedding, nn.EmbeddingBag)


class LayerInventory:
    def __init__(self, layers: dict[str, LayerInfo], method: str, mode: str, engine: str,
                 notes: list[str] | None = None) -> None:
        self.layers = layers
        self.method, self.mode, self.engine = method, mode, engine
        self.notes = notes or []
        self.untraceable: str | None = None  # why torch.fx cannot trace the model (static and QAT then fail)
        self.float_heads: set[str] = set()
        self._listeners: list[Callable[[list[str]], None]] = []
        self.points: dict[str, QuantPoint] = {}

    # -- building --------------------------------------------------------------------------------
    @classmethod
    def build(cls, loaded, method: str, engine: str, mode: str) -> "LayerInventory":
        """`mode` is the resolved graph mode: "fx" or "eager" (static/qat), "dynamic" for dynamic, "pt2e"
        for the PT2E backend (whose points are listed as FX finds them: the same ops, observed alike)."""
        pt2e, mode = mode == "pt2e", "fx" if mode == "pt2e" else mode
        module = loaded.module
        layers = {name: _describe(name, m) for name, m in module.named_modules()}
        notes: list[str] = []
        if loaded.is_torchscript:
            for info in layers.values():
                info.reason = "TorchScript models can be inspected and exported, not quantized"
            return cls(layers, method, mode, engine, [loaded.why_not_quantizable()])
        if loaded.input_spec is not None:
            _probe_shapes(module, loaded.input_spec, layers, loaded.declared_input)
        groups: dict[str, list[str]] = {}
        points: list[QuantPoint] = []
        untraceable = None
        if mode in ("fx", "eager"):
            try:
                groups = fx_fusion_groups(module) if mode == "fx" else eager_fusion_groups(module)
            except Exception as exc:  # noqa: BLE001 - an untraceable model is reported, not fatal here
                untraceable = f"{type(exc).__name__}: {str(exc).splitlines()[0]}"
                notes.append(f"FX cannot trace this model ({untraceable}); "
                             "static and QAT quantization will fail; dynamic quantization still works")
            else:
                points, note = _static_points(module, mode, engine, loaded.input_spec)
                notes += [note] if note else []
        _mark_quantizable(module, layers, groups, method, mode)
        if mode in ("dynamic", "torchao"):  # the layers themselves: each quantized alone, inputs per call
            points = dynamic_points(module, [n for n, i in layers.items() if i.quantizable])
        if pt2e:
            points = [_module_toggles_only(p) for p in points]
        inventory = cls(layers, method, "pt2e" if pt2e else mode, engine, notes)
        inventory.untraceable = untraceable
        inventory._add_points(points)
        if mode == "fx" and points:
            inventory._unmark_untraced()
        return inventory

    def _unmark_untraced(self) -> None:
        """A layer inside a module FX runs as one opaque op (torch.nn's own blocks, such as
        TransformerEncoderLayer) is never quantized in FX mode: it is no toggle, and says why."""
        for name, info in self.layers.items():
            if info.point is not None or info.kind != "module" or not (info.quantizable or info.reason == _FOLLOWS_NEIGHBOURS):
                continue
            opaque = info.parent
            while opaque and (self.layers[opaque].point is None or self.layers[opaque].point.kind != "module"):
                opaque = self.layers[opaque].parent
            if opaque:
                info.quantizable = False
                info.reason = (f"inside {opaque} ({self.layers[opaque].type}), which FX runs as one op (torch.nn's own "
                               "blocks are leaves to its tracer): it stays float; the dynamic method quantizes its "
                               "Linear layers")

    def _add_points(self, points: list[QuantPoint]) -> None:
        """Attach each point to its module's row, or give it a row of its own under the module it is
        called in (ops, inputs, a module's second call), placed among its siblings in execution order."""
        first_seen: dict[str, int] = {}
        for i, p in enumerate(points):
            where = p.name if p.name in self.layers else p.parent
            while where is not None and where not in first_seen:
                first_seen[where] = i
                where = self.layers[where].parent if where in self.layers else None
        for i, p in enumerate(points):
            self.points[p.name] = p
            for module in p.absorbs:  # a ReLU module whose (second) call is the add+ReLU point's
                absorbed = self.layers.get(module)
                if absorbed is not None and absorbed.reason == _FOLLOWS_NEIGHBOURS:
                    absorbed.reason = f"its call after the {p.op} runs inside {p.name} ({p.op}+{'+'.join(p.fused)}), one int8 op"
            row = self.layers.get(p.name)
            if row is not None:
                row.point = p
                if p.toggle == "module" and p.op in FLOAT_REWRITES and self.mode == "fx" and not row.quantizable:
                    row.quantizable, row.reason = True, ""  # no weights, but the app can keep it float
                if not row.quantizable and p.reason and row.reason in ("", _FOLLOWS_NEIGHBOURS):
                    row.reason = p.reason
                continue
            scope = p.parent if p.kind != "module" else p.parent.rpartition(".")[0]
            if scope not in self.layers:
                scope = ""
            row = LayerInfo(p.name, p.op + "".join(f"+{f}" for f in p.fused), 0, 0, kind=p.kind if p.kind != "module" else "op",
                            scope=scope, point=p, quantizable=p.toggle is not None, reason=p.reason)
            self.layers[p.name] = row
            siblings = self.layers[scope].children
            at = 0
            for k, sibling in enumerate(siblings):
                if first_seen.get(sibling, len(points)) < i:
                    at = k + 1
            while at < len(siblings) and siblings[at] not in first_seen:  # fused members stay by their head
                at += 1
            siblings.insert(at, p.name)
            first_seen[p.name] = i
        # Model order (a walk of the tree), so heads, float layers and reports list ops where they run.
        ordered, stack = {}, [""]
        while stack:
            name = stack.pop()
            ordered[name] = self.layers[name]
            stack.extend(reversed(self.layers[name].children))
        self.layers = ordered

    # -- queries ---------------------------------------------------------------------------------
    def __iter__(self):
        return iter(self.layers.values())

    def __getitem__(self, name: str) -> LayerInfo:
        return self.layers[name]

    def __contains__(self, name: str) -> bool:
        return name in self.layers

    @property
    def heads(self) -> list[str]:
        """Every toggle target, in model order."""
        return [n for n, info in self.layers.items() if info.quantizable]

    def heads_under(self, name: str) -> list[str]:
        if not name:
            return self.heads
        return [h for h in self.heads if h == name or h.startswith((f"{name}.", f"{name}/"))]

    def is_float(self, head: str) -> bool:
        return head in self.float_heads

    def state(self, name: str) -> str | None:
        """"quantized", "float" or "partial" for anything toggleable, None otherwise."""
        heads = self.resolve(name, strict=False)
        if not heads:
            return None
        n_float = sum(h in self.float_heads for h in heads)
        return "float" if n_float == len(heads) else "quantized" if n_float == 0 else "partial"

    @property
    def float_layers(self) -> list[str]:
        return [h for h in self.heads if h in self.float_heads]

    @property
    def quantized_heads(self) -> list[str]:
        return [h for h in self.heads if h not in self.float_heads]

    # -- toggles ---------------------------------------------------------------------------------
    def resolve(self, name: str, strict: bool = True) -> list[str]:
        """The heads a toggle on `name` acts on. Unknown or untoggleable names raise when strict."""
        if name not in self.layers:
            if not strict:
                return []
            close = difflib.get_close_matches(name, list(self.layers), n=3)
            hint = f" Did you mean {', '.join(close)}?" if close else " Run `qtapp-cli inspect` to list layers."
            raise UsageError(f"no layer named {name!r} in this model.{hint}")
        info = self.layers[name]
        if info.group_head:
            return [info.group_head]
        heads = self.heads_under(name)
        if not heads and strict:
            raise UsageError(f"layer {name!r} ({info.type}) cannot be toggled: {info.reason or 'nothing to quantize in it'}")
        return heads

    def explain(self, name: str) -> str | None:
        """A note when a toggle on `name` acts on something else (a fused group's head)."""
        info = self.layers.get(name)
        if info and info.group_head and info.group_head != name:
            group = self.layers[info.group_head].group
            return f"{name} is fused into {info.group_head} ({' + '.join(group)}): the toggle acts on the whole group"
        return None

    def set_float(self, names, keep_float: bool = True) -> list[str]:
        """Keep `names` (layers, members or containers) in float, or quantize them again.
        Returns the heads whose state changed; all names are checked before anything changes."""
        names = [names] if isinstance(names, str) else list(names)
        targets = [h for n in names for h in self.resolve(n)]
        changed = [h for h in dict.fromkeys(targets) if (h in self.float_heads) != keep_float]
        if keep_float:
            self.float_heads.update(changed)
        else:
            self.float_heads.difference_update(changed)
        if changed:
            for callback in list(self._listeners):
                callback(changed)
        return changed

    def set_float_layers(self, names) -> list[str]:
        """Replace the whole float set (from a recipe); returns explanatory notes for fused members."""
        names = list(names)
        targets = {h for n in names for h in self.resolve(n)}
        notes = [note for n in names if (note := self.explain(n))]
        old = set(self.float_heads)
        self.float_heads = targets
        changed = sorted(old ^ targets)
        if changed:
            for callback in list(self._listeners):
                callback(changed)
        return notes

    def subscribe(self, callback: Callable[[list[str]], None]) -> None:
        self._listeners.append(callback)

    def unsubscribe(self, callback: Callable[[list[str]], None]) -> None:
        if callback in self._listeners:
            self._listeners.remove(callback)

    def to_json(self) -> dict:
        return {
            "method": self.method, "mode": self.mode, "engine": self.engine, "notes": self.notes,
            "layers": [{"name": i.name, "kind": i.kind, "parent": i.parent, "type": i.type, "params": i.params,
                        "bytes": i.bytes, "output_shape": i.output_shape, "quantizable": i.quantizable,
                        "state": self.state(i.name), "group_head": i.group_head,
                        "group": i.group or None, "reason": i.reason} for i in self],
            "points": [p.to_json() for p in self.points.values()],
        }


def _describe(name: str, m) -> LayerInfo:
    params = sum(p.numel() for p in m.parameters())
    nbytes = sum(t.numel() * t.element_size() for t in [*m.parameters(), *m.buffers()])
    type_name = getattr(m, "original_name", None) or type(m).__name__
    prefix = f"{name}." if name else ""
    children = [prefix + c for c, _ in m.named_children()]
    return LayerInfo(name, type_name, params, nbytes, children=children)


def _shape_text(out) -> str | None:
    import torch

    if isinstance(out, torch.Tensor):
        return "x".join(str(d) for d in out.shape)
    if isinstance(out, (tuple, list)):
        parts = [s for s in (_shape_text(o) for o in out) if s]
        return "(" + ", ".join(parts) + ")" if parts else None
    return None


def _probe_shapes(module, input_spec, layers: dict[str, LayerInfo], declared=None) -> None:
    import torch

    handles = []
    for name, m in module.named_modules():
        def hook(_m, _inp, out, name=name):
            if layers[name].output_shape is None:
                layers[name].output_shape = _shape_text(out)
        handles.append(m.register_forward_hook(hook))
    try:
        with torch.no_grad():
            module(*input_spec.example())
    except Exception as exc:  # noqa: BLE001 - reported with the expected shape
        expected = f" The model's own input is {declared}." if declared is not None else ""
        raise UsageError(f"the model fails on input {input_spec}: {type(exc).__name__}: "
                         f"{str(exc).splitlines()[0]}.{expected} Give the right shape with --input-shape (and dtype with --input-dtype).") from None
    finally:
        for h in handles:
            h.remove()


_FOLLOWS_NEIGHBOURS = ("no weights to quantize: it follows its neighbours (int8 between int8 layers where the "
                       "engine has a kernel)")


def _module_toggles_only(point: QuantPoint) -> QuantPoint:
    """The PT2E backend keeps layers with weights float (by the module each graph op came from), not
    activations or single functional ops."""
    from dataclasses import replace

    if point.toggle is None or (point.toggle == "module" and point.weighted):
        return point
    return replace(point, toggle=None, reason="the PT2E backend keeps layers with weights float, not activations or "
                                             "functional ops: keep the layers around it float, or use --backend torch.ao")


def _static_points(module, mode: str, engine: str, input_spec) -> tuple[list[QuantPoint], str | None]:
    """The quantization points static quantization would make, from preparing (and, in FX mode,
    converting) a copy of the model once, without data. Returns (points, a note when that failed)."""
    import copy

    if input_spec is None:
        return [], None

    recipe = QuantRecipe(model="-", engine=engine, observer="minmax")  # the observer kind does not move points
    example = input_spec.example()
    try:
        set_engine(engine)
        with quiet_ao(), forgetting_ao_models():
            if mode == "eager":
                from torch.ao.quantization import prepare

                prepared = copy.deepcopy(module).eval()
                prepared.fuse_model(is_qat=False)
                prepared.qconfig = static_qconfig(recipe)
                prepare(prepared, inplace=True)
                return eager_points(prepared, example), None
            from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx

            prepared = prepare_fx(copy.deepcopy(module).eval(), fx_mapping(recipe), example)
            converted = convert_fx(copy.deepcopy(prepared))
            return classify(fx_points(prepared), prepared, converted, engine), None
    except Exception as exc:  # noqa: BLE001 - the layer list still works; the run will name the failure
        return [], (f"could not list the quantization points ({type(exc).__name__}: {first_line(exc)}); "
                    "layers are listed, ops between them are not")


def _mark_quantizable(module, layers, groups, method: str, mode: str) -> None:
    import torch.nn as nn

    kinds = torchao_kinds() if mode == "torchao" else dynamic_kinds() if method == "dynamic" else static_kinds()
    inside_mha = {f"{n}." for n, m in module.named_modules() if isinstance(m, nn.MultiheadAttention)}
    members = {m: head for head, group in groups.items() for m in group}
    for name, m in module.named_modules():
        info = layers[name]
        if name in members:
            info.group_head = members[name]
        if name in groups:
            info.group = groups[name]
        if any(name.startswith(p) for p in inside_mha):
            info.reason = ("inside nn.MultiheadAttention, which stays float" if method != "dynamic" or mode == "torchao"
                           else "nn.MultiheadAttention's out_proj cannot be dynamically quantized")
        elif name in members and members[name] != name:
            info.reason = f"fused into {members[name]}; toggling it toggles that group"
        elif isinstance(m, kinds) or name in groups:
            info.quantizable = True
        elif list(m.children()):
            info.reason = "container"
        elif mode == "torchao":
            info.reason = "torchao's low-bit weights cover Linear and Embedding layers only"
        elif method == "dynamic":
            info.reason = "dynamic quantization covers Linear, LSTM, GRU and RNN cells only"
        elif isinstance(m, (nn.LSTM, nn.GRU, nn.RNN)):
            info.reason = f"{type(m).__name__} has no static int8 kernel here; use the dynamic method"
        else:
            info.reason = _FOLLOWS_NEIGHBOURS
