"""The run report (report.json): a rendering of the session's current `RunResult` (see render.py)."""

from __future__ import annotations

import json
from pathlib import Path

from .recipe import atomic_write_text
from .render import SCHEMA_VERSION, report_dict

__all__ = ["SCHEMA_VERSION", "build_report", "write_report"]


def build_report(session, exports=None) -> dict:
    """report.json of the session's result (with `exports`, when given, as its files)."""
    result = session.result
    if result is None:
        raise ValueError("nothing quantized yet: no report to build")
    if exports is not None:
        result = result.evolve(exports=tuple(exports))
    return report_dict(result)


def write_report(report: dict, path: Path) -> None:
    atomic_write_text(path, json.dumps(report, indent=2) + "\n")
