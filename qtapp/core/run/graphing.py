"""The graph job: the float model exported with torch.export (deploy/pt2.py) and the result's figures on
its nodes (report/graph.py), written into a folder as graph.pt2 and Model Explorer's node data files.

`analyze --graph` runs it inside the result folder's staging (run.command); the window's "Show on graph"
runs it on its worker thread into a folder of its own, then opens Model Explorer on the files.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from ..base.errors import UsageError, first_line
from ..base.progress import CancelToken, Job, Stage
from ..base.resultset import write_bytes_atomic
from ..deploy.measure import worker_command
from ..deploy.pt2 import export_float_graph, pt2_bytes
from ..report.graph import FILES, LOCAL_FILE, GraphOverlay, overlay
from ..report.results import RunResult

GRAPH_FILE = "graph.pt2"
INSTALL = 'pip install "qtapp[graph]" (or pip install ai-edge-model-explorer)'


@dataclass(frozen=True)
class GraphRequest:
    """What the graph job reads, frozen on the owner's thread (graph_request)."""

    result: RunResult
    module: Any  # the float model: traced, never changed
    example: tuple  # the run's example input, batch 1
    folded: Mapping[str, tuple[str, ...]]  # {point: modules and ops folded into it} (report.graph.place_points)
    folder: Path


@dataclass(frozen=True)
class GraphFiles:
    """What the graph job wrote: graph.pt2 and the node data files, or nothing and why."""

    folder: Path
    written: tuple[str, ...] = ()  # file names in `folder`, graph.pt2 first
    overlay: GraphOverlay | None = None
    why_not: str = ""  # why no graph was written (torch.export refused the model)

    @property
    def node_data_paths(self) -> tuple[Path, ...]:
        return tuple(self.folder / name for name in self.written if name != GRAPH_FILE)

    def model_explorer_args(self) -> list[str]:
        """Model Explorer's arguments for these files: `graph.pt2 --node_data_paths=a.json,b.json`, with
        node_data.json last: Model Explorer colours the graph by the node data it was given last."""
        paths = sorted(self.node_data_paths, key=lambda p: p.name == LOCAL_FILE)
        return [str(self.folder / GRAPH_FILE), "--node_data_paths=" + ",".join(str(p) for p in paths)]

    def summary(self) -> str:
        """One line for the CLI and the window's status bar."""
        if not self.written:
            return f"no {GRAPH_FILE} written: {self.why_not}"
        o = self.overlay
        line = (f"{len(o.nodes)} of {len(o.nodes) + len(o.unplaced)} points on the graph's nodes "
                f"({o.graph_nodes} nodes)")
        if o.worst is not None:
            point, node, db = o.worst
            line += f"; worst {point} {db:.1f} dB on node {node} (red)"
        return line


def model_explorer_command(files: GraphFiles) -> list[str] | None:
    """The command that opens `files` in Model Explorer: this Python's own package (which has torch to read
    the .pt2; started like the timing worker, importing nothing from the working folder), else a
    `model-explorer` on PATH; None when neither is installed (INSTALL says how to get it)."""
    if importlib.util.find_spec("model_explorer") is not None:
        return [*worker_command("model_explorer"), *files.model_explorer_args()]
    found = shutil.which("model-explorer")
    return [found, *files.model_explorer_args()] if found else None


def folded_points(inventory) -> dict[str, tuple[str, ...]]:
    """{point: what is folded into it} as report.graph.place_points reads it: a module point's fusion group
    (conv+bn+relu), an op point's absorbed ops (the ReLU module, else the ReLU function, of an add_relu)."""
    out = {}
    for p in inventory.points.values():
        info = inventory.layers.get(p.name)
        if p.kind == "module" and info is not None and info.group:
            out[p.name] = tuple(info.group)
        elif p.kind == "op" and (p.absorbs or p.fused):
            out[p.name] = tuple(p.absorbs) or tuple(p.fused)
    return out


def graph_request(session, folder: Path) -> GraphRequest:
    """The session's current result and float model, frozen now (on the owner's thread)."""
    result = session.result
    if result is None:
        raise UsageError("nothing analysed yet: run calibration / quantize first, then show it on the graph")
    if result.mode != session.mode:
        raise UsageError(f"the result on screen was made in {result.mode} mode and the model is now set up for "
                         f"{session.mode}: run again, then show it on the graph")
    if session.input_spec is None:
        raise UsageError("the graph needs an example input: give the input shape")
    return GraphRequest(result, session.loaded.module, tuple(session.input_spec.example(batch=1)),
                        folded_points(session.inventory), Path(folder))


def write_graph(request: GraphRequest, cancel: CancelToken | None = None) -> Job[GraphFiles]:
    """Export the float model and write graph.pt2 and the node data files into `request.folder`. A model
    torch.export cannot capture: nothing written, and why (the caller goes on)."""
    stage = Stage("graph", 2, cancel)
    yield stage.step(0, "torch.export of the float model")
    program, why = export_float_graph(request.module, request.example)
    if program is None:
        return GraphFiles(request.folder, why_not=why)
    try:
        data = pt2_bytes(program)
    except Exception as exc:  # noqa: BLE001 - an exported program torch cannot serialise: no graph, said why
        return GraphFiles(request.folder, why_not=f"torch.export.save failed ({type(exc).__name__}: "
                                                  f"{first_line(exc, 200)})")
    yield stage.step(1, "node data")
    found = overlay(request.result.layers, program.graph.nodes, request.folded)
    request.folder.mkdir(parents=True, exist_ok=True)
    write_bytes_atomic(request.folder / GRAPH_FILE, data)
    for name in FILES:
        write_bytes_atomic(request.folder / name, (json.dumps(found.files[name], indent=1) + "\n").encode("utf-8"))
    yield stage.step(2, f"{len(found.nodes)} points on the graph")
    return GraphFiles(request.folder, (GRAPH_FILE, *FILES), found)
