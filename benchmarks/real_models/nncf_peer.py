"""What NNCF did to a model it quantized (benchmarks/real_models.py's nncf worker): where its quantizers
are, which weighted layers it left float, its quantizer settings, which parameters it changed."""

from __future__ import annotations

WEIGHT_OPS = {"conv1d", "conv2d", "conv3d", "conv_transpose1d", "conv_transpose2d", "linear", "embedding",
              "addmm", "baddbmm"}


def nncf_details(model, qmodel, float_state) -> dict:
    """Where NNCF put its quantizers (weights: pre-hooks on a weighted op's weight port; activations:
    post-hooks on an op's output or pre-hooks on another input), which weighted layers it left float,
    its quantizer settings, and which parameters it changed (fast bias correction, SmoothQuant)."""
    import torch
    from nncf.torch.function_hook.hook_storage import decode_hook_name
    from nncf.torch.function_hook.wrapper import get_hook_storage
    from nncf.torch.quantization.layers import BaseQuantizer

    storage = get_hook_storage(qmodel)
    weight_q, act_q = {}, []
    for hname, hmod in storage.named_hooks():
        if not isinstance(hmod, BaseQuantizer):
            continue
        hook_type, op_name, port = decode_hook_name(hname)
        parts = op_name.split("/")
        op_type = parts[-2] if len(parts) >= 2 else "input"
        spec = {"kind": type(hmod).__name__.replace("Quantizer", "").lower(), "bits": int(hmod.num_bits),
                "per_channel": bool(hmod.per_channel), "signed": bool(getattr(hmod, "signed", False)),
                "narrow_range": bool(getattr(hmod, "narrow_range", False))}
        if hook_type == "pre_hooks" and int(port) >= 1 and op_type in WEIGHT_OPS:
            weight_q[op_name] = spec
        else:
            where = "after" if hook_type == "post_hooks" else f"before (input {port} of)"
            flags = ("signed" if spec["signed"] else "unsigned") + (" per-channel" if spec["per_channel"] else "")
            act_q.append({"at": f"{where} {op_name} [{spec['kind']} {flags}]", **spec})
    weighted = [n for n, m in model.named_modules()
                if isinstance(m, (torch.nn.Conv1d, torch.nn.Conv2d, torch.nn.Linear, torch.nn.LSTM, torch.nn.GRU,
                                  torch.nn.Embedding))]
    # NNCF names an op by its module path with "/" (ModuleList indices dropped when the model iterates a
    # slice of the list, as transformers' BertEncoder does) and the call's index last
    import collections
    import re

    prefixes = collections.Counter(op.rsplit("/", 2)[0].replace("/", ".") for op in weight_q)

    def squashed(name):
        return re.sub(r"(^|\.)[A-Za-z_]\w*\.\d+(?=\.|$)", "", name).lstrip(".")

    squashed_ops = collections.Counter()
    for pre, n in prefixes.items():
        squashed_ops[squashed(pre)] += n
    wanted = collections.Counter(squashed(n) for n in weighted if n not in prefixes)
    left_float = [n for n in weighted if n not in prefixes and squashed_ops[squashed(n)] < wanted[squashed(n)]]
    qstate = qmodel.state_dict()
    changed = []
    for k, v in float_state.items():
        w = qstate.get(k)
        if w is None or w.shape != v.shape or not v.is_floating_point():
            continue
        diff = float((w.float() - v.float()).abs().max())
        if diff > 0:
            changed.append({"param": k, "max_abs_change": round(diff, 6),
                            "relative": round(diff / max(float(v.abs().max()), 1e-12), 6)})
    changed.sort(key=lambda c: -c["relative"])
    biases = [c for c in changed if c["param"].endswith("bias")]
    others = [c for c in changed if not c["param"].endswith("bias")]
    kinds = sorted({f"{a['kind']} {'signed' if a['signed'] else 'unsigned'}{' per-channel' if a['per_channel'] else ''}"
                    for a in act_q})
    return {"weight_quantizers": len(weight_q), "activation_quantizers": len(act_q),
            "weighted_modules": len(weighted),
            "weight_quantizer_kinds": sorted({f"{w['kind']} per-channel={w['per_channel']} narrow={w['narrow_range']}"
                                              for w in weight_q.values()}),
            "activation_quantizer_kinds": kinds,
            "activation_quantizers_at": [a["at"] for a in act_q],
            "weighted_layers_left_float": left_float,
            "biases_changed": len(biases), "biggest_bias_changes": biases[:4],
            "other_params_changed": len(others), "biggest_other_changes": others[:4]}
