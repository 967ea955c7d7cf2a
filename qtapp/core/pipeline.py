"""The main job, end to end: open, calibrate, quantize, measure, export, write recipe and report.

Everything the run writes is staged and published as one folder (`ResultSet`): a failure, a cancel
or a kill leaves the previous result set as it was. The CLI runs it; the GUI runs the same steps."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from .html_report import to_html
from .progress import CancelToken, Job
from .recipe import QuantRecipe
from .render import report_dict
from .report import write_report
from .results import RunResult
from .resultset import ResultSet, write_bytes_atomic
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
               cancel: CancelToken | None = None, recipe_file: Path | None = None,
               html: bool = False, model_named_by: Path | None = None) -> Job[RunResult]:
    """`model_named_by`: the recipe file the model spec was read from (not typed by the user)."""
    cancel = cancel or CancelToken()
    recipe.resolve_paths(Path.cwd())
    recipe.check_applicable()
    results = ResultSet(Path(out_dir), recipe_reads(recipe, recipe_file))
    results.check()  # before any work: a refusal costs nothing
    session = yield from QuantSession.open(recipe, trust, named_by=model_named_by)
    session.check_export_formats(formats)
    results.reads += session.loaded.protected_paths
    with results:
        outcome = yield from session.quantize_job(cancel)
        session.adopt(outcome)
        staged = yield from session.export_job(results.staging, formats)(cancel)
        result = staged.evolve(exports=tuple(replace(e, path=str(results.final_path(Path(e.path).name)))
                                             for e in staged.exports))
        session.adopt_result(result)
        report = report_dict(result)
        session.recipe.save(results.path("recipe.json"))
        write_report(report, results.path("report.json"))
        if html:
            write_bytes_atomic(results.path("report.html"), to_html(result).encode("utf-8"))
        cancel.check()
        results.publish()
    return result
