"""torch.export ExportedPrograms as .pt2 files: the float model's `graph.pt2` (the graph Model Explorer
opens, on whose nodes report/graph.py lays the run's figures), and the `.pt2` export format (a torchao run's
model with its low-bit weights, and the float model it is timed against). A model torch.export cannot
capture gets no graph and one line saying why; as an export format, that line is the error."""

from __future__ import annotations

import io

import torch

from ..base.errors import QtappError, first_line
from ..base.tensors import first_tensor


def export_float_graph(module, example: tuple):
    """(the ExportedProgram of `module` run on `example`, "") or (None, why it could not be exported).
    The module is only traced (fake tensors): its weights and buffers are not changed."""
    try:
        with torch.no_grad():
            return torch.export.export(module, tuple(example)), ""
    except Exception as exc:  # noqa: BLE001 - whatever torch.export refuses, the run goes on without a graph
        return None, f"torch.export cannot capture this model ({type(exc).__name__}: {first_line(exc, 200)})"


def pt2_bytes(program) -> bytes:
    """The ExportedProgram as the bytes of a .pt2 file (written atomically by the caller)."""
    buffer = io.BytesIO()
    torch.export.save(program, buffer)
    return buffer.getvalue()


def pt2_file(module, example: tuple) -> bytes:
    """The .pt2 file of `module` exported at `example`'s shapes (fixed: batch 1, as a .pte), or a
    QtappError saying why torch.export cannot capture it."""
    program, why = export_float_graph(module, example)
    if program is None:
        raise QtappError(f"{why}: no .pt2 file")
    return pt2_bytes(program)


def load_pt2(path):
    """The callable module of a .pt2 file (torch.export.load imports torchao itself for its weights)."""
    return torch.export.load(str(path)).module()


def run_pt2(path, inputs_list) -> list:
    """Load a .pt2 and run it once per inputs tuple: the outputs' first tensors."""
    module = load_pt2(path)
    with torch.no_grad():
        return [first_tensor(module(*inputs)) for inputs in inputs_list]
