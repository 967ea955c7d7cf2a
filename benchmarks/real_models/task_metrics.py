"""Task metrics for the real-model benchmark, as qtapp-cli `--metric task_metrics.py:NAME` functions.

Each is `fn(float_outputs, quantized_outputs, labels) -> number`, higher is better, computed on the
quantized outputs against the task's labels (the float outputs are only used where a task has no
labels of its own). The benchmark script calls the same functions on the float model, the app's
int8 model and NNCF's, so every column is computed one way.

Labels the app refuses today (float Hz, -1 for "no partner") can be handed beside the app: when
`labels` is None and QTAPP_BENCH_LABELS names a .npy file, its first N rows are used (N = the number
of outputs; the evaluation files hold exactly the samples the app evaluates, in order).
"""

from __future__ import annotations

import math
import os

import numpy as np


def _np(t):
    if t is None:
        return None
    if hasattr(t, "detach"):
        t = t.detach().float().cpu().numpy() if t.is_floating_point() else t.detach().cpu().numpy()
    return np.asarray(t)


def _labels(y, n: int):
    y = _np(y)
    if y is None:
        path = os.environ.get("QTAPP_BENCH_LABELS")
        if not path:
            raise ValueError("this metric needs the task's labels (y): none were given")
        y = np.load(path, allow_pickle=False)
    if len(y) < n:
        raise ValueError(f"{len(y)} labels for {n} outputs")
    return y[:n]


# ---------------------------------------------------------------- classification (MTCNN face / not face)

def top1(f, q, y):
    """Top-1 accuracy of the quantized outputs (N x classes) on class ids y."""
    q = _np(q).reshape(len(_np(q)), -1)
    y = _labels(y, len(q)).astype(np.int64)
    return float((q.argmax(1) == y).mean())


# ---------------------------------------------------------------- pitch (CREPE): 360 bins of 20 cents

CENTS_0 = 1997.3794084376191  # bin 0 of CREPE (about 32.7 Hz)


def crepe_hz(salience):
    """CREPE's own decoding (the paper's local weighted average): the salience-weighted mean of the
    cents of the 9 bins around the argmax, as Hz. salience: N x 360."""
    s = _np(salience).astype(np.float64).reshape(len(_np(salience)), -1)
    cents = CENTS_0 + 20.0 * np.arange(s.shape[1])
    centre = s.argmax(1)
    out = np.empty(len(s))
    for i, c in enumerate(centre):
        lo, hi = max(0, c - 4), min(s.shape[1], c + 5)
        w = s[i, lo:hi]
        out[i] = (w * cents[lo:hi]).sum() / max(w.sum(), 1e-12)
    return 10.0 * 2.0 ** (out / 1200.0)


def cents_error(q, y):
    hz = crepe_hz(q)
    y = _labels(y, len(hz)).astype(np.float64)
    return np.abs(1200.0 * np.log2(hz / y))


def pitch_rpa50(f, q, y):
    """Raw pitch accuracy: the share of frames whose decoded pitch is within 50 cents of the true f0 (Hz)."""
    return float((cents_error(q, y) <= 50.0).mean())


def neg_median_cents(f, q, y):
    """Minus the median absolute pitch error in cents (higher is better)."""
    return -float(np.median(cents_error(q, y)))


# ---------------------------------------------------------------- embeddings: group / pair retrieval

def _unit(a):
    a = _np(a).astype(np.float64).reshape(len(_np(a)), -1)
    return a / np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-12)


def pair_retrieval_at1(f, q, y):
    """y: group ids (a paraphrase pair, a speaker, two views of one object), -1 = no partner (a
    distractor). For every sample whose group has another member: is its nearest other sample (cosine,
    among all samples, distractors included) in its group? The share that is."""
    e = _unit(q)
    y = _labels(y, len(e)).astype(np.int64)
    sim = e @ e.T
    np.fill_diagonal(sim, -np.inf)
    nearest = sim.argmax(1)
    counts = {g: int((y == g).sum()) for g in set(y.tolist())}
    queries = np.array([g >= 0 and counts[g] > 1 for g in y])
    if not queries.any():
        raise ValueError("no sample has a partner in y")
    return float((y[nearest][queries] == y[queries]).mean())


def cosine_mean(f, q, y=None):
    """Mean cosine of each quantized output to its float one (no labels needed)."""
    return float((_unit(f) * _unit(q)).sum(1).mean())


def sqnr_db(f, q):
    f, q = _np(f).astype(np.float64), _np(q).astype(np.float64)
    noise = ((f - q) ** 2).sum()
    return math.inf if noise == 0 else 10 * math.log10((f * f).sum() / noise)


def describe(name: str, f, q, y) -> dict:
    """Extra figures for the report line of a metric (not used by the app)."""
    out = {}
    try:
        if name in ("pitch_rpa50", "neg_median_cents"):
            c = cents_error(q, y)
            out = {"median_cents": round(float(np.median(c)), 2), "mean_cents": round(float(c.mean()), 1),
                   "rpa50": round(float((c <= 50).mean()), 4), "octave_errors": int((c > 600).sum())}
        elif name == "pair_retrieval_at1":
            e = _unit(q)
            yy = _labels(y, len(e))
            out = {"groups": int(len(set(yy[yy >= 0].tolist()))), "distractors": int((yy < 0).sum())}
        elif name == "top1":
            yy = _labels(y, len(_np(q)))
            out = {"classes": {int(c): int((yy == c).sum()) for c in np.unique(yy)}}
    except Exception as exc:  # noqa: BLE001 - figures for a report line only
        out = {"describe_error": f"{type(exc).__name__}: {exc}"}
    return out
