"""A file another tool made (onnxruntime's quantizer, ExecuTorch's lowering): its bytes, who made it, what
to know about it. export.export_model writes, checks and times it like its own files."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Made:
    data: bytes
    quantizer: str  # who made the int8 file, in words
    notes: tuple[str, ...] = ()
    float_data: bytes | None = None  # the float file it was quantized from, when there was one
