"""The bench job: time a result folder's files again, each against the float model in its own runtime
(`qtapp-cli bench DIR [SPEC]`)."""

from __future__ import annotations

from pathlib import Path

from ..base.errors import ProgramFileRefused, UsageError
from ..base.inputs import InputSpec
from ..base.progress import CancelToken, Job
from ..config.recipe import QuantRecipe
from ..deploy.export import FORMATS, ExportResult
from ..model.loading import load_model
from .exporting import time_exports


def bench_folder(folder: Path, trust: bool = False, cancel: CancelToken | None = None,
                 spec: str | None = None) -> Job[list]:
    """`qtapp-cli bench DIR [SPEC]`: every file a result folder lists, timed again against the float model
    (`spec`, else the one the folder's recipe names) in the same format and runtime. Reads the folder,
    writes nothing to it."""
    import json

    folder = Path(folder)
    report_path, recipe_path = folder / "report.json", folder / "recipe.json"
    if not report_path.is_file() or not recipe_path.is_file():
        raise UsageError(f"{folder} is not a result folder: it needs the report.json and recipe.json that "
                         "qtapp-cli quantize --out writes")
    try:
        listed = json.loads(report_path.read_text(encoding="utf-8")).get("exports") or []
    except (json.JSONDecodeError, UnicodeDecodeError, AttributeError) as exc:
        raise UsageError(f"{report_path} is not a qtapp report ({exc})") from None
    except RecursionError:
        raise UsageError(f"{report_path} is nested too deeply to be a qtapp report") from None
    exports = []
    for e in listed:
        path = folder / Path(str(e.get("path", ""))).name
        if e.get("format") not in FORMATS:
            continue
        if not path.is_file():
            raise UsageError(f"{path.name} is listed in {report_path.name} but missing from {folder}")
        exports.append(ExportResult(e["format"], str(path), path.stat().st_size, bool(e.get("verified")), None,
                                    quantizer=str(e.get("quantizer") or "")))
    if not exports:
        raise UsageError(f"{report_path} lists no exported file to time")
    # torch.export.load unpickles a .pt2's tensors in full (weights_only=False) when the safe load fails: code
    programs = [Path(e.path).name for e in exports if e.format in ("pt", "ptl", "pt2")]
    if programs and not trust:  # timing loads them: a folder this run did not write may hold anything
        raise ProgramFileRefused(folder / programs[0], ".pt2" if programs[0].endswith(".pt2") else "TorchScript", (
            f"{folder} holds TorchScript or .pt2 files ({', '.join(programs)}): they are programs, and timing them "
            "loads and runs their code. If you trust that folder's files, pass --trust; without it, quantize times the "
            "files it writes itself (a folder it did not just write may hold anything)."))
    recipe = QuantRecipe.load(recipe_path)

    shapes = InputSpec.parse(recipe.input_shape, recipe.input_dtype or "float32") if recipe.input_shape else None
    loaded = yield from load_model(spec or recipe.model, recipe.weights, recipe.kwargs, trust, shapes,
                                   named_by=None if spec else recipe_path)  # a SPEC typed here is consent
    example = loaded.input_spec.example(batch=1)
    return (yield from time_exports(exports, loaded, example, cancel or CancelToken()))
