"""Reach an accuracy target with the fewest float points: the search, its moves, and what it tried.

From one calibration (every range observed at once) the search tries, cheapest first:
  1. ranges     each activation point's best-fitting observed range (min-max, moving average,
                histogram, percentile 99.9 / 99.99), chosen per point from its local error in one pass,
                tried all at once; then each bad point's alternatives one by one
  2. weights    per-channel scales where the recipe has one scale per tensor
  3. equalize   cross-layer equalisation of the float model's layer pairs, then one more calibration
  4. float16    (dynamic) a layer's weights in float16 instead of int8, by sensitivity
  5. float      keep points float, by sensitivity (measured from the configuration reached so far); a
                bad activation point whose output an int8 consumer would round again is tried with its
                consumers ("keep the value float"); the shortest prefix of the ranking that reaches the
                target is found by binary search (as AIMET's mixed precision does), then each point of it
                is dropped again if the target holds without it
A move is accepted when it improves the score (free moves) or is needed for the target (float moves),
and never beyond the budget. Every configuration tried is a step of `tune.json`.

With a budget on bytes (size<=, bits<=) the ranking is by what a move gains per byte it adds (as a
knapsack is filled), and where the target is out of reach, the moves the best prefix left out are
tried one by one as long as they fit (`_fill`): the best metric the budget allows.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field, replace

from ..analysis.metrics import Target
from ..base.errors import Cancelled, UsageError
from ..base.progress import CancelToken, Job, Progress, Stage
from .scoring import Config, Scored, Scorer

_BUDGET = re.compile(r"^\s*(float|size|latency|bits)\s*<=\s*([0-9]+(?:\.[0-9]*)?)\s*(%|mb|ms)?\s*$", re.IGNORECASE)
MAX_CANDIDATES = 40  # float candidates measured for the ranking (the worst by local error first)
BAD_POINTS_TRIED = 6


@dataclass(frozen=True)
class Budget:
    kind: str | None = None  # float | size | latency | bits; None: no limit
    value: float = 0.0
    share: bool = False  # float<=10%: a share of the candidates

    @classmethod
    def parse(cls, text: str | None) -> "Budget":
        if not text:
            return cls()
        m = _BUDGET.match(text)
        if not m:
            raise UsageError(f"cannot read budget {text!r}: use float<=3 (points kept float), float<=10% (a share of "
                             "them), size<=5MB (estimated model size), latency<=8ms (estimated int8 latency) or "
                             "bits<=4.5 (weight bits per value on average)")
        kind, value, unit = m.group(1).lower(), float(m.group(2)), (m.group(3) or "").lower()
        if (unit == "%") != (kind == "float" and unit == "%") or (kind == "size" and unit not in ("", "mb")) or \
                (kind == "latency" and unit not in ("", "ms")) or (kind == "float" and unit not in ("", "%")) or \
                (kind == "bits" and unit):
            raise UsageError(f"budget {text!r}: float<=N or float<=N%, size<=N MB, latency<=N ms, bits<=N")
        return cls(kind, value, unit == "%")

    def allows(self, scored: Scored, candidates: int) -> bool:
        if self.kind == "float":
            limit = self.value / 100 * candidates if self.share else self.value
            return len(scored.config.float_points) <= limit + 1e-9
        if self.kind == "size":
            return scored.size_bytes <= self.value * 1e6
        if self.kind == "latency":
            return scored.latency_ms is None or scored.latency_ms <= self.value
        if self.kind == "bits":
            return scored.bits is None or scored.bits <= self.value + 1e-9
        return True

    @property
    def on_bytes(self) -> bool:
        """A limit on what the weights take (size, or bits per weight): moves are then ranked by what they
        gain per byte they add."""
        return self.kind in ("size", "bits")

    def __str__(self) -> str:
        if self.kind is None:
            return "none"
        unit = "%" if self.share else {"size": "MB", "latency": "ms"}.get(self.kind, "")
        return f"{self.kind}<={self.value:g}{unit}"


@dataclass(frozen=True)
class Step:
    move: str  # what changed, in words
    phase: str  # start | ranges | weights | float16 | float | prune
    scored: Scored
    accepted: bool
    within_budget: bool = True

    def to_json(self) -> dict:
        return {"move": self.move, "phase": self.phase, "accepted": self.accepted,
                "within_budget": self.within_budget, **self.scored.to_json()}


@dataclass(frozen=True)
class TuneResult:
    target: Target
    budget: Budget
    metric: str
    reached: bool
    steps: tuple
    best: Scored
    start: Scored
    path: tuple  # the indices of the steps from the start to the chosen configuration
    conversions: int = 0
    calibrations: int = 1
    seconds: float = 0.0
    notes: tuple = ()
    candidates: tuple = field(default=())
    cancelled: bool = False  # stopped by the user: the configurations tried so far, nothing chosen

    def curve(self) -> list[dict]:
        """Metric against size and latency along the chosen path, from the start to the chosen one."""
        return [{"step": i, "move": self.steps[i].move, "score": self.steps[i].scored.score,
                 "metric": self.steps[i].scored.metric.quantized, "size_bytes": self.steps[i].scored.size_bytes,
                 "latency_ms": self.steps[i].scored.latency_ms,
                 "measured": self.steps[i].scored.measured,
                 "float_points": len(self.steps[i].scored.config.float_points)} for i in self.path]

    def front(self) -> list[int]:
        """The steps no other step beats on both estimated size and score (the trade-off every tried
        configuration offers), smallest first; one per distinct configuration."""
        better = (lambda a, b: a >= b) if self.target.op == ">=" else (lambda a, b: a <= b)
        seen, out = set(), []
        for i, s in enumerate(self.steps):
            if s.scored.config in seen:
                continue
            seen.add(s.scored.config)
            dominated = any(o.scored.size_bytes <= s.scored.size_bytes and better(o.scored.score, s.scored.score)
                            and (o.scored.size_bytes, o.scored.score) != (s.scored.size_bytes, s.scored.score)
                            for o in self.steps)
            if not dominated:
                out.append(i)
        return sorted(out, key=lambda i: self.steps[i].scored.size_bytes)

    def to_json(self) -> dict:
        return {"target": str(self.target), "budget": str(self.budget), "metric": self.metric,
                "reached": self.reached, "chosen": self.best.to_json(), "start": self.start.to_json(),
                "steps": [s.to_json() for s in self.steps], "path": list(self.path), "curve": self.curve(),
                "front": self.front(),
                "conversions": self.conversions, "calibrations": self.calibrations,
                "naive_calibrations": len(self.steps),  # one calibration per configuration tried
                "seconds": round(self.seconds, 2), "notes": list(self.notes)}


class _Search:
    def __init__(self, scorer: Scorer, budget: Budget, candidates: list[str], cancel) -> None:
        self.scorer, self.budget, self.candidates, self.cancel = scorer, budget, candidates, cancel
        self.steps: list[Step] = []
        self.path: list[int] = []
        self.best: Scored | None = None
        self._t0 = time.perf_counter()

    def about(self, configurations: int = 1) -> str:
        """What the next `configurations` will take, at the pace of those tried so far (each is a
        conversion and a score; some recalibrate): '~12 s'."""
        if not self.steps:
            return "time not known yet"
        seconds = (time.perf_counter() - self._t0) / len(self.steps) * configurations
        return f"~{seconds:.0f} s" if seconds >= 1 else "under 1 s"

    def met(self, s: Scored) -> bool:
        """The target is reached, by a configuration that compresses: one whose file is no smaller than
        float's is no result, unless the user's size budget says what size is acceptable."""
        return self.scorer.target.met(s.metric) and (self.budget.kind == "size" or self.scorer.compresses(s))

    def allowed(self, s: Scored) -> bool:
        return self.budget.allows(s, len(self.candidates))

    def trial(self, config: Config, move: str, phase: str) -> Scored:
        return self.record(self.scorer.score(config, self.cancel), move, phase)

    def record(self, scored: Scored, move: str, phase: str) -> Scored:
        self.steps.append(Step(move, phase, scored, False, self.allowed(scored)))
        return scored

    def accept(self, scored: Scored, move: str | None = None) -> None:
        i = max(i for i, s in enumerate(self.steps) if s.scored is scored)
        self.steps[i] = Step(move or self.steps[i].move, self.steps[i].phase, scored, True, self.steps[i].within_budget)
        self.path.append(i)
        self.best = scored

    def result(self, target: Target, reached: bool, t0: float, notes: tuple, cancelled: bool = False) -> TuneResult:
        """What the search found so far: every step, the best configuration, the path to it (the first
        step is the start)."""
        return TuneResult(target, self.budget, self.scorer.metric[0], reached, tuple(self.steps), self.best,
                          self.steps[0].scored, tuple(self.path), self.scorer.conversions, self.scorer.calibrations,
                          time.perf_counter() - t0, notes, tuple(self.candidates), cancelled=cancelled)

    def keep_if_better(self, scored: Scored) -> bool:
        if self.allowed(scored) and self.scorer.better(scored, self.best):
            self.accept(scored)
            return True
        return False


def tune(scorer: Scorer, target: Target, budget: Budget, candidates: list[str], *, range_errors: dict | None = None,
         bad_points: tuple = (), consumers: dict | None = None, dynamic: bool | dict = False, per_tensor_heads: tuple = (),
         equalizable: int = 0, cancel: CancelToken | None = None) -> Job[TuneResult]:
    """`candidates`: the toggle targets (points torch can keep float); `range_errors`: {point: {range:
    local dB}} (static); `bad_points`: the diagnosed ones, worst first; `consumers`: {point: the toggle
    targets that read its value}; `per_tensor_heads`: weighted points with one weight scale per tensor;
    `equalizable`: how many layer pairs cross-layer equalisation would scale (0: not tried)."""
    t0 = time.perf_counter()
    search = _Search(scorer, budget, candidates, cancel)
    try:
        return (yield from _tune(search, target, budget, candidates, range_errors, bad_points, consumers, dynamic,
                                 per_tensor_heads, equalizable, t0))
    except Cancelled as exc:  # what was tried is kept with the cancel: the window shows it, marked
        if search.steps and search.best is not None:
            n = len(search.steps)
            exc.partial = search.result(target, False, t0, (
                f"cancelled after {n} configuration(s): what was tried is shown; nothing was chosen or applied",),
                cancelled=True)
        raise


def _tune(search: _Search, target: Target, budget: Budget, candidates: list[str], range_errors, bad_points,
          consumers, dynamic: bool, per_tensor_heads, equalizable: int, t0: float) -> Job[TuneResult]:
    scorer, cancel = search.scorer, search.cancel
    stage = Stage("tune", 0, cancel)
    start_config = Config.of(scorer.snap.recipe)
    yield stage.step(0, "scoring the recipe as it is")
    start = search.trial(start_config, "the recipe as it is", "start")
    search.accept(start)
    yield stage.step(1, f"start: {target.kind} {start.score:.4g}")
    notes = []

    def done() -> bool:
        return search.met(search.best)

    # 1. ranges: the best observed range of each point, all at once, then the bad points one by one
    if not done() and range_errors:
        overrides = start_config.override_map
        config = search.best.config
        moved = []
        for name, errors in range_errors.items():
            current = overrides[name].observer if name in overrides and overrides[name].observer else \
                scorer.snap.recipe.observer
            best = max((c for c in errors if errors[c] is not None), key=lambda c: errors[c], default=None)
            if best and best != current and errors.get(current) is not None and errors[best] >= errors[current] + 1.0:
                config = config.with_override(name, observer=best)
                moved.append(f"{name}: {best}")
        if moved:
            yield stage.step(len(search.steps), f"trying the best-fitting range at {len(moved)} point(s), all at "
                                                f"once ({search.about()})")
            trial = search.trial(config, f"best-fitting range at {len(moved)} point(s) ({', '.join(moved[:4])}"
                                         f"{', ...' if len(moved) > 4 else ''})", "ranges")
            search.keep_if_better(trial)
            yield stage.step(len(search.steps), "ranges, all at once")
        for name in [b for b in bad_points if b in range_errors][:BAD_POINTS_TRIED]:
            if done():
                break
            for choice in range_errors[name]:
                if search.best.config.override_map.get(name) and \
                        search.best.config.override_map[name].observer == choice:
                    continue
                yield stage.step(len(search.steps), f"trying range {choice} at {name} ({search.about()})")
                trial = search.trial(search.best.config.with_override(name, observer=choice),
                                     f"range of {name}: {choice}", "ranges")
                search.keep_if_better(trial)
                yield stage.step(len(search.steps), f"range of {name}: {choice}")
    # 2. per-channel weights where the recipe has one scale per tensor
    if not done() and per_tensor_heads:
        config = search.best.config
        for name in per_tensor_heads:
            config = config.with_override(name, per_channel=True)
        yield stage.step(len(search.steps), f"trying per-channel weights at {len(per_tensor_heads)} layer(s) "
                                            f"({search.about()})")
        trial = search.trial(config, f"per-channel weights at {len(per_tensor_heads)} layer(s)", "weights")
        search.keep_if_better(trial)
        yield stage.step(len(search.steps), "per-channel weights")
    # 3. cross-layer equalisation (model-wide, one more calibration)
    before_equalize = None
    if not done() and equalizable and not search.best.config.equalize:
        yield stage.step(len(search.steps), f"trying cross-layer equalisation, recalibrated ({search.about()})")
        trial = search.trial(replace(search.best.config, equalize=True),
                             f"cross-layer equalisation of {equalizable} layer pair(s) (recalibrated)", "equalize")
        before_equalize = (search.best, list(search.path))
        if not search.keep_if_better(trial):
            before_equalize = None
        yield stage.step(len(search.steps), "cross-layer equalisation")
    # 4. float16 (dynamic) and 5. float: by sensitivity from the configuration reached so far
    # `dynamic`: True for torch.ao's float16 weights, or the override fields of the step (torchao: 8 bits)
    half = {"dtype": "float16"} if dynamic is True else dynamic or None
    phases = ((_verb(half), half), ("float", None)) if half else (("float", None),)
    yield from _float_phases(search, phases, candidates, bad_points, consumers or {}, stage)
    if before_equalize is not None and (not done() or search.best.config.float_points):
        # Equalisation helped at the start but changes every range after it: the points kept float
        # from it are not those kept float without it. Both branches searched; the better one kept.
        with_eq, with_path = search.best, list(search.path)
        search.best, search.path = before_equalize[0], before_equalize[1]
        yield from _float_phases(search, phases, candidates, bad_points, consumers or {}, stage)
        if not _preferred(search, search.best, with_eq):
            search.best, search.path = with_eq, with_path
    tidy = _without_dead_overrides(search.best.config)
    if tidy != search.best.config:  # a range or scale chosen for a point now float: dropped, the same model
        yield stage.step(len(search.steps), f"trying without the overrides of points kept float ({search.about()})")
        trial = search.trial(tidy, "drop the overrides of points kept float", "prune")
        if abs(trial.score - search.best.score) <= 1e-9 or not search.scorer.better(search.best, trial):
            search.accept(trial)
    if not done():
        unit = " dB" if target.kind == "sqnr" else " points" if target.kind == "drop" and scorer.metric[0] == "top1" else ""
        notes.append(f"target {target} not reached within budget {budget}: the best configuration found scores "
                     f"{search.best.score:.4g}{unit}")
        bloated = [s.scored for s in search.steps if scorer.target.met(s.scored.metric) and search.allowed(s.scored)
                   and not scorer.compresses(s.scored)]
        if bloated:
            smallest = min(bloated, key=lambda s: s.size_bytes)
            notes.append(f"{len(bloated)} configuration(s) reach the target but do not compress the model (their "
                         f"weights stay 95% of float's bytes or more): the smallest is {smallest.size_bytes / 1e6:.2f} MB "
                         f"against float's {scorer.float_bytes / 1e6:.2f} MB ({_describe(smallest.config)}); a size "
                         f"budget (--budget size<={smallest.size_bytes / 1e6 * 1.01:.2f}MB) accepts it")
    n = len(search.steps)
    yield Progress("tune", n, n, f"{n} configurations, target {'reached' if done() else 'not reached'}",
                   time.perf_counter() - t0)
    return search.result(target, done(), t0, tuple(notes))


def _describe(config: Config) -> str:
    parts = [f"{len(config.float_points)} point(s) float"] if config.float_points else []
    if config.float16:
        parts.append(f"{len(config.float16)} in float16")
    return ", ".join(parts) or "every point int8"


def _float_phases(search: _Search, phases, candidates, bad_points, consumers, stage) -> Job[None]:
    for phase, half in phases:
        if search.met(search.best):
            return
        moves = _moves(candidates, search.best.config, half, bad_points, consumers)
        if not moves:
            continue
        ranked = yield from _rank(search, moves, half, phase, stage)
        alone = _single_move(search, moves, half)
        if alone is not None:  # one move reaches the target by itself: the ranking found it
            label = next(s.move for s in reversed(search.steps) if s.scored is alone)
            search.accept(alone, label.replace("only ", "", 1).replace(" (ranking)", " (alone reaches the target)"))
        else:
            yield from _prefix_search(search, ranked, half, phase, stage)


def _preferred(search: _Search, a: Scored, b: Scored) -> bool:
    """Whether `a` is the better end of a search than `b`: reaching the target first, then fewer points
    kept float (fewer in float16), then the better score."""
    met_a, met_b = search.met(a) and search.allowed(a), search.met(b) and search.allowed(b)
    if met_a != met_b:
        return met_a
    if met_a:
        key = lambda s: (len(s.config.float_points), len(s.config.float16))  # noqa: E731
        if key(a) != key(b):
            return key(a) < key(b)
    return search.scorer.better(a, b) or not search.scorer.better(b, a) and a.score == b.score


def _without_dead_overrides(config: Config) -> Config:
    return config.without_overrides_of(config.float_points)


def _moves(candidates, config: Config, half: bool, bad_points, consumers) -> list[tuple[str, tuple]]:
    """(name, points it keeps float or float16): one per candidate, and for a bad point whose value an
    int8 consumer rounds again, that point with its consumers."""
    taken = config.float16 if half else config.float_points
    out = [(name, (name,)) for name in candidates if name not in taken]
    if not half:
        for name in bad_points:
            readers = tuple(c for c in consumers.get(name, ()) if c in candidates and c not in taken)
            if readers:
                group = tuple(dict.fromkeys(((name,) if name in candidates else ()) + readers))
                out.append((f"{name}'s value (with {', '.join(readers)})", group))
    return out


def _apply(config: Config, points, half: dict | None) -> Config:
    """`points` float (`half` None), or one step up (`half`: the override fields, float16 or 8 bits)."""
    if not half:
        return config.with_float(points)
    for p in points:
        config = config.with_override(p, **half)
    return config


def _verb(half: dict | None) -> str:
    if not half:
        return "float"
    return "8-bit" if half.get("weight_bits") == 8 else "float16"


def _rank(search: _Search, moves, half: bool, phase: str, stage) -> Job[list]:
    """Each move alone on the configuration reached so far: ranked by what it gains (the sensitivity
    the search acts on)."""
    base = search.best
    gains = []
    verb = _verb(half)
    moves = moves[:MAX_CANDIDATES]
    yield stage.step(len(search.steps), f"ranking {len(moves)} move(s) to {verb}, each alone "
                                        f"({search.about(len(moves))})")
    scored = search.scorer.score_all([_apply(base.config, points, half) for _label, points in moves], search.cancel)
    per_byte = {}  # a budget on bytes: what each move gains per byte it adds (a move that adds none: first)
    try:
        for (label, points), trial in zip(moves, scored):
            search.record(trial, f"only {label} {verb} (ranking)", phase)
            gain = trial.score - base.score if search.scorer.target.op == ">=" else base.score - trial.score
            if not any(p in trial.refused for p in points):
                gains.append((gain, label, points))
                added = trial.size_bytes - base.size_bytes
                per_byte[label] = gain / added if added > 0 else float("inf")
            yield stage.step(len(search.steps), f"ranking: {label}")
    finally:
        scored.close()
    if search.budget.on_bytes:
        gains.sort(key=lambda g: (-per_byte[g[1]], -g[0]))
    else:
        gains.sort(key=lambda g: -g[0])
    return [g for g in gains if g[0] > 0]


def _single_move(search: _Search, moves, half: bool) -> Scored | None:
    """The ranking's trials that reach the target alone, within budget: the one keeping the fewest
    points float (then, with a budget on bytes, the smallest; then the best score). No prefix search is
    needed then."""
    tried = {_apply(search.best.config, points, half): len(points) for _label, points in moves[:MAX_CANDIDATES]}
    hits = [s.scored for s in search.steps if s.scored.config in tried and search.met(s.scored)
            and search.allowed(s.scored)]
    if not hits:
        return None
    small = search.budget.on_bytes  # a budget on bytes: of those that reach the target, the smallest
    return min(hits, key=lambda s: (tried[s.config], s.size_bytes if small else 0,
                                    -s.score if search.scorer.target.op == ">=" else s.score))


def _prefix_search(search: _Search, ranked, half: bool, phase: str, stage) -> Job[None]:
    """The shortest prefix of the ranking that reaches the target within budget (binary search; a linear
    one when the whole ranking breaks the budget), then each of its moves dropped again if the target
    holds without it."""
    if not ranked:
        return
    base = search.best
    verb = _verb(half)

    def prefix(k: int) -> Scored:
        config = base.config
        for _gain, _label, points in ranked[:k]:
            config = _apply(config, points, half)
        labels = ", ".join(label for _g, label, _p in ranked[:k])
        return search.trial(config, f"{verb}: the top {k} of the ranking ({labels})", phase)

    lo, hi = 1, len(ranked)
    yield stage.step(len(search.steps), f"trying all {hi} move(s) that gain, {verb} ({search.about()})")
    full = prefix(hi)
    yield stage.step(len(search.steps), f"{verb}: all {hi} that gain")
    found = full
    if not (search.met(full) and search.allowed(full)):
        # All of them break the budget, or miss the target: the prefixes from the shortest up, until one
        # reaches the target within the budget (the smallest that does), or one breaks the budget (then
        # the best the budget allows, filled with the moves it skipped that still fit, for a byte budget).
        best, found = None, None
        for k in range(1, len(ranked) + 1):
            if k < len(ranked):
                yield stage.step(len(search.steps), f"trying the top {k} {verb} ({search.about()})")
            trial = full if k == len(ranked) else prefix(k)
            yield stage.step(len(search.steps), f"{verb}: top {k}")
            if search.met(trial) and search.allowed(trial):
                lo = hi = k
                found = trial
                break
            if search.allowed(trial) and (best is None or search.scorer.better(trial, best)):
                best = trial
            if not search.allowed(trial):
                break
        if found is None:
            if best is not None and search.scorer.better(best, search.best):
                search.accept(best)
            if search.budget.on_bytes:
                yield from _fill(search, ranked, half, phase, stage)
            return
    while lo < hi:  # the smallest k whose prefix reaches the target
        mid = (lo + hi) // 2
        yield stage.step(len(search.steps), f"trying the top {mid} {verb} ({search.about()})")
        trial = prefix(mid)
        yield stage.step(len(search.steps), f"{verb}: top {mid}")
        if search.met(trial) and search.allowed(trial):
            hi, found = mid, trial
        else:
            lo = mid + 1
    search.accept(found)
    chosen = ranked[:hi] if hi > 1 else []  # one move: without it is where the phase started
    for gain, label, points in sorted(chosen, key=lambda g: g[0]):  # the least useful first
        config = search.best.config
        if half:
            trial_config = config.without_overrides_of(points)
        else:
            trial_config = config.without_float(points)
        yield stage.step(len(search.steps), f"trying without {label} {verb} ({search.about()})")
        trial = search.trial(trial_config, f"without {label} {verb}", "prune")
        yield stage.step(len(search.steps), f"without {label}")
        if search.met(trial) and search.allowed(trial):
            search.accept(trial)


def _fill(search: _Search, ranked, half: bool, phase: str, stage) -> Job[None]:
    """A budget on bytes the ranking's prefix did not reach the target within: each move the prefix left
    out, in the ranking's order, added alone when it still fits the budget and improves the score (the
    greedy prefix stops at the first move that does not fit; a later, smaller one may)."""
    verb = _verb(half)
    for _gain, label, points in ranked:
        config = _apply(search.best.config, points, half)
        if config == search.best.config:
            continue
        trial = next((s.scored for s in search.steps if s.scored.config == config), None)  # tried: no new step
        if trial is None:
            yield stage.step(len(search.steps), f"trying {label} {verb} as well ({search.about()})")
            trial = search.trial(config, f"{label} {verb} as well (fills the budget)", phase)
            yield stage.step(len(search.steps), f"{label} {verb} as well")
        if search.met(trial) and search.allowed(trial):
            search.accept(trial)
            return
        search.keep_if_better(trial)
