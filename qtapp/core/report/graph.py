"""The run's error on its graph: each quantization point's figures on the node of the float model's
exported graph (torch.export) that produces the point's value, as Model Explorer's "node data".

Model Explorer (`ai-edge-model-explorer`) opens a `.pt2` ExportedProgram as one graph whose id is "graph"
and whose node ids are the FX node names (`conv2d`, `relu_1`, `x`); a node data file is
`{"graph": {"name", "results": {node id: {"value", "bgColor"}}, "gradient"}}`, one value per node. So
the figures go in three files: `node_data.json` (local SQNR, the colour scale: this run's worst point is
the reddest node), `node_data_accumulated.json` and `node_data_diagnosis.json` (text). Each entry of
node_data.json also carries the point's name, its accumulated SQNR and its diagnosis, for a script.

A point's figures go on ONE node, the one whose output is the point's value: that is the tensor they were
measured on and where the int8 model rounds. The other nodes of a fused group (the conv and BatchNorm of
conv+bn+relu) produce values the int8 model never has, and an op point (a residual add) lives in a module
that holds other points: painting every node of a module would give figures to tensors nobody measured,
and count a point several times in Model Explorer's per-layer summaries.

Pure functions of the result and the graph's nodes (anything with `name`, `op`, `meta`, `users`, as
torch.fx nodes have): no torch here.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Iterable, Mapping, Sequence

GRAPH_ID = "graph"  # Model Explorer's id for the one graph of a .pt2
LOCAL_FILE = "node_data.json"
ACCUMULATED_FILE, DIAGNOSIS_FILE = "node_data_accumulated.json", "node_data_diagnosis.json"
FILES = (LOCAL_FILE, ACCUMULATED_FILE, DIAGNOSIS_FILE)
# The colours of render.sqnr_colour's bands (red, amber, green), spread over this run's own range: the lowest
# figure is red whatever its value, so the worst point stands out even in a run where every point is fine
# (the window's tree, with absolute bands, says whether it is).
GRADIENT = ((0.0, (0xd6, 0x27, 0x28)), (0.5, (0xf0, 0xa3, 0x0a)), (1.0, (0x2c, 0xa0, 0x2c)))
_NO_FINDING = "no worse than the rest"
# FX op names whose aten op is named otherwise
_CANONICAL = {"iadd": "add", "imul": "mul", "isub": "sub", "truediv": "div", "itruediv": "div",
              "floordiv": "floor_divide", "add_relu": "add", "mul_relu": "mul"}


@dataclass(frozen=True)
class GraphOverlay:
    """The node data files of a result on one exported graph, and where each point went."""

    files: Mapping[str, dict]  # {file name: Model Explorer node data}
    nodes: Mapping[str, str]  # {point name: the node id its figures are on}
    unplaced: tuple[str, ...] = ()  # points with no node in the graph (an op torch.export traced away)
    worst: tuple[str, str, float] | None = None  # (point, node id, local SQNR dB): the reddest node
    graph_nodes: int = 0  # how many nodes the graph has

    @property
    def nodes_with_data(self) -> int:
        return len(self.files[LOCAL_FILE][GRAPH_ID]["results"]) if self.files else 0


def colour_at(stop: float) -> str:
    """The gradient's colour at `stop` (0: the lowest figure, 1: the highest), interpolated as Model
    Explorer interpolates a gradient (so the colours written agree with the gradient the file declares)."""
    stop = min(max(stop, 0.0), 1.0)
    for (s0, c0), (s1, c1) in zip(GRADIENT, GRADIENT[1:]):
        if s0 <= stop <= s1:
            t = (stop - s0) / (s1 - s0)
            return "#" + "".join(f"{int(a + (b - a) * t):02x}" for a, b in zip(c0, c1))
    raise AssertionError(stop)


def _gradient_json() -> list[dict]:
    return [{"stop": s, "bgColor": "#" + "".join(f"{v:02x}" for v in c)} for s, c in GRADIENT]


def _calls(node) -> list[str]:
    """The module calls a node runs in, outermost first, named as points name them: `block1.0`, and
    `relu@1` for a module's second call (torch.export marks it in the stack's key)."""
    out = []
    for key, value in (node.meta.get("nn_module_stack") or {}).items():
        path = value[0] if isinstance(value, (tuple, list)) else ""
        if not path:
            continue
        call = str(key).rpartition("@")[2] if "@" in str(key) else ""
        out.append(f"{path}@{call}" if call.isdigit() and call != "0" else path)
    return out


def _op_name(node) -> str:
    name = str(getattr(node.target, "__name__", node.target)).split(".")[0]
    return name.rstrip("_")


def _exit(members: list, order: Mapping) -> object:
    """The node of `members` whose value leaves them (read by another node, or the graph's output); the
    last one in graph order when several do."""
    inside = set(members)
    exits = [n for n in members if not n.users or any(u not in inside for u in n.users)]
    return max(exits or members, key=order.__getitem__)


def _op_order(point) -> int:
    """The index of an op point among its scope's calls of the same op: `layer1/add_1` is 1."""
    tail = point.name.rpartition("/")[2]
    m = re.fullmatch(re.escape(point.op) + r"_(\d+)", tail)
    return int(m.group(1)) if m else 0


def place_points(points: Sequence, nodes: Iterable,
                 folded: Mapping[str, Iterable[str]] | None = None) -> dict[str, str]:
    """{point name: the id of the graph node producing its value}, for the points found in the graph.

    `points`: with `name`, `kind` (input | module | op | constant), `op` and `parent` (the module an op is
    called in), as PointResult has them. `folded`, from the inventory (run.graphing.folded_points): for a
    module point, the other modules of its fusion group (conv+bn+relu: the bn and relu); for an op point,
    the ops it absorbed in order, each a module path or an op name (the ReLU of an add_relu). The point's
    value is the output of the last of them."""
    folded = folded or {}
    nodes = list(nodes)
    order = {n: i for i, n in enumerate(nodes)}
    compute = [n for n in nodes if n.op == "call_function"]
    calls = {n: _calls(n) for n in compute}
    placeholders = {n.name: n for n in nodes if n.op == "placeholder"}
    out: dict[str, str] = {}
    for p in points:
        node = None
        if p.kind == "input" and p.name.startswith("input:"):
            node = placeholders.get(p.name.split(":", 1)[1])
        elif p.kind == "module":
            module = re.sub(r"\[\d+\]$", "", p.name)  # a module's tuple output: the module's value
            mine = {module, *folded.get(p.name, ())}  # its fusion group's other modules
            members = [n for n in compute if mine & set(calls[n])]
            node = _exit(members, order) if members else None
            if node is not None and "ReLU" in p.op and _op_name(node) != "relu" and len(node.users) == 1:
                (nxt,) = node.users  # a ConvReLU2d that fused a functional F.relu (no module of its group)
                node = nxt if nxt.op == "call_function" and _op_name(nxt) == "relu" else node
        elif p.kind == "op":
            name = _CANONICAL.get(p.op, p.op).rstrip("_")
            same = [n for n in compute if (calls[n][-1] if calls[n] else "") == p.parent and _op_name(n) == name]
            k = _op_order(p)
            node = same[k] if k < len(same) else None
            for item in folded.get(p.name, ()):  # along what the point absorbed, one op each (add -> relu)
                nxt = next(iter(node.users)) if node is not None and len(node.users) == 1 else None
                modules = {c.partition("@")[0] for c in calls.get(nxt, ())}  # absorbs names a module, not its call
                if nxt is None or nxt.op != "call_function" or not (item in modules or item.lower() == _op_name(nxt)):
                    break
                node = nxt
        if node is not None:
            out[p.name] = node.name
    return out


def _diagnosis_text(point) -> str:
    if point.diagnosis:
        return "; ".join(f.text for f in point.diagnosis)
    if point.runs == "float":  # the reason says why (kept float, no int8 kernel for it)
        return point.reason or ("kept float" if point.kept_float else "runs in float")
    return _NO_FINDING


def _coloured(values: Mapping[str, float]) -> dict[str, dict]:
    """{node: {"value", "bgColor"}}: the lowest value red, the highest green. The colours are written out
    (not left to Model Explorer's gradient) so that a run whose points all have one figure still gets one
    colour, and the file says what the overlay shows."""
    if not values:
        return {}
    lo, hi = min(values.values()), max(values.values())
    return {node: {"value": round(v, 2), "bgColor": colour_at((v - lo) / (hi - lo) if hi > lo else 0.0)}
            for node, v in values.items()}


def node_data(layers: Sequence, where: Mapping[str, str]) -> dict[str, dict]:
    """{file name: Model Explorer node data} for `layers` (PointResult) placed on nodes by `where`
    ({point: node id}). Two points on one node (rare: a module point and an op point ending together): the
    node shows the worse one."""
    chosen: dict[str, object] = {}
    for p in layers:
        node = where.get(p.name)
        if node is None:
            continue
        held = chosen.get(node)
        if held is None or _worse(p, held):
            chosen[node] = p
    local = {n: p.local_sqnr_db for n, p in chosen.items() if p.local_sqnr_db is not None}
    accumulated = {n: p.accumulated_sqnr_db for n, p in chosen.items() if p.accumulated_sqnr_db is not None}
    local_results = _coloured(local)
    for n, entry in local_results.items():
        p = chosen[n]
        acc = p.accumulated_sqnr_db
        entry.update(point=p.name, accumulated_sqnr_db=round(acc, 2) if acc is not None else None,
                     diagnosis=_diagnosis_text(p))
    red = colour_at(0.0)
    diagnosis = {n: {"value": f"{p.name}: {_diagnosis_text(p)}", **({"bgColor": red} if p.diagnosis else {})}
                 for n, p in chosen.items()}
    return {
        LOCAL_FILE: {GRAPH_ID: {"name": "local SQNR dB (red: this run's worst point)", "results": local_results,
                                "gradient": _gradient_json()}},
        ACCUMULATED_FILE: {GRAPH_ID: {"name": "accumulated SQNR dB (int8 model up to here)",
                                      "results": _coloured(accumulated), "gradient": _gradient_json()}},
        DIAGNOSIS_FILE: {GRAPH_ID: {"name": "diagnosis", "results": diagnosis}},
    }


def _worse(a, b) -> bool:
    la = a.local_sqnr_db if a.local_sqnr_db is not None else float("inf")
    lb = b.local_sqnr_db if b.local_sqnr_db is not None else float("inf")
    return la < lb


def overlay(layers: Sequence, nodes: Iterable, folded: Mapping[str, Iterable[str]] | None = None) -> GraphOverlay:
    """The node data of `layers` (a result's PointResults) on the graph `nodes` (an ExportedProgram's
    `graph.nodes`), and where each point went; see place_points for `folded`."""
    nodes = list(nodes)
    where = place_points(layers, nodes, folded)
    files = node_data(layers, where)
    placed = [p for p in layers if p.name in where and p.local_sqnr_db is not None]
    worst = min(placed, key=lambda p: p.local_sqnr_db, default=None)
    return GraphOverlay(files, where, tuple(p.name for p in layers if p.name not in where),
                        (worst.name, where[worst.name], worst.local_sqnr_db) if worst is not None else None,
                        len(nodes))
