"""A tiny decoder LM for low-bit latency figures: transformers' LlamaForCausalLM with a small config and
random weights (seeded; nothing is downloaded: no checkpoint, no tokenizer). Not a quality benchmark:
random weights say nothing about what 4-bit costs a trained LM, only what it costs in time and bytes.

Covers: a decoder-only transformer fed token ids (int64, one input 1 x N), RMSNorm, rotary positions,
grouped-query attention (8 heads, 4 KV heads), SwiGLU MLPs, an untied lm_head; the output is the logits
(1 x N x vocab). No KV cache: each forward runs the whole 1 x N prefix (N = 1 is one decode step with an
empty cache).

    qtapp-cli quantize benchmarks/real_models/tiny_llama.py:build --input-shape 1,64 --input-dtype int64 \
        --backend torchao --method dynamic --weight-bits 4 --format pte --out DIR

`build(**kwargs)` takes LlamaConfig fields (e.g. --kwargs '{"num_hidden_layers": 2}') and `seed`.
"""

from __future__ import annotations

import torch
from torch import nn

CONFIG = dict(vocab_size=8192, hidden_size=512, intermediate_size=1408, num_hidden_layers=2,
              num_attention_heads=8, num_key_value_heads=4, max_position_embeddings=512,
              tie_word_embeddings=False, use_cache=False)


class CausalLMLogits(nn.Module):
    """LlamaForCausalLM without a cache: input_ids (1 x N) -> logits (1 x N x vocab)."""

    def __init__(self, lm):
        super().__init__()
        self.lm = lm

    def forward(self, input_ids):
        return self.lm(input_ids=input_ids, use_cache=False).logits


def build(seed: int = 0, **overrides):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    cfg = LlamaConfig(**{**CONFIG, **overrides})
    model = CausalLMLogits(LlamaForCausalLM(cfg).eval()).eval()
    model.example_input_dtype = "int64"
    return model


if __name__ == "__main__":
    m = build()
    n = sum(p.numel() for p in m.parameters())
    ids = torch.randint(0, CONFIG["vocab_size"], (1, 16))
    with torch.no_grad():
        print(f"{n / 1e6:.1f}M parameters; logits {tuple(m(ids).shape)}")
