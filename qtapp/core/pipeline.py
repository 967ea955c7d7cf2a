"""The main job, end to end: open, calibrate, quantize, measure, export, write recipe and report.

Everything the run writes is staged and published as one folder (`ResultSet`): a failure, a cancel
or a kill leaves the previous result set as it was. The CLI runs it; the GUI runs the same steps."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from .export import ExportResult
from .progress import CancelToken, Job
from .recipe import QuantRecipe
from .report import build_report, write_report
from .resultset import ResultSet
from .session import QuantSession


def recipe_reads(recipe: QuantRecipe, recipe_file: Path | None = None) -> list[Path]:
    """The files and folders a recipe makes a run read: none of them may be written over."""
    reads = [Path(recipe_file)] if recipe_file else []
    model = recipe.model
    head, sep, _ = model.rpartition(":")
    candidates = [head if sep and head.endswith(".py") else model, recipe.weights,
                  recipe.calibration.source, recipe.evaluation.source]
    for value in candidates:
        if value and value not in ("demo", "random", "auto", "none", "DEFAULT") and Path(value).expanduser().exists():
            reads.append(Path(value).expanduser())
    return reads


def run_recipe(recipe: QuantRecipe, out_dir: Path, formats, trust: bool = False,
               cancel: CancelToken | None = None, recipe_file: Path | None = None) -> Job[dict]:
    cancel = cancel or CancelToken()
    recipe.resolve_paths(Path.cwd())
    recipe.check_applicable()
    results = ResultSet(Path(out_dir), recipe_reads(recipe, recipe_file))
    results.check()  # before any work: a refusal costs nothing
    session = yield from QuantSession.open(recipe, trust)
    session.check_export_formats(formats)
    results.reads += session.loaded.protected_paths
    with results:
        yield from session.quantize(cancel)
        yield from session.measure(cancel)
        staged: list[ExportResult] = yield from session.export(results.staging, formats, cancel)
        exports = [replace(e, path=str(results.final_path(Path(e.path).name))) for e in staged]
        report = build_report(session, exports)
        session.recipe.save(results.path("recipe.json"))
        write_report(report, results.path("report.json"))
        cancel.check()
        results.publish()
    return report
