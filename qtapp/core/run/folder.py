"""(docstring)"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from ..base.progress import CancelToken, Job
from ..base.resultset import ResultSet, write_bytes_atomic
from ..config.recipe import QuantRecipe
from ..model.loading import refuse_torchscript_for_quantizing
from ..quantize.base import batchnorms_without_stats
from ..report.html import to_html
from ..report.render import json_safe, report_dict, write_report
from ..report.results import RunResult
from .session import QuantSession  # the owner object; it imports this module


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


def analyze(recipe: QuantRecipe, trust: bool = False, cancel: CancelToken | None = None,
            model_named_by: Path | None = None, metric_named_by: Path | None = None,
            with_sensitivity: bool = False) -> Job[RunResult]:
    """The CLI's `analyze` without --out: open, calibrate, convert and measure every point (and with
    `with_sensitivity`, each point's sensitivity both ways); writes nothing."""
    recipe.resolve_paths(Path.cwd())
    recipe.check_applicable()
    refuse_torchscript_for_quantizing(recipe.model)  # before loading it runs the file's code
    session = yield from QuantSession.open(recipe, trust, named_by=model_named_by, metric_named_by=metric_named_by)
    job = session.sensitivity_job(cancel) if with_sensitivity else session.quantize_job(cancel, measure=False)
    outcome = yield from job
    return session.adopt(outcome)


def _quantize_action(measure: bool):
    def run(session, cancel):
        outcome = yield from session.quantize_job(cancel, measure)
        return session.adopt(outcome)
    return run


def quantize_to_folder(recipe: QuantRecipe, out_dir: Path, formats, trust: bool = False,
                       cancel: CancelToken | None = None, recipe_file: Path | None = None,
                       html: bool = False, model_named_by: Path | None = None, measure: bool = True,
                       metric_named_by: Path | None = None, action=None, extra_files=None,
                       time_files: bool = True, method_given: bool = True) -> Job[RunResult]:
    """The CLI's action, end to end: open, calibrate, quantize, measure, export, write recipe and report.
    Everything is staged and published as one folder (`ResultSet`): a failure, a cancel or a kill leaves
    the previous result set as it was. `model_named_by` / `metric_named_by`: the recipe file the model
    spec / the metric was read from (not typed by the user), whose Python callable then needs `trust`.
    `action(session, cancel)`: the job whose adopted result is written (default: quantize); `extra_files
    (result)`: {file name: bytes} written beside the report; `time_files`: time each exported file against
    float in its runtime (with `measure`). `method_given` False (the user named no method): a model torch.fx
    cannot trace is quantized dynamically instead of failing in static mode, and the result says so."""
    cancel = cancel or CancelToken()
    recipe.resolve_paths(Path.cwd())
    recipe.check_applicable()
    refuse_torchscript_for_quantizing(recipe.model)  # before loading it runs the file's code
    results = ResultSet(Path(out_dir), recipe_reads(recipe, recipe_file))
    results.check()  # before any work: a refusal costs nothing
    session = yield from QuantSession.open(recipe, trust, named_by=model_named_by, metric_named_by=metric_named_by)
    if not method_given:
        _dynamic_when_untraceable(session)
    session.check_export_formats(formats)
    session.ship_formats = tuple(formats)  # what this run builds: nothing else is lowered or exported
    results.reads += session.loaded.protected_paths
    with results:
        yield from (action or _quantize_action(measure))(session, cancel)
        staged = yield from session.export_job(results.staging, formats, measure=measure and time_files)(cancel)
        result = staged.evolve(exports=tuple(replace(e, path=str(results.final_path(Path(e.path).name)))
                                             for e in staged.exports))
        session.adopt_result(result)
        report = report_dict(result)
        session.recipe.save(results.path("recipe.json"))
        write_report(report, results.path("report.json"))
        if html:
            write_bytes_atomic(results.path("report.html"), to_html(result).encode("utf-8"))
        for name, data in (extra_files(result) if extra_files else {}).items():
            write_bytes_atomic(results.path(name), data)
        cancel.check()
        results.publish()
    return result


def _dynamic_when_untraceable(session) -> None:
    """Static quantization by default, as the recipe says, unless torch.fx cannot trace the model (a Hugging
    Face encoder, Python control flow on tensor values): then dynamic quantization, which needs no trace, and
    a note saying why."""
    import torch.nn as nn

    why = session.inventory.untraceable
    if session.recipe.method != "static" or session.mode != "fx" or not why:
        return
    module = session.loaded.module
    if batchnorms_without_stats(module):  # static's own message says what to change; dynamic would skip them
        return
    if not any(isinstance(m, (nn.Linear, nn.LSTM, nn.GRU)) for m in module.modules()):
        return  # nothing dynamic quantization could make int8: the static error says more
    session.update_recipe(method="dynamic")
    session.notes.append(f"static quantization needs a forward torch.fx can trace, and this model's cannot be ({why}): "
                         "quantized with --method dynamic instead (its Linear, LSTM and GRU layers, activations "
                         "rounded per call); --method static shows the error")


def tune_to_folder(recipe: QuantRecipe, out_dir: Path, formats, target, budget, **kw) -> Job[RunResult]:
    """The CLI's `tune`: search, then write what `quantize` writes for the configuration found (its
    recipe reproduces it), and tune.json with every step tried."""
    import json

    def run(session, cancel):
        outcome = yield from session.tune_job(target, budget, cancel)
        return session.adopt_tuned(outcome)

    def tune_json(result):
        return (json.dumps(json_safe(result.tune.to_json()), indent=2) + "\n").encode("utf-8")

    return (yield from quantize_to_folder(recipe, out_dir, formats, action=run,
                                          extra_files=lambda r: {"tune.json": tune_json(r)}, **kw))
