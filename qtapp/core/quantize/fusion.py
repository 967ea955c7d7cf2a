"""Which modules fusion folds together, so a toggle on any member acts on its group's head.

FX: trace the model, fuse it, and see which call_module nodes disappeared; each one belongs to the
nearest surviving (fused) module upstream of it. Eager (torchvision's quantizable models): fuse a copy
with fuse_model() and map each module that became an Identity to the fused module before it.
"""

from __future__ import annotations

import copy

from ..base.compat import quiet_ao


def fx_fusion_groups(model) -> dict[str, list[str]]:
    """{head: [head, member, ...]} for every group FX fusion would create (eval mode)."""
    import torch.fx
    from torch.ao.quantization.quantize_fx import fuse_fx

    with quiet_ao():
        graph = torch.fx.symbolic_trace(copy.deepcopy(model).eval()).graph
        fused = fuse_fx(copy.deepcopy(model).eval())
    before = [n for n in graph.nodes if n.op == "call_module"]
    after = {n.target for n in fused.graph.nodes if n.op == "call_module"}
    fused_types = {name: type(m) for name, m in fused.named_modules()}
    groups: dict[str, list[str]] = {}
    for node in before:
        if node.target in after:
            continue
        # A member: walk up its first input until reaching a module fusion kept (the head).
        cur = node
        while cur is not None and not (cur.op == "call_module" and cur.target in after):
            args = [a for a in cur.args if isinstance(a, torch.fx.Node)]
            cur = args[0] if args else None
        if cur is None:
            continue
        groups.setdefault(cur.target, [cur.target])
        if node.target not in groups[cur.target]:
            groups[cur.target].append(node.target)
    # Fusions that fold nothing away (e.g. a lone Linear+ReLU where ReLU is functional) still form a
    # group of one head; record them so the head shows as fused.
    for name, cls in fused_types.items():
        if _is_intrinsic(cls) and name in after:
            groups.setdefault(name, [name])
    return groups


def eager_fusion_groups(model) -> dict[str, list[str]]:
    """{head: [head, member, ...]} from torchvision's fuse_model() on a copy."""
    import torch.nn as nn

    original = {name: type(m) for name, m in model.named_modules()}
    fused = copy.deepcopy(model).eval()
    with quiet_ao():
        fused.fuse_model(is_qat=False)
    groups: dict[str, list[str]] = {}
    head: str | None = None  # the last leaf (or fused module) seen, in registration order
    for name, m in fused.named_modules():
        if head is not None and name.startswith(f"{head}."):
            continue  # inside a fused module
        folded = isinstance(m, nn.Identity) and original.get(name) is not nn.Identity
        if folded and head is not None and head.rpartition(".")[0] == name.rpartition(".")[0]:
            groups.setdefault(head, [head]).append(name)
        elif _is_intrinsic(type(m)) or not list(m.children()):
            head = name
            if _is_intrinsic(type(m)):
                groups.setdefault(name, [name])
    return groups


def _is_intrinsic(cls) -> bool:
    return cls is not None and cls.__module__.startswith("torch.ao.nn.intrinsic")
