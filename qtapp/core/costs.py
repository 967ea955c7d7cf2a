"""What a configuration costs, estimated without building it: weight bytes and batch-1 latency.

Size: every layer's weights at 1 byte (int8), 2 (float16) or 4 (float) per value, plus everything else
at float size. Latency: linear in the share of the model's multiply-accumulates kept float, between the
all-int8 and all-float latencies measured once on the shipped TorchScript files. Both are estimates for
ranking configurations; the configuration that is written is measured.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class CostModel:
    weight_elems: dict  # toggle target -> elements of its int8-able weights
    macs: dict  # toggle target -> multiply-accumulates at batch 1
    other_bytes: int  # parameters and buffers that stay float whatever is chosen
    float_ms: float | None = None
    int8_ms: float | None = None
    total_macs: int = field(default=0)

    @classmethod
    def build(cls, model, heads, example) -> "CostModel":
        """`heads`: the toggle targets (module names; functional ops weigh nothing)."""
        import torch
        import torch.nn as nn

        modules = dict(model.named_modules())
        weight_elems, macs = {}, {}
        counted: set[int] = set()
        hooks = []
        for head in heads:
            m = modules.get(head)
            if m is None:
                weight_elems[head], macs[head] = 0, 0
                continue
            ws = [p for n, p in m.named_parameters() if "weight" in n]
            weight_elems[head] = sum(w.numel() for w in ws)
            counted.update(id(w) for w in ws)
            macs[head] = 0

            def hook(mod, args, out, head=head):
                t = out[0] if isinstance(out, (tuple, list)) else out
                if not torch.is_tensor(t):
                    return
                if isinstance(mod, nn.modules.conv._ConvNd):
                    per = mod.in_channels // mod.groups
                    for k in mod.kernel_size:
                        per *= k
                    macs[head] += t.numel() * per
                elif isinstance(mod, nn.Linear):
                    macs[head] += t.numel() * mod.in_features
                elif isinstance(mod, (nn.LSTM, nn.GRU, nn.RNNBase)):
                    macs[head] += sum(p.numel() for p in mod.parameters()) * (t.shape[1] if t.dim() == 3 else 1)
            hooks.append(m.register_forward_hook(hook))
        try:
            with torch.no_grad():
                model(*example)
        finally:
            for h in hooks:
                h.remove()
        other = sum(t.numel() * t.element_size() for t in [*model.parameters(), *model.buffers()] if id(t) not in counted)
        return cls(weight_elems, macs, other, total_macs=sum(macs.values()))

    def with_latency(self, float_ms: float | None, int8_ms: float | None) -> "CostModel":
        return CostModel(self.weight_elems, self.macs, self.other_bytes, float_ms, int8_ms, self.total_macs)

    def size_bytes(self, float_points, float16=()) -> int:
        total = self.other_bytes
        for head, elems in self.weight_elems.items():
            total += elems * (4 if head in float_points else 2 if head in float16 else 1)
        return total

    def latency_ms(self, float_points, float16=()) -> float | None:
        if self.float_ms is None or self.int8_ms is None or not self.total_macs:
            return None
        slow = sum(m for h, m in self.macs.items() if h in float_points or h in float16)
        return self.int8_ms + (self.float_ms - self.int8_ms) * slow / self.total_macs
