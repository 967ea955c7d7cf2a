"""What a session remembers of the user's work: every run it made (its settings, figures and notes, as
report.json holds them: no model), and the settings and float choices the user went through (undo/redo).

The owner adds a run when it adopts one (`RunHistory.add`) and records the configuration after each edit
(`EditHistory.record`); both are plain data, so the window keeps a long session's runs for kilobytes."""

from __future__ import annotations

import copy
from dataclasses import dataclass

from ..config.recipe import QuantRecipe
from ..report.comparison import Comparison, compare
from ..report.render import report_dict

MAX_RUNS = 100  # a session's runs kept (the oldest go first); each is its report.json, tens of kB


@dataclass(frozen=True)
class RunRecord:
    number: int  # 1, 2, ... in the session's order
    action: str  # quantize | sensitivity | tune | reconvert | export
    recipe: dict  # QuantRecipe.to_dict() of the run's own recipe
    report: dict  # its report.json

    @property
    def label(self) -> str:
        """'#3 static fbgemm, 2 float: 37.3 dB' — what the Runs list shows."""
        r, out = self.report, self.report.get("output") or {}
        floats = len(r.get("float_layers") or ())
        what = [r["method"], r["engine"] if r["method"] != "dynamic" else r["dtype"]]
        if r.get("mode") == "pt2e":
            what[1] = "pt2e"
        sqnr = out.get("sqnr_db")
        figure = f"{sqnr:.1f} dB" if sqnr is not None else "outputs identical"
        return (f"#{self.number} {' '.join(what)}" + (f", {floats} float" if floats else "")
                + f" ({self.action}): {figure}")


class RunHistory:
    def __init__(self) -> None:
        self.records: list[RunRecord] = []
        self._next = 1

    def add(self, result, action: str) -> RunRecord:
        """Keep a run. The same configuration adopted again without a new run of its own (a measurement
        or an export added to it) replaces its record instead of adding one."""
        record = RunRecord(self._next, action, result.recipe.to_dict(), report_dict(result))
        last = self.records[-1] if self.records else None
        if last is not None and last.recipe == record.recipe and action in ("export", "measure"):
            record = RunRecord(last.number, last.action, record.recipe, record.report)
            self.records[-1] = record
            return record
        self._next += 1
        self.records.append(record)
        del self.records[:-MAX_RUNS]
        return record

    def get(self, number: int) -> RunRecord:
        for r in self.records:
            if r.number == number:
                return r
        raise KeyError(f"no run #{number} in this session (runs: {', '.join(str(r.number) for r in self.records)})")

    def compare(self, a: int, b: int) -> Comparison:
        ra, rb = self.get(a), self.get(b)
        return compare(ra.report, rb.report, ra.recipe, rb.recipe)


@dataclass(frozen=True)
class EditState:
    """The user's choices at one moment: the recipe's settings, float points and per-point overrides."""

    recipe: dict

    @classmethod
    def of(cls, recipe: QuantRecipe) -> "EditState":
        d = copy.deepcopy(recipe.to_dict())
        d["float_layers"] = sorted(d.get("float_layers") or [])
        return cls(d)

    def settings_changes(self, other: "EditState") -> dict:
        """The recipe fields (not the float points, overrides or equalisation) to set to go from self to
        `other`, for QuantSession.prepare_recipe_change."""
        skip = {"float_layers", "overrides", "equalize", "version"}
        changes = {k: v for k, v in other.recipe.items() if k not in skip and self.recipe.get(k) != v}
        rebuilt = QuantRecipe.from_dict({**other.recipe, "version": other.recipe.get("version")})
        return {k: getattr(rebuilt, k) for k in changes}  # typed (DataSpec, QatSpec), not dicts

    def configuration(self) -> tuple:
        """(float layers, overrides, equalize) for QuantSession.apply_configuration."""
        return (list(self.recipe["float_layers"]), dict(self.recipe.get("overrides") or {}),
                bool(self.recipe.get("equalize")))

    def describe(self, before: "EditState") -> str:
        """What this state changed from `before`, in a few words (the Undo/Redo menu items)."""
        fa, fb = set(before.recipe["float_layers"]), set(self.recipe["float_layers"])
        parts = []
        if fb - fa:
            parts.append(f"{', '.join(sorted(fb - fa)[:2])}{'…' if len(fb - fa) > 2 else ''} kept float")
        if fa - fb:
            parts.append(f"{', '.join(sorted(fa - fb)[:2])}{'…' if len(fa - fb) > 2 else ''} back to int8")
        skip = {"float_layers", "version"}
        for k, v in self.recipe.items():
            if k not in skip and before.recipe.get(k) != v:
                parts.append("per-point settings" if k == "overrides" else f"{k} {_short(v)}")
        return ", ".join(parts) or "nothing"


class EditHistory:
    """Undo/redo over the states the user went through, newest last; a new edit drops the redo tail."""

    def __init__(self, start: QuantRecipe) -> None:
        self.states = [EditState.of(start)]
        self.at = 0

    def record(self, recipe: QuantRecipe) -> bool:
        """Remember the state after an edit; False when nothing changed (an undo's own application)."""
        state = EditState.of(recipe)
        if state == self.states[self.at]:
            return False
        del self.states[self.at + 1:]
        self.states.append(state)
        self.at += 1
        return True

    @property
    def can_undo(self) -> bool:
        return self.at > 0

    @property
    def can_redo(self) -> bool:
        return self.at < len(self.states) - 1

    def undo_text(self) -> str:
        return self.states[self.at].describe(self.states[self.at - 1]) if self.can_undo else ""

    def redo_text(self) -> str:
        return self.states[self.at + 1].describe(self.states[self.at]) if self.can_redo else ""

    def undo(self) -> tuple[EditState, EditState]:
        """(the state now, the state to go back to)."""
        if not self.can_undo:
            raise IndexError("nothing to undo")
        self.at -= 1
        return self.states[self.at + 1], self.states[self.at]

    def redo(self) -> tuple[EditState, EditState]:
        if not self.can_redo:
            raise IndexError("nothing to redo")
        self.at += 1
        return self.states[self.at - 1], self.states[self.at]


def _short(v) -> str:
    if isinstance(v, dict):
        return "changed"
    return "default" if v is None else str(v)
