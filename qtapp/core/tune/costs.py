"""What a configuration costs, without building it: the bytes of the file that ships, and batch-1 latency.

Size: the TorchScript file as torch.ao serialises it. An int8 layer's weights take 1 byte a value plus a
scale (float64) and a zero point (int64) per channel (one pair per tensor without per-channel scales); a
float layer's 4 bytes a value; and a dynamic float16 layer's ALSO 4 (torch.ao stores its packed float16
weights as float32 and repacks them at load: it saves no space). Anchored at the files measured for the
start configuration and the float model (`anchored`), the model is exact at both ends and scales the
per-layer differences between them, so every configuration tried is the size its file would have (tests
hold it within 2% of the written file for every kind of move). Latency: linear in the share of the model's
multiply-accumulates kept float, between the all-int8 and all-float latencies measured once on the
shipped files: an estimate (the start and the chosen configuration are measured).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace


@dataclass(frozen=True)
class CostModel:
    weight_elems: dict  # toggle target -> elements of its int8-able weights
    macs: dict  # toggle target -> multiply-accumulates at batch 1
    other_bytes: int  # parameters and buffers that stay float whatever is chosen
    float_ms: float | None = None
    int8_ms: float | None = None
    total_macs: int = field(default=0)
    channels: dict = field(default_factory=dict)  # toggle target -> output channels (a scale each)
    per_channel: bool = True  # the recipe's default for weight scales
    anchor: tuple | None = None  # (measured start bytes, its raw estimate, scale of the differences)
    # torchao's .pte: (the recipe's weight bits, its group size) - "int8" then means those bits and
    # "float16" the 8-bit step up (ExecuTorch packs 4-bit weights two a byte, a bf16 scale per group;
    # 8-bit weights a byte each, a float32 scale per channel). None: torch.ao's TorchScript.
    bits: tuple | None = None

    @classmethod
    def build(cls, model, heads, example) -> "CostModel":
        """`heads`: the toggle targets (module names; functional ops weigh nothing)."""
        import torch
        import torch.nn as nn

        modules = dict(model.named_modules())
        weight_elems, macs, channels = {}, {}, {}
        counted: set[int] = set()
        hooks = []
        for head in heads:
            m = modules.get(head)
            if m is None:
                weight_elems[head], macs[head] = 0, 0
                continue
            ws = [p for n, p in m.named_parameters() if "weight" in n]
            weight_elems[head] = sum(w.numel() for w in ws)
            channels[head] = sum(w.shape[0] for w in ws if w.dim() > 1)
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
        return cls(weight_elems, macs, other, total_macs=sum(macs.values()), channels=channels)

    def with_latency(self, float_ms: float | None, int8_ms: float | None) -> "CostModel":
        return replace(self, float_ms=float_ms, int8_ms=int8_ms)

    def anchored(self, start_bytes: int, float_bytes: int, start_float, start_float16=(), per_tensor=()) -> "CostModel":
        """The model pinned to two measured files: the start configuration's int8 file (`start_bytes`)
        and the float model's (`float_bytes`); the per-layer differences scaled to span them exactly."""
        plain = replace(self, anchor=None)
        raw_start = plain.size_bytes(start_float, start_float16, per_tensor)
        raw_float = plain.size_bytes(set(self.weight_elems))
        scale = (float_bytes - start_bytes) / (raw_float - raw_start) if raw_float > raw_start else 1.0
        return replace(self, anchor=(start_bytes, raw_start, scale))

    def head_bytes(self, head: str, state: str, per_channel: bool) -> int:
        """`state`: int8, float or float16 (stored as float32 by torch.ao)."""
        elems = self.weight_elems[head]
        if self.bits is not None:
            bits, group = self.bits
            if state == "float":
                return 4 * elems
            if state == "float16" or bits == 8:  # 8-bit per output channel
                return elems + 4 * max(self.channels.get(head, 1), 1)
            return elems // 2 + 2 * (elems // (group or 32))
        if state in ("float", "float16"):
            return 4 * elems
        return elems + 16 * (max(self.channels.get(head, 1), 1) if per_channel else 1)

    def weight_bytes(self, float_points, float16=(), per_tensor=()) -> int:
        """The bytes of the weights a configuration chooses for (what quantization can shrink)."""
        total = 0
        for head in self.weight_elems:
            state = "float" if head in float_points else "float16" if head in float16 else "int8"
            total += self.head_bytes(head, state, self.per_channel and head not in per_tensor)
        return total

    def size_bytes(self, float_points, float16=(), per_tensor=()) -> int:
        raw = self.other_bytes + self.weight_bytes(float_points, float16, per_tensor)
        if self.anchor is None:
            return raw
        start_bytes, raw_start, scale = self.anchor
        return int(round(start_bytes + scale * (raw - raw_start)))

    def mean_bits(self, float_points, float16=()) -> float | None:
        """Bits per weight value of the layers a configuration chooses for, on average (weighted by their
        values; scales not counted): float 32, int8 8, torch.ao's dynamic float16 16, torchao's 4 or 8 (its
        step up from 4 is 8). What `--budget bits<=4.5` limits. None: no weights to choose for."""
        total = sum(self.weight_elems.values())
        if not total:
            return None

        def bits(head: str) -> int:
            if head in float_points:
                return 32
            if self.bits is not None:
                return 8 if head in float16 or self.bits[0] == 8 else 4
            return 16 if head in float16 else 8
        return sum(bits(h) * n for h, n in self.weight_elems.items()) / total

    def latency_ms(self, float_points, float16=()) -> float | None:
        if self.float_ms is None or self.int8_ms is None or not self.total_macs:
            return None
        slow = sum(m for h, m in self.macs.items() if h in float_points or h in float16)
        return self.int8_ms + (self.float_ms - self.int8_ms) * slow / self.total_macs
