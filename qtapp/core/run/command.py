"""A CLI command as one job: open the model, run one model job on it (jobs.py), and with an output
folder, export, write recipe.json, report.json (report.html, tune.json) and publish the folder whole.

The window runs the same jobs one at a time on its own session; this module only strings them together
for a command line. The caller's recipe is never changed: the session works on its own copy.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch.nn as nn

from ..base.progress import CancelToken, Job
from ..base.resultset import ResultSet, write_bytes_atomic
from ..config.recipe import QuantRecipe
from ..model.loading import refuse_torchscript_for_quantizing
from ..quantize.base import batchnorms_without_stats
from ..report.html import to_html
from ..report.render import json_safe, report_dict, write_report
from ..report.results import RunResult
from .exporting import export
from .graphing import graph_request, write_graph
from .jobs import analyse, quantize, sensitivity, tune
from .session import QuantSession

ACTIONS = ("quantize", "analyse", "sensitivity", "tune")


@dataclass(frozen=True)
class Command:
    """What a command asks of the core: a recipe, the job to run on it, and (with `out`) the result
    folder to write. `model_named_by` / `metric_named_by`: the recipe file the model spec / the metric was
    read from (not typed by the user), whose Python callable then needs `trust`."""

    recipe: QuantRecipe
    action: str = "quantize"  # one of ACTIONS
    out: Path | None = None  # None: write nothing, return the result
    formats: tuple[str, ...] = ()
    trust: bool = False
    recipe_file: Path | None = None  # the recipe file the command read: never written over
    model_named_by: Path | None = None
    metric_named_by: Path | None = None
    html: bool = False
    measure: bool = True  # size and latency of the run's own file (quantize, tune)
    time_files: bool = True  # each exported file timed against float in its runtime (with `measure`)
    method_given: bool = True  # False: the user named no method (see _dynamic_when_untraceable)
    target: Any = None  # tune: metrics.Target
    budget: Any = None  # tune: search.Budget
    graph: bool = False  # with `out`: graph.pt2 (the float model, torch.export) and the node data of its points

    def __post_init__(self) -> None:
        if self.action not in ACTIONS:
            raise ValueError(f"unknown action {self.action!r}; one of {', '.join(ACTIONS)}")
        if self.graph and self.out is None:
            raise ValueError("graph files are written into the result folder: give `out`")


def run_command(command: Command, cancel: CancelToken | None = None) -> Job[RunResult]:
    """Open, run the command's job and adopt its outcome; with `out`, export and write the result folder.
    Everything is staged and published as one folder (`ResultSet`): a failure, a cancel or a kill leaves
    the previous result set as it was."""
    cancel = cancel or CancelToken()
    recipe = copy.deepcopy(command.recipe)
    recipe.resolve_paths(Path.cwd())
    recipe.check_applicable()
    refuse_torchscript_for_quantizing(recipe.model)  # before loading it runs the file's code
    results = ResultSet(Path(command.out), recipe_reads(recipe, command.recipe_file)) if command.out else None
    if results is not None:
        results.check()  # before any work: a refusal costs nothing
    session = yield from QuantSession.open(recipe, command.trust, named_by=command.model_named_by,
                                           metric_named_by=command.metric_named_by)
    if not command.method_given:
        _dynamic_when_untraceable(session)
    if results is None:
        return (yield from _run_job(command, session, cancel))
    session.check_export_formats(command.formats)
    session.ship_formats = tuple(command.formats)  # what this run builds: nothing else is lowered or exported
    results.reads += session.loaded.protected_paths
    with results:
        yield from _run_job(command, session, cancel)
        request = session.export_request(results.staging, command.formats,
                                         measure=command.measure and command.time_files)
        staged = yield from export(request, cancel)
        result = staged.evolve(exports=tuple(replace(e, path=str(results.final_path(Path(e.path).name)))
                                             for e in staged.exports))
        if command.graph:  # a model torch.export cannot capture gets no graph, and the run goes on
            files = yield from write_graph(graph_request(session, results.staging), cancel)
            result = result.evolve(graph=replace(files, folder=results.final_path("")))
        session.adopt_result(result)
        session.recipe.save(results.path("recipe.json"))
        write_report(report_dict(result), results.path("report.json"))
        if command.html:
            write_bytes_atomic(results.path("report.html"), to_html(result).encode("utf-8"))
        if result.tune is not None and command.action == "tune":  # every step tried
            write_bytes_atomic(results.path("tune.json"),
                               (json.dumps(json_safe(result.tune.to_json()), indent=2) + "\n").encode("utf-8"))
        cancel.check()
        results.publish()
    return result


def _run_job(command: Command, session: QuantSession, cancel: CancelToken) -> Job[RunResult]:
    """The command's model job on the session's snapshot, adopted."""
    snap = session.snapshot()
    if command.action == "tune":
        return session.adopt_tuned((yield from tune(snap, command.target, command.budget, cancel, command.measure)))
    if command.action == "sensitivity":
        outcome = yield from sensitivity(snap, cancel)
    elif command.action == "analyse":
        outcome = yield from analyse(snap, cancel)
    else:
        outcome = yield from quantize(snap, cancel, command.measure)
    return session.adopt(outcome)


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


def _dynamic_when_untraceable(session) -> None:
    """Static quantization by default, as the recipe says, unless torch.fx cannot trace the model (a Hugging
    Face encoder, Python control flow on tensor values): then dynamic quantization, which needs no trace, and
    a note saying why."""
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


