"""ExecuTorch files: lowering a PT2E graph (or a float model) to a XNNPACK-delegated .pte, explaining a
lowering that fails, and running a .pte in ExecuTorch's runtime."""

from __future__ import annotations

import contextlib
import os
import tempfile
from dataclasses import dataclass
from typing import Iterator

from ..base.errors import QtappError, first_line
from ..quantize.pt2e import _owner, export_graph, quiet_pt2e, require
from ..quantize.torchao_lowbit import is_torchao_model
from .made import Made


@contextlib.contextmanager
def native_stderr_to(sink: list[str]) -> Iterator[None]:
    """Capture what C++ code writes to file descriptor 2 (ExecuTorch's runtime logs its CPU probing on
    every load) into `sink`, so it reaches the user only when something failed."""
    import sys

    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile(mode="w+b") as tmp:
        os.dup2(tmp.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            tmp.seek(0)
            sink.append(tmp.read().decode("utf-8", "replace"))


@dataclass(frozen=True)
class Lowered:
    program: bytes  # the .pte file
    delegated: int  # call_delegate nodes: XNNPACK subgraphs
    not_delegated: tuple[str, ...]  # the kernels the program calls outside XNNPACK, one entry per call
    reshaped: tuple[str, ...] = ()  # the ops given a 4-D view for XNNPACK (_four_d_for_xnnpack), in words


def lower_to_pte(model, example: tuple) -> Lowered:
    """Lower `model` (float, or a converted PT2E graph) at `example`'s shapes to an ExecuTorch program
    with the XNNPACK delegate. Ops XNNPACK lays out channels-last but the model runs on tensors of another
    rank get a 4-D view first (see _four_d_for_xnnpack); a failure names the op and the real cause."""
    require(".pte export")
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir import to_edge_transform_and_lower

    program = export_graph(model, example, dynamic_batch=False)
    graph = program.module()
    reshaped = _four_d_for_xnnpack(graph)
    if reshaped:  # the same computation, captured again with the views
        program = export_graph(graph, example, dynamic_batch=False)
    try:
        with quiet_pt2e():
            edge = to_edge_transform_and_lower(program, partitioner=[XnnpackPartitioner()])
            shipped = edge.to_executorch(_backend_config(model))
            buffer = shipped.buffer
    except Exception as exc:  # noqa: BLE001 - the lowering's failure types all mean "no .pte"; --debug shows its trace
        raise QtappError(lowering_failure(exc, model, program)) from exc
    delegated, other = shipped_calls(shipped.executorch_program)
    return Lowered(bytes(buffer), delegated, other, tuple(reshaped))


def shipped_calls(program) -> tuple[int, tuple[str, ...]]:
    """(delegate calls, the kernel each other call runs, one entry per call) of an ExecuTorch program (the
    schema of the .pte that ships): read after to_executorch, whose passes change the ops the edge graph
    holds (torchao's dequantize_affine -> embedding is fused into quantized_decomposed::embedding_4bit)."""
    from executorch.exir.schema import DelegateCall, KernelCall  # the executorch extra

    plan = program.execution_plan[0]
    delegated, kernels = 0, []
    for chain in plan.chains:
        for instruction in chain.instructions:
            call = instruction.instr_args
            if isinstance(call, DelegateCall):
                delegated += 1
            elif isinstance(call, KernelCall):
                op = plan.operators[call.op_index]  # the out variant of an op: mul.Scalar_out is mul.Scalar's
                overload = "" if op.overload == "out" else op.overload.removesuffix("_out")
                name = op.name.removeprefix("aten::")
                kernels.append(f"{name}.{overload}" if overload else name)
    return delegated, tuple(kernels)


def _backend_config(model):
    """torchao's low-bit embeddings (dequantize_affine -> embedding) become ExecuTorch's quantized
    embedding kernels only with its quant fusion pass; without it: "Missing out variants:
    torchao::dequantize_affine". Any other model gets the default configuration."""
    from executorch.exir import ExecutorchBackendConfig

    if not hasattr(model, "graph") and is_torchao_model(model):
        load_quantized_kernels()
        return ExecutorchBackendConfig(do_quant_fusion_and_const_prop=True)
    return ExecutorchBackendConfig()


def load_quantized_kernels() -> None:
    """ExecuTorch's quantized kernels (a torchao embedding's embedding_4bit / embedding_byte) registered in
    this process: a .pte that uses them fails to load without ("Missing operator")."""
    import executorch.kernels.quantized  # noqa: F401 - registers the kernels as it is imported


# ExecuTorch 1.5's XNNPACK delegate takes these ops whatever their input's rank (its partitioner checks no
# rank), but its ChannelsLastTaggedReshapePass lays each one out channels-last (NHWC), which only a 4-D
# tensor can be: a PReLU after a Linear (N x C), after a Conv1d (N x C x L), or a 2-D pool on an unbatched
# C x H x W tensor stops the whole lowering with "Attempting to convert non-NHWC compatible node to NHWC"
# (pytorch/executorch#18624, after 1.5, makes the pass leave non-4-D PReLU alone). Each gets a 4-D view of
# its input and its output is viewed back: the same values, in one op XNNPACK can lay out.
def _four_d_for_xnnpack(graph_module) -> list[str]:
    """Rewrite, in place, each PReLU and 2-D pool of `graph_module` (an exported graph's module, aten ops)
    whose input is not 4-D into view -> op -> view back. What was rewritten, in words."""
    import math

    import torch

    aten = torch.ops.aten
    changed = []
    for node in list(graph_module.graph.nodes):
        if node.op != "call_function" or not node.args or not isinstance(node.args[0], torch.fx.Node):
            continue
        name = _op_name(node.target)
        val = node.args[0].meta.get("val")
        if val is None or not hasattr(val, "shape") or val.dim() == 4:
            continue
        shape = [int(s) for s in val.shape]
        if node.target == aten.prelu.default:
            # channels stay dim 1 (PReLU's channel dim); a tensor of rank < 2 has one slope for all values
            four = [shape[0], shape[1], math.prod(shape[2:]), 1] if len(shape) >= 2 else [1, 1, 1, math.prod(shape)]
        elif node.target in (aten.max_pool2d.default, aten.avg_pool2d.default) and len(shape) == 3:
            four = [1, *shape]  # an unbatched C x H x W input, as torch itself pools it
        else:
            continue
        out = node.meta.get("val")
        back = [int(s) for s in out.shape] if out is not None and hasattr(out, "shape") else None
        if back is None:
            continue
        graph = graph_module.graph
        with graph.inserting_before(node):
            view_in = graph.call_function(aten.reshape.default, (node.args[0], four))
        with graph.inserting_after(node):
            view_out = graph.call_function(aten.reshape.default, (node, back))
        node.replace_all_uses_with(view_out, delete_user_cb=lambda user: user is not view_out)
        node.args = (view_in, *node.args[1:])
        owner = _owner(node)
        changed.append(f"{name} on a {'x'.join(map(str, shape)) or 'scalar'} tensor"
                       + (f" ({owner})" if owner else "") + f" viewed as {'x'.join(map(str, four))}")
    if changed:
        graph_module.recompile()
    return changed


def lowering_failure(exc: BaseException, model, program) -> str:
    """What went wrong lowering `program` (exported from `model`), for the user: the step that failed, the
    op it failed on (read off the failing pass's own frames, else found by keeping op types out of the
    delegate), and the real cause (the innermost exception, not the pass manager's wrapper)."""
    import re

    chain, seen = [], set()
    cur: BaseException | None = exc
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        chain.append(cur)
        cur = cur.__cause__ or cur.__context__
    root = chain[-1]
    step = next((m.group(1) for e in chain for m in [re.search(r"running the '(\w+)' pass", str(e))] if m), None)
    cause = f"{type(root).__name__}: {first_line(root)[:300]}"
    where = f"XNNPACK's {step}" if step else "ExecuTorch"
    node = _failing_node(root)
    if node is not None:
        op = _describe_node(node)
    else:
        blocking = _op_blocking_delegation(program)
        op = f"{blocking} (the lowering works with it kept out of the XNNPACK delegate)" if blocking else None
    text = f"lowering to ExecuTorch failed in {where}" + (f" at {op}" if op else "") + f": {cause}"
    floats = _kept_float(model)
    owner = _owner(node) if node is not None else ""
    if node is not None and owner and owner in floats:
        text += f"; {owner} is kept float next to int8 layers: keep it int8 for the .pte"
    elif op is None and floats:
        text += f" (kept float next to int8 layers: {', '.join(floats)}; try the .pte with fewer float layers)"
    else:
        text += "; the model cannot ship as a .pte as it is (the other formats do not go through this lowering)"
    return text


def _kept_float(model) -> list[str]:
    """The conv and linear layers of a converted PT2E graph that read float weights while others read int8
    ones: layers kept float (the XNNPACK quantizer leaves other weighted ops, such as PReLU, float anyway)."""
    if not hasattr(model, "graph") or not any("quantize" in str(n.target) for n in model.graph.nodes):
        return []
    out = []
    for node in model.graph.nodes:
        name = str(getattr(node.target, "__name__", node.target))
        if node.op == "call_function" and ("conv" in name or "linear" in name) and len(node.args) > 1 \
                and getattr(node.args[1], "op", "") == "get_attr":
            out.append(_owner(node) or node.name)
    return list(dict.fromkeys(out))


def _failing_node(root: BaseException):
    """The graph node the failing code was working on: the innermost frame of ExecuTorch's code that holds
    an op node (`target_node`, then `node`)."""
    import torch

    frames = []
    tb = root.__traceback__
    while tb is not None:
        frames.append(tb.tb_frame)
        tb = tb.tb_next
    for frame in reversed(frames):
        if "executorch" not in frame.f_code.co_filename:
            continue
        local = frame.f_locals
        for key in ("target_node", "node"):
            node = local.get(key)
            if isinstance(node, torch.fx.Node) and node.op == "call_function":
                return node
    return None


def _describe_node(node) -> str:
    import torch

    name = _op_name(node.target)
    shapes = [tuple(a.meta["val"].shape) for a in node.all_input_nodes[:1]
              if isinstance(a.meta.get("val"), torch.Tensor)]
    owner = _owner(node)
    text = name + (f" on a {len(shapes[0])}-D {'x'.join(map(str, shapes[0]))} tensor" if shapes else "")
    return text + (f" ({owner})" if owner else "")


def _op_blocking_delegation(program) -> str | None:
    """When the failure names no op: the op type whose absence from the XNNPACK partition lets the lowering
    through, found by keeping halves of the delegated op types out (about 2 log2(n) lowerings), or None
    (the failure is not in a delegated op, or needs two op types kept out)."""
    try:
        from executorch.backends.xnnpack.partition.config import ALL_PARTITIONER_CONFIGS
        from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
        from executorch.exir import to_edge, to_edge_transform_and_lower

        def base(target) -> str:
            return str(getattr(target, "__name__", target)).split(":")[0].split(".")[-2:][0]

        with quiet_pt2e():  # the ops as captured, and as the edge dialect decomposes them
            present = {base(n.target) for n in program.graph.nodes if n.op == "call_function"}
            present |= {base(n.target) for n in to_edge(program).exported_program().graph.nodes
                        if n.op == "call_function"}
    except Exception:  # noqa: BLE001 - the search only refines the message
        return None
    candidates = [c for c in ALL_PARTITIONER_CONFIGS if "quantize" not in getattr(c, "target_name", "quantize")
                  and getattr(c, "target_name", "").split(".")[0] in present]

    def lowers_without(excluded) -> bool:
        try:
            with quiet_pt2e():
                configs = [c for c in ALL_PARTITIONER_CONFIGS if c not in excluded]
                to_edge_transform_and_lower(program, partitioner=[XnnpackPartitioner(configs=configs)]).to_executorch()
        except Exception:  # noqa: BLE001 - still failing
            return False
        return True

    if not candidates or not lowers_without(candidates):
        return None
    while len(candidates) > 1:
        half, rest = candidates[:len(candidates) // 2], candidates[len(candidates) // 2:]
        if lowers_without(half):
            candidates = half
        elif lowers_without(rest):
            candidates = rest
        else:
            return None
    return candidates[0].target_name.split(".")[0]


def weighted_ops(graph_module) -> tuple[list[str], list[str]]:
    """(modules whose weighted ops read int8 weights, modules whose weighted ops read float ones) of a
    converted PT2E graph: what a .pte runs in int8 and what it leaves float."""
    int8, floats = [], []
    for node in graph_module.graph.nodes:
        if node.op != "call_function" or "quantize" in str(node.target):
            continue
        inputs = node.all_input_nodes
        params = [a for a in inputs if a.op == "get_attr" and "bias" not in str(a.target)]
        dq_weights = [a for a in inputs if "dequantize" in str(a.target)
                      and any(b.op == "get_attr" for b in a.all_input_nodes)]
        if dq_weights:
            int8.append(_module_of(node))
        elif params:
            floats.append(_module_of(node))
    return list(dict.fromkeys(int8)), [m for m in dict.fromkeys(floats) if m not in int8]


def _module_of(node) -> str:
    return _owner(node) or node.name


def _op_name(target) -> str:
    name = str(getattr(target, "__name__", target))
    return name.replace("aten.", "").replace(".default", "")


def run_pte(path, inputs_list) -> list:
    """Load a .pte in the ExecuTorch runtime and run it once per inputs tuple: the outputs' first tensors."""
    require(".pte files")
    logs: list[str] = []
    try:
        with native_stderr_to(logs), quiet_pt2e():
            from executorch.runtime import Runtime

            load_quantized_kernels()
            method = Runtime.get().load_program(str(path)).load_method("forward")
            return [method.execute(list(inputs))[0] for inputs in inputs_list]
    except Exception as exc:  # noqa: BLE001 - the runtime's own log says why; it is shown here
        said = " ".join(line for line in "".join(logs).splitlines() if "cpuinfo" not in line)[-300:]
        raise QtappError(f"the ExecuTorch runtime could not run {path}: {type(exc).__name__}: {first_line(exc)}"
                         + (f" ({said})" if said else "")) from None


def summarize_ops(names) -> str:
    from collections import Counter

    counts = Counter(names)
    return ", ".join(f"{n} x{c}" if c > 1 else n for n, c in counts.most_common())


def pte_of(model, example: tuple) -> Made:
    """The ExecuTorch program of `model` (a converted PT2E graph, or a float model), XNNPACK-delegated."""
    lowered = lower_to_pte(model, example)
    notes = [f"{lowered.delegated} XNNPACK-delegated subgraph(s)"]
    int8, floats = weighted_ops(model) if hasattr(model, "graph") else ([], [])
    if int8 and floats:
        notes.append(f"int8 weights in {len(int8)} of {len(int8) + len(floats)} layers; float: {', '.join(floats)}")
    elif int8:
        notes.append(f"int8 weights in all {len(int8)} layers with weights")
    elif hasattr(model, "graph") and floats and any("quantize" in str(n.target) for n in model.graph.nodes):
        notes.append(f"no layer has int8 weights: {', '.join(floats)} run in float (the file is mostly float)")
    if lowered.reshaped:
        notes.append("given a 4-D view for XNNPACK, which lays these ops out channels-last (ExecuTorch 1.5 fails to "
                     f"lower them on other ranks; same values): {'; '.join(lowered.reshaped)}")
    if lowered.not_delegated:
        notes.append(f"not delegated (ExecuTorch's own CPU kernels): {summarize_ops(lowered.not_delegated)}")
    else:
        notes.append("every op delegated to XNNPACK")
    return Made(lowered.program, "PT2E with the XNNPACK quantizer, lowered by ExecuTorch", tuple(notes))
