"""The main job, end to end: open, calibrate, quantize, measure, export, write recipe and report.
The CLI runs it; the GUI runs the same steps one at a time."""

from __future__ import annotations

from pathlib import Path

from .export import ExportResult
from .progress import CancelToken, Job
from .recipe import QuantRecipe
from .report import build_report, write_report
from .session import QuantSession


def run_recipe(recipe: QuantRecipe, out_dir: Path, formats, trust: bool = False,
               cancel: CancelToken | None = None) -> Job[dict]:
    cancel = cancel or CancelToken()
    out_dir = Path(out_dir)
    recipe.resolve_paths(Path.cwd())
    session = yield from QuantSession.open(recipe, trust)
    session.check_export_formats(formats)
    out_dir.mkdir(parents=True, exist_ok=True)
    session.recipe.save(out_dir / "recipe.json")  # written first: a failed run can be re-run as is
    yield from session.quantize(cancel)
    yield from session.measure(cancel)
    exports: list[ExportResult] = yield from session.export(out_dir, formats, cancel)
    report = build_report(session, exports)
    session.recipe.save(out_dir / "recipe.json")
    write_report(report, out_dir / "report.json")
    return report
