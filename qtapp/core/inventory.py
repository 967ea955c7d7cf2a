"""The layer inventory: every named module as a tree, what it is, and whether it is kept in float.

This object owns the per-layer quantize toggles (the GUI's tree is a view over it). Toggles act on
fusion-group heads: a BatchNorm folded into its conv toggles the conv, and says so; a container
toggles every quantizable layer under it; a name that does not exist is refused, never ignored.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from typing import Callable

from .errors import UsageError
from .fusion import eager_fusion_groups, fx_fusion_groups


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

    @property
    def parent(self) -> str | None:
        return None if not self.name else self.name.rpartition(".")[0]

    @property
    def short_name(self) -> str:
        return self.name.rpartition(".")[2] or "(model)"


def static_kinds():
    import torch.nn as nn

    return (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d,
            nn.Linear, nn.BatchNorm2d, nn.BatchNorm3d)


def dynamic_kinds():
    import torch.nn as nn

    return (nn.Linear, nn.LSTM, nn.GRU, nn.LSTMCell, nn.GRUCell, nn.RNNCell)


class LayerInventory:
    def __init__(self, layers: dict[str, LayerInfo], method: str, mode: str, engine: str,
                 notes: list[str] | None = None) -> None:
        self.layers = layers
        self.method, self.mode, self.engine = method, mode, engine
        self.notes = notes or []
        self.float_heads: set[str] = set()
        self._listeners: list[Callable[[list[str]], None]] = []

    # -- building --------------------------------------------------------------------------------
    @classmethod
    def build(cls, loaded, method: str, engine: str, mode: str) -> "LayerInventory":
        """`mode` is the resolved graph mode: "fx" or "eager" (static/qat), "dynamic" for dynamic."""
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
        if mode in ("fx", "eager"):
            try:
                groups = fx_fusion_groups(module) if mode == "fx" else eager_fusion_groups(module)
            except Exception as exc:  # noqa: BLE001 - an untraceable model is reported, not fatal here
                notes.append(f"FX cannot trace this model ({type(exc).__name__}: {str(exc).splitlines()[0]}); "
                             "static and QAT quantization will fail; dynamic quantization still works")
        _mark_quantizable(module, layers, groups, method, mode)
        return cls(layers, method, mode, engine, notes)

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
        prefix = f"{name}." if name else ""
        return [h for h in self.heads if h == name or h.startswith(prefix)]

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
            "layers": [{"name": i.name, "type": i.type, "params": i.params, "bytes": i.bytes,
                        "output_shape": i.output_shape, "quantizable": i.quantizable,
                        "state": self.state(i.name), "group_head": i.group_head,
                        "group": i.group or None, "reason": i.reason} for i in self],
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


def _mark_quantizable(module, layers, groups, method: str, mode: str) -> None:
    import torch.nn as nn

    kinds = dynamic_kinds() if method == "dynamic" else static_kinds()
    inside_mha = {f"{n}." for n, m in module.named_modules() if isinstance(m, nn.MultiheadAttention)}
    members = {m: head for head, group in groups.items() for m in group}
    for name, m in module.named_modules():
        info = layers[name]
        if name in members:
            info.group_head = members[name]
        if name in groups:
            info.group = groups[name]
        if any(name.startswith(p) for p in inside_mha):
            info.reason = ("inside nn.MultiheadAttention, which stays float" if method != "dynamic"
                           else "nn.MultiheadAttention's out_proj cannot be dynamically quantized")
        elif name in members and members[name] != name:
            info.reason = f"fused into {members[name]}; toggling it toggles that group"
        elif isinstance(m, kinds) or name in groups:
            info.quantizable = True
        elif list(m.children()):
            info.reason = "container"
        elif method == "dynamic":
            info.reason = "dynamic quantization covers Linear, LSTM, GRU and RNN cells only"
        elif isinstance(m, (nn.LSTM, nn.GRU, nn.RNN)):
            info.reason = f"{type(m).__name__} has no static int8 kernel here; use the dynamic method"
        elif isinstance(m, nn.Embedding):
            info.reason = "embeddings need weight-only quantization, which this method does not do"
        else:
            info.reason = "no weights to quantize: it follows its neighbours (int8 between int8 layers where the engine has a kernel)"
