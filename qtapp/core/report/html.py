"""report.html: one self-contained page (no network, no scripts, plots as inline SVG) for a colleague
without Python. It shows the same summary, notes and per-layer figures as the window and report.json."""

from __future__ import annotations

import math
from html import escape

from .notes import notes
from .render import SQNR_FAIR_DB as FAIR_DB
from .render import SQNR_GOOD_DB as GOOD_DB
from .render import SQNR_POOR_DB as POOR_DB
from .render import report_dict, speed_text, sqnr_colour
from .verdict import COLOURS

_CSS = """
body{font:14px/1.45 system-ui,-apple-system,'Segoe UI',sans-serif;margin:24px auto;max-width:1100px;color:#222}
h1{font-size:22px;margin:0 0 4px}h2{font-size:17px;margin:28px 0 8px;border-bottom:1px solid #ddd}
.sub{color:#555}table{border-collapse:collapse}td,th{padding:3px 10px;text-align:left}
th{background:#f3f3f3}tr:nth-child(even) td{background:#fafafa}.num{text-align:right;font-variant-numeric:tabular-nums}
.warning{color:#a04000}.info{color:#555}.legend span{display:inline-block;margin-right:14px}
.sw{display:inline-block;width:10px;height:10px;margin-right:4px}svg text{font:11px system-ui,sans-serif;fill:#333}
"""


def _layer_chart(layers: list[dict]) -> str:
    """Local SQNR of every point as bars (kept-float points grey), accumulated SQNR as a line over them."""
    if not layers:
        return "<p class=info>No per-point figures.</p>"
    w, h, left, bottom = 1060, 260, 44, 90
    n = len(layers)
    values = [v for l in layers for v in (l["local_sqnr_db"], l["sqnr_db"]) if v is not None and math.isfinite(v)]
    top = max([GOOD_DB + 5, *values]) * 1.08
    step = (w - left - 10) / n
    y_of = lambda db: h - bottom - (h - bottom - 10) * max(db, 0.0) / top  # noqa: E731 - one projection
    bars, line = [], []
    for i, l in enumerate(layers):
        db, acc = l["local_sqnr_db"], l["sqnr_db"]
        x = left + i * step
        value = db if db is not None and math.isfinite(db) else 0.0
        colour = sqnr_colour(db) if l["quantized"] else "#b4b4b4"
        label = (f"{l['name']}: local " + (f"{db:.1f} dB" if db is not None else "none")
                 + (f", accumulated {acc:.1f} dB" if acc is not None else "") + ("" if l["quantized"] else " (kept float)")
                 + "".join(f"; {d['text']}" for d in l["diagnosis"]))
        bars.append(f"<rect x='{x + step * 0.14:.1f}' y='{y_of(value):.1f}' width='{step * 0.72:.1f}' "
                    f"height='{h - bottom - y_of(value):.1f}' fill='{colour}'><title>{escape(label)}</title></rect>")
        if acc is not None and math.isfinite(acc):
            line.append(f"{x + step / 2:.1f},{y_of(acc):.1f}")
        if l["diagnosis"]:
            bars.append(f"<text x='{x + step / 2:.1f}' y='{y_of(value) - 3:.1f}' text-anchor='middle' "
                        f"fill='#b03000'>&#9888;</text>")
        if n <= 60:
            bars.append(f"<text transform='translate({x + step / 2:.1f},{h - bottom + 6}) rotate(60)'>"
                        f"{escape(l['name'][-22:])}</text>")
    ticks = []
    for v in range(0, int(top) + 1, 10):
        ticks.append(f"<line x1='{left}' x2='{w}' y1='{y_of(v):.1f}' y2='{y_of(v):.1f}' stroke='#eee'/>"
                     f"<text x='{left - 6}' y='{y_of(v) + 4:.1f}' text-anchor='end'>{v}</text>")
    path = f"<polyline points='{' '.join(line)}' fill='none' stroke='#333' stroke-width='1.5'/>" if line else ""
    return (f"<svg width='{w}' height='{h}' role='img' aria-label='per-point SQNR'>{''.join(ticks)}{''.join(bars)}"
            f"{path}<text x='4' y='14'>dB</text></svg>")


def _range_text(r) -> str:
    if r is None:
        return ""
    clipped = r["clipped_low"] + r["clipped_high"]
    return r["levels"] + (f", {clipped:.2%} clipped" if clipped else "")


def _error_histogram(ref, q) -> str:
    import numpy as np

    if ref is None or q is None or len(ref) == 0:
        return ""
    err = np.asarray(q, dtype=np.float64) - np.asarray(ref, dtype=np.float64)
    lo, hi = np.quantile(err, [0.001, 0.999])
    if hi <= lo:
        lo, hi = lo - 1e-9, hi + 1e-9
    counts, edges = np.histogram(np.clip(err, lo, hi), bins=60, range=(lo, hi))
    w, h, left, bottom = 520, 220, 10, 30
    peak = counts.max() or 1
    bw = (w - 2 * left) / len(counts)
    rects = "".join(f"<rect x='{left + i * bw:.1f}' y='{h - bottom - (h - bottom - 10) * c / peak:.1f}' "
                    f"width='{bw * 0.95:.1f}' height='{(h - bottom - 10) * c / peak:.1f}' fill='#e8710a'/>"
                    for i, c in enumerate(counts))
    return (f"<svg width='{w}' height='{h}' role='img' aria-label='output error histogram'>{rects}"
            f"<text x='{left}' y='{h - 10}'>{edges[0]:.3g}</text>"
            f"<text x='{w - left}' y='{h - 10}' text-anchor='end'>{edges[-1]:.3g}</text>"
            f"<text x='{w / 2}' y='{h - 10}' text-anchor='middle'>int8 − float (central 99.8%)</text></svg>")


def _scatter(ref, q) -> str:
    import numpy as np

    if ref is None or q is None or len(ref) == 0:
        return ""
    ref, q = np.asarray(ref, dtype=np.float64), np.asarray(q, dtype=np.float64)
    lo, hi = float(min(ref.min(), q.min())), float(max(ref.max(), q.max()))
    if hi <= lo:
        hi = lo + 1.0
    size = 220
    sx = lambda v: 10 + (size - 20) * (v - lo) / (hi - lo)  # noqa: E731 - two tiny projections
    sy = lambda v: size - 10 - (size - 20) * (v - lo) / (hi - lo)  # noqa: E731
    pts = "".join(f"<circle cx='{sx(a):.1f}' cy='{sy(b):.1f}' r='1.3' fill='#1f77b4' fill-opacity='.5'/>"
                  for a, b in zip(ref[:1500], q[:1500]))
    return (f"<svg width='{size}' height='{size}' role='img' aria-label='float vs int8 outputs'>"
            f"<line x1='{sx(lo)}' y1='{sy(lo)}' x2='{sx(hi)}' y2='{sy(hi)}' stroke='#999'/>{pts}</svg>")


def _sensitivity_html(sens: dict | None) -> str:
    """Ranked bars: what keeping only each point float gains (blue), what quantizing only it costs (orange;
    torchao: at each width, orange and brown)."""
    if not sens or not sens["points"]:
        return ""
    points = sens["points"][:40]
    labels = list(dict.fromkeys(w for p in points for w in p.get("cost_at", {})))  # torchao: 4-bit, 8-bit

    def series(p):
        costs = [(p["cost_at"].get(w), c, f"cost {w}") for w, c in zip(labels, ("#e8710a", "#8c564b"))] \
            if labels else [(p["cost"], "#e8710a", "cost")]
        return [(p["gain"], "#1f77b4", "gain")] + costs
    values = [v for p in points for v, _c, _t in series(p) if v is not None] or [0.0]
    lo, hi = min(0.0, min(values)), max(0.0, max(values))
    span = (hi - lo) or 1.0
    bar = 9 if len(labels) < 2 else 7
    step, w, h, top = 26, 60 + 26 * len(points), 190, 20
    y = lambda v: top + (h - top - 50) * (hi - v) / span  # noqa: E731 - a projection
    bars = []
    for i, p in enumerate(points):
        x = 50 + i * step
        for k, (value, colour, what) in enumerate(series(p)):
            if value is None:
                continue
            y0, y1 = sorted((y(0.0), y(value)))
            bars.append(f"<rect x='{x + k * (bar + 1)}' y='{y0:.1f}' width='{bar}' height='{max(y1 - y0, 0.5):.1f}' "
                        f"fill='{colour}'><title>{escape(p['name'])}: {what} {value:.3g}</title></rect>")
        bars.append(f"<text transform='translate({x + 10},{h - 46}) rotate(50)'>{escape(p['name'][-18:])}</text>")
    axis = f"<line x1='46' x2='{w}' y1='{y(0.0):.1f}' y2='{y(0.0):.1f}' stroke='#999'/>"
    ticks = f"<text x='4' y='{y(hi) + 4:.1f}'>{hi:.3g}</text><text x='4' y='{y(lo) + 4:.1f}'>{lo:.3g}</text>"
    return (f"<h2>Sensitivity ({escape(sens['metric'])})</h2><p class=sub>From one calibration, "
            f"{sens['conversions']} conversions: every toggleable point {escape(sens.get('quantized', 'int8'))} "
            f"{sens['all_int8']:.4g}, every one float "
            f"{'exact' if sens['all_float'] is None else format(sens['all_float'], '.4g')}. Blue: what keeping only "
            "this point float gains; " + (f"orange, brown: what quantizing only this point at {' and '.join(labels)} "
                                          "costs" if labels else "orange: what quantizing only this point costs")
            + ". Ranked, the most to gain first"
            f"{' (the first 40)' if len(sens['points']) > 40 else ''}.</p>"
            f"<svg width='{w}' height='{h}' role='img' aria-label='sensitivity'>{axis}{ticks}{''.join(bars)}</svg>")


def _tune_html(result) -> str:
    """The search: the target, what was chosen, the path, and every configuration tried against size."""
    t = result.tune
    if t is None:
        return ""
    import math

    steps = [(i, s) for i, s in enumerate(t.steps) if math.isfinite(s.scored.score)]
    xs = [s.scored.size_bytes / 1e6 for _i, s in steps]
    ys = [s.scored.score for _i, s in steps] + [t.target.value]
    x_lo, x_hi = min(xs), max(xs)
    x_span = (x_hi - x_lo) or max(x_hi * 0.1, 1e-6)
    y_lo, y_hi = min(ys), max(ys)
    y_span = (y_hi - y_lo) or 1.0
    w, h = 520, 260
    sx = lambda v: 50 + (w - 70) * (v - x_lo) / x_span  # noqa: E731 - two projections
    sy = lambda v: h - 30 - (h - 50) * (v - y_lo) / y_span  # noqa: E731
    dots = "".join(f"<circle cx='{sx(s.scored.size_bytes / 1e6):.1f}' cy='{sy(s.scored.score):.1f}' r='3.5' "
                   f"fill='{'#9a9a9a' if s.within_budget else 'none'}' stroke='#9a9a9a'><title>{escape(s.move)}: "
                   f"{s.scored.score:.4g}</title></circle>" for _i, s in steps)
    path = [t.steps[i] for i in t.path if math.isfinite(t.steps[i].scored.score)]
    line = " ".join(f"{sx(s.scored.size_bytes / 1e6):.1f},{sy(s.scored.score):.1f}" for s in path)
    target = (f"<line x1='50' x2='{w - 20}' y1='{sy(t.target.value):.1f}' y2='{sy(t.target.value):.1f}' "
              f"stroke='#2ca02c' stroke-dasharray='4 3'/><text x='54' y='{sy(t.target.value) - 4:.1f}' "
              f"fill='#2ca02c'>target {escape(str(t.target))}</text>")
    axes = (f"<text x='{w / 2}' y='{h - 6}' text-anchor='middle'>size of the shipped file (MB): "
            f"{x_lo:.3g} to {x_hi:.3g}</text><text x='4' y='{sy(y_hi) + 4:.1f}'>{y_hi:.3g}</text>"
            f"<text x='4' y='{sy(y_lo) + 4:.1f}'>{y_lo:.3g}</text>")
    moves = "".join(f"<li>{escape(t.steps[i].move)}: {t.steps[i].scored.score:.4g}</li>" for i in t.path[1:]) or \
        "<li>none: the recipe as it was already met the target</li>"
    best = t.best.config
    return (f"<h2>Tune: {escape(str(t.target))} (budget {escape(str(t.budget))})</h2>"
            f"<p class={'info' if t.reached else 'warning'}>{'Reached' if t.reached else 'Not reached'}: "
            f"{t.best.score:.4g} (the recipe as it was: {t.start.score:.4g}), {len(best.float_points)} point(s) kept "
            f"float{': ' + escape(', '.join(sorted(best.float_points))) if best.float_points else ''}"
            f"{', cross-layer equalisation' if best.equalize else ''}; {len(t.steps)} configurations tried, "
            f"{t.conversions} conversions of {t.calibrations} calibration(s); every step is in tune.json.</p>"
            f"<ol>{moves}</ol><svg width='{w}' height='{h}' role='img' aria-label='trade-off'>{target}{axes}{dots}"
            f"<polyline points='{line}' fill='none' stroke='#e8710a' stroke-width='2'/></svg>"
            "<p class=sub>Grey: every configuration tried (hollow: over the budget); orange: the search's path.</p>")


_VERDICT_CSS = "".join(f".verdict.{level}{{background:{bg};color:{fg};padding:6px 10px;border-radius:4px}}"
                       for level, (bg, fg) in COLOURS.items())


def to_html(result) -> str:
    r = report_dict(result)
    o, lat, size = r["output"], r["latency_ms"], r["size_bytes"]
    rows = []
    if size["float"]:
        rows.append(("Size (TorchScript)", f"{size['float'] / 1e6:.2f} MB", f"{size['quantized'] / 1e6:.2f} MB",
                     f"{size['quantized'] / size['float']:.0%} of float"))
    if lat["float"] is not None:
        rows.append((f"Latency (batch 1, {lat['threads']} threads)", f"{lat['float']:.2f} ms",
                     f"{lat['quantized']:.2f} ms", speed_text(lat["float"], lat["quantized"])))
    if o["accuracy_float"] is not None:
        rows.append(("Accuracy", f"{o['accuracy_float']:.2%}", f"{o['accuracy_quantized']:.2%}",
                     f"{(o['accuracy_quantized'] - o['accuracy_float']) * 100:+.2f} points"))
    figures = "".join(f"<tr><td>{escape(a)}</td><td class=num>{b}</td><td class=num>{c}</td><td>{escape(d)}</td></tr>"
                      for a, b, c, d in rows)
    error = [f"SQNR {o['sqnr_db']:.1f} dB" if o["sqnr_db"] is not None else "outputs identical",
             f"cosine {o['cosine']:.5f}", f"max |error| {o['max_abs_error']:.4g}"]
    if o["top1_agreement"] is not None:
        error.append(f"top-1 agreement {o['top1_agreement']:.1%}")
    note_items = "".join(f"<li class={n.level}>{escape(n.text)}</li>" for n in notes(result)) or "<li>none</li>"
    def db(value) -> str:
        return "" if value is None else format(value, ".1f")

    layer_rows = "".join(
        f"<tr><td>{escape(l['name'])}</td><td>{escape(l['op'])} ({escape(l['kind'])})</td>"
        f"<td>{'int8' if l['quantized'] else 'float'}{', runs in float' if l['quantized'] and l['runs'] == 'float' else ''}</td>"
        f"<td class=num style='color:{sqnr_colour(l['local_sqnr_db']) if l['quantized'] else '#777'}'>"
        f"{db(l['local_sqnr_db'])}</td>"
        f"<td class=num style='color:{sqnr_colour(l['sqnr_db']) if l['quantized'] else '#777'}'>{db(l['sqnr_db'])}</td>"
        f"<td class=num>{'' if l['normalised_error'] is None else format(l['normalised_error'], '.2f')}</td>"
        f"<td>{escape(_range_text(l['range']))}</td>"
        f"<td class=warning>{'<br>'.join(escape(d['text']) for d in l['diagnosis'])}</td></tr>" for l in r["layers"])
    bad_items = "".join(f"<li><b>{escape(w['name'])}</b>: {escape(w['diagnosis'])}</li>"
                        for w in r["points"]["worst"] if w["diagnosis"]) or "<li>none: no point is worse than the rest</li>"
    exports = "".join(f"<tr><td>{escape(e['format'])}</td><td>{escape(e['path'])}</td>"
                      f"<td class=num>{e['bytes'] / 1e6:.2f} MB</td><td>{'yes' if e['verified'] else 'NO'}</td></tr>"
                      for e in r["exports"])
    calib = r["calibration"]
    ev = r["evaluation"] or {}
    out_values = (result.output.ref_values, result.output.q_values) if result.output is not None else (None, None)
    v = r["verdict"]  # the same verdict the CLI ends with and the window's banner shows
    verdict = (f"<p class='verdict {escape(v['level'])}'><b>{escape(v['level'].upper())}</b>: {escape(v['reason'])}"
               + (f"<br>Next: <code>{escape(v['next'])}</code>" if v["next"] else "") + "</p>")
    return f"""<!doctype html>
<html lang=en><head><meta charset=utf-8><title>{escape(r['model'])}: quantization report</title>
<style>{_CSS}{_VERDICT_CSS}</style></head><body>
<h1>{escape(r['model'])}: {escape(r['method'])} int8 quantization</h1>
<p class=sub>{escape(r['mode'])} on {escape(r['engine'])}, weights {escape(r['dtype'])}; input {escape(r['input'])};
calibrated on {calib['samples']} samples ({escape(calib['source'])}); evaluated on
{ev.get('samples', 0)} samples ({escape(ev.get('source', 'none'))}). qtapp {escape(r['qtapp_version'])},
torch {escape(r['torch_version'])}.</p>
{verdict}
{"<table><tr><th></th><th class=num>float</th><th class=num>int8</th><th></th></tr>" + figures + "</table>" if figures else ""}
<p><b>Output error</b>: {', '.join(error)}</p>
<h2>Notes</h2><ul>{note_items}</ul>
<h2>Points worse than the rest</h2><ul class=warning>{bad_items}</ul>
<h2>SQNR at every quantization point</h2>
<p class=sub>Bars: each point's local SQNR, the point alone in int8 (its weights and its output rounded to its
range) on the float model's values. Line: the accumulated SQNR, the int8 model's tensor there against the
float model's. dB, higher is better; &#9888; marks a point worse than the rest.</p>
<p class=legend><span><i class=sw style='background:#2ca02c'></i>&ge; {GOOD_DB:.0f} dB good</span>
<span><i class=sw style='background:#f0a30a'></i>{FAIR_DB:.0f} dB fair</span>
<span><i class=sw style='background:#d62728'></i>&le; {POOR_DB:.0f} dB poor (shades between)</span>
<span><i class=sw style='background:#b4b4b4'></i>kept float</span>
<span><i class=sw style='background:#333;height:2px;vertical-align:middle'></i>accumulated</span></p>
{_layer_chart(r['layers'])}
{_tune_html(result)}
{_sensitivity_html(r.get('sensitivity'))}
<h2>Output: int8 against float</h2>
<div style='display:flex;gap:24px;align-items:flex-start'>{_error_histogram(*out_values)}{_scatter(*out_values)}</div>
<h2>Points</h2><table><tr><th>point</th><th>op</th><th>runs as</th><th class=num>local dB</th>
<th class=num>accum. dB</th><th class=num>normalised</th><th>range</th><th>diagnosis</th></tr>{layer_rows}</table>
<p class=sub>Normalised: RMSE of the point's output rounding over its scale; 0.29 is pure rounding, far above
means values clipped at the ends of its range.</p>
{'<h2>Files</h2><table><tr><th>format</th><th>path</th><th class=num>size</th><th>verified</th></tr>' + exports + '</table>' if exports else ''}
</body></html>
"""
