"""The second quantization backend: torchao's PT2E flow with the XNNPACK quantizer, and ExecuTorch files.

torch.export captures the model (batch dimension dynamic, so calibration and evaluation batches of any
size run), `prepare_pt2e` inserts observers where the XNNPACK quantizer says (symmetric int8, weights
per channel or per tensor), calibration feeds them, and `convert_pt2e` makes the reference int8 graph
(quantize/dequantize around float ops) that ExecuTorch's XNNPACK delegate lowers to int8 kernels.

Float islands are made on a copy of the calibrated graph, before conversion: the observers feeding the
ops of a kept-float module are bypassed, so those ops read float weights and float activations while
every other observer keeps its calibrated range. One calibration therefore serves every float set, as
in the FX backend. (The quantizer's own `set_module_name(name, None)` would need a new calibration for
each set.)

torchao and executorch are an optional extra: `pip install -e ".[executorch]"`.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import warnings
from typing import Iterator

from ..base.errors import QtappError, UsageError, first_line
from ..base.progress import Stage
from .base import Calibrated, feed_batches, qat_train

EXTRA = 'pip install -e ".[executorch]" (executorch 1.5.1 and torchao 0.18.0, about 160 MB)'
MAX_BATCH = 4096


def available() -> bool:
    try:
        _import_quiet()
    except ImportError:
        return False
    return True


def require(what: str) -> None:
    """Refuse `what` with how to get it when torchao or executorch is missing."""
    try:
        _import_quiet()
    except ImportError as exc:
        raise UsageError(f"{what} needs torchao and executorch, which are not installed ({exc.name or exc} is "
                         f"missing): {EXTRA}") from None


def _import_quiet():
    # torchao's import registers an Enum with torch's pytree, which logs a deprecation warning meant for
    # torchao's authors: not for a user of this app.
    logger = logging.getLogger("torch.utils._pytree")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            import executorch.exir  # noqa: F401
            import torchao.quantization.pt2e.quantize_pt2e  # noqa: F401
            from executorch.backends.xnnpack.quantizer import xnnpack_quantizer  # noqa: F401
    finally:
        logger.setLevel(level)


@contextlib.contextmanager
def quiet_pt2e() -> Iterator[None]:
    """torch.export's and torchao's notices about their own internals, filtered around our calls only."""
    with warnings.catch_warnings():
        for pattern in (r".*torch\.export.*", r".*capture_pre_autograd_graph.*", r".*is deprecated.*",
                        r".*Enum subclass.*", r".*_check_is_size.*", r".*TorchScript.*", r".*API is experimental.*",
                        r".*were assigned during export.*"):
            warnings.filterwarnings("ignore", message=pattern)
        yield


def quantizer(per_channel: bool, qat: bool = False):
    from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import (
        XNNPACKQuantizer,
        get_symmetric_quantization_config,
    )

    return XNNPACKQuantizer().set_global(get_symmetric_quantization_config(is_per_channel=per_channel, is_qat=qat))


def export_graph(model, example: tuple, dynamic_batch: bool = True):
    """torch.export of `model` on `example`, with every input's first dimension dynamic when asked
    (the exported module then runs calibration batches of any size). Said plainly when it fails."""
    import torch
    from torch.export import Dim, export

    batch = Dim("batch", min=1, max=MAX_BATCH)
    shapes = tuple({0: batch} for _ in example) if dynamic_batch else None
    if dynamic_batch:  # a batch of 1 would be specialised to a constant: export at 2
        example = tuple(t.expand(2, *t.shape[1:]).contiguous() if t.shape[0] == 1 else t for t in example)
    if not isinstance(model, torch.fx.GraphModule):  # an exported graph refuses eval(); it is in eval already
        model = model.eval()
    try:
        with quiet_pt2e():
            return export(model, example, dynamic_shapes=shapes, strict=False)
    except Exception as exc:  # noqa: BLE001 - torch.export's many failure types all mean "cannot capture"
        why = f"{type(exc).__name__}: {first_line(exc)}"
        raise QtappError(f"torch.export cannot capture this model ({why[:400]}): the PT2E backend and .pte files need "
                         "a model torch.export can trace" + (" with a dynamic batch dimension" if dynamic_batch else "")
                         + "; --backend torch.ao quantizes it with FX or eager mode instead") from None


class Pt2eBackend:
    """Static post-training quantization (and QAT) with torchao's PT2E flow and the XNNPACK quantizer."""

    name = "pt2e"
    qat = False

    def prepare_and_calibrate(self, model, recipe, inventory, example, calib, cancel):
        require("--backend pt2e")
        from torchao.quantization.pt2e.quantize_pt2e import prepare_pt2e

        stage = Stage("export", 1, cancel)
        yield stage.step(0, "torch.export")
        program = export_graph(copy.deepcopy(model), example)
        with quiet_pt2e():
            prepared = prepare_pt2e(program.module(), quantizer(recipe.per_channel))
        yield stage.step(1, "prepared with the XNNPACK quantizer")
        with quiet_pt2e():
            stats = yield from feed_batches(prepared, calib, cancel)
        return Calibrated(self, recipe, model, tuple(inventory.heads), prepared, frozenset(), stats,
                          points=tuple(inventory.points))

    def convert(self, calibrated, float_heads, recipe):
        from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e

        graph = copy.deepcopy(calibrated.prepared)
        keep_float(graph, set(float_heads) - set(calibrated.float_at_prepare))  # QAT: those trained float already
        with quiet_pt2e():
            return convert_pt2e(graph)

    def reference(self, model):
        return model


class Pt2eQatBackend(Pt2eBackend):
    """PT2E quantization-aware training: prepare_qat_pt2e on the exported graph, a short fine-tune."""

    qat = True

    def prepare_and_calibrate(self, model, recipe, inventory, example, calib, cancel):
        require("--backend pt2e")
        from torchao.quantization.pt2e import move_exported_model_to_eval, move_exported_model_to_train
        from torchao.quantization.pt2e.quantize_pt2e import prepare_qat_pt2e

        teacher = model.eval()
        program = export_graph(copy.deepcopy(model).train(), example)
        with quiet_pt2e():
            prepared = prepare_qat_pt2e(program.module(), quantizer(recipe.per_channel, qat=True))
        keep_float(prepared, inventory.float_layers)  # QAT trains its float layers float
        move_exported_model_to_train(prepared)
        stats = yield from qat_train(prepared, teacher, calib, recipe, cancel, quiet=quiet_pt2e)
        move_exported_model_to_eval(prepared)
        return Calibrated(self, recipe, model, tuple(inventory.heads), prepared, frozenset(inventory.float_layers),
                          stats, points=tuple(inventory.points))


def _owner(node) -> str:
    stack = node.meta.get("nn_module_stack") or {}
    return list(stack.values())[-1][0] if stack else ""


def _is_observer(node, graph_module) -> bool:
    if node.op != "call_module":
        return False
    from torchao.quantization.pt2e import FakeQuantizeBase, ObserverBase

    return isinstance(graph_module.get_submodule(node.target), (ObserverBase, FakeQuantizeBase))


def keep_float(graph_module, heads) -> None:
    """Bypass, in place, the weight observers of every op of a module in `heads`: after convert_pt2e those
    ops compute in float, on float weights, from their dequantized int8 input. A head with no weighted op
    of its own in the graph is refused by name."""
    heads = set(heads)
    if not heads:
        return
    found = set()
    for node in list(graph_module.graph.nodes):
        if node.op != "call_function":
            continue
        owner = _owner(node)
        if owner not in heads:
            continue
        if "conv1d" in str(node.target) and node.args and _is_observer(node.args[0], graph_module):
            _refuse_float_conv1d(owner)  # a quantized Conv1d: XNNPACK cannot take it float among int8 ones
        for arg in list(node.all_input_nodes):
            # Only the observers of the op's own weights: its activation input stays the int8 value its
            # producer computes (a producer left without an int8 consumer would leave a lone dequantize
            # that ExecuTorch has no kernel for), as a float island reads a dequantized input in FX.
            if _is_observer(arg, graph_module) and arg.args and getattr(arg.args[0], "op", "") == "get_attr":
                node.replace_input_with(arg, arg.args[0])
                found.add(owner)
    # Between float ops, no rounding: an activation observer whose value a float op (or op chain) computes
    # and only float ops (or the model's output) read is bypassed too, as FX keeps a float island's
    # inside float. One an int8 op computes or reads stays: its int8 kernel needs it.
    for node in list(graph_module.graph.nodes):
        if not _is_observer(node, graph_module) or not node.args or getattr(node.args[0], "op", "") == "get_attr":
            continue
        readers_float = all(u.op == "output" or (u.op == "call_function" and _owner(u) in heads) for u in node.users)
        if readers_float and _computed_float(node.args[0], heads, graph_module):
            node.replace_all_uses_with(node.args[0])
    missing = sorted(heads - found)
    if missing:
        raise QtappError(f"the PT2E graph has no quantized weighted op of {', '.join(missing)} to keep float (the "
                         "PT2E backend keeps layers with weights float, not activations or functional ops; "
                         "--backend torch.ao toggles those)")
    graph_module.graph.eliminate_dead_code()
    graph_module.recompile()


def _refuse_float_conv1d(owner: str) -> None:
    """ExecuTorch 1.5's XNNPACK delegate cannot take a float Conv1d among int8 layers: reading an int8
    (dequantized) input, lowering stops ("Weight and Input should both be quantized"); fed float, the
    program lowers but XNNPACK refuses it when the runtime loads it (a depthwise node it calls invalid).
    So a Conv1d is not kept float on this backend, and says why."""
    raise QtappError(f"ExecuTorch's XNNPACK delegate cannot run a float Conv1d ({owner}) among int8 layers (lowering "
                     "or loading the .pte fails): it stays int8 on the PT2E backend; --backend torch.ao keeps it float")


def _computed_float(node, heads, graph_module) -> bool:
    """Whether `node`'s value comes from an op of a float head through unrounded single-input ops."""
    while node.op == "call_function":
        if _owner(node) in heads:
            return True
        inputs = [a for a in node.all_input_nodes if a.op != "get_attr"]
        if len(inputs) != 1 or _is_observer(inputs[0], graph_module):
            return False
        node = inputs[0]
    return False


# -- ExecuTorch ------------------------------------------------------------------------------------------


