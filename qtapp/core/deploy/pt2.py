"""The float model as a torch.export ExportedProgram (`graph.pt2`): the graph Model Explorer opens, on
whose nodes report/graph.py lays the run's figures. A model torch.export cannot capture (Python control
flow on tensor values, unsupported ops) gets no file and one line saying why; nothing else depends on it."""

from __future__ import annotations

import io

import torch

from ..base.errors import first_line


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
