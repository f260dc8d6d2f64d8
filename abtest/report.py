"""HTML (+ JSON) report of a readout, with inline SVG charts (no plotting library needed).

* a banner when the data is simulated, and a red SRM banner when the sample ratio check
  fails (the readout is then invalid: no decision is shown as actionable);
* the metric table: per metric and variant, control and treatment values, absolute and
  relative lift with intervals, p-values (raw and adjusted), sequential p-value, chance to
  beat control, expected loss and the decision;
* a forest plot of the relative lifts with fixed-horizon intervals (dark) and confidence
  sequences (light), and the true lift when simulated;
* cumulative relative lift over time per metric with the fixed-horizon interval and the
  always-valid confidence sequence.
"""

from __future__ import annotations

import html
import json
import math
from pathlib import Path
from typing import Iterable

from abtest.analysis import Comparison, Readout, TimelinePoint

CSS = """
body{font-family:-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:24px;color:#1d2330;max-width:1200px}
h1{font-size:22px;margin-bottom:4px} h2{font-size:17px;margin-top:28px;border-bottom:1px solid #dde;padding-bottom:4px}
.meta{color:#667;font-size:13px}
.banner{padding:10px 14px;border-radius:6px;margin:12px 0;font-weight:600}
.sim{background:#fff7d6;border:1px solid #e5c84a;color:#5a4700}
.srm{background:#fde2e1;border:1px solid #d9534f;color:#7a1c19}
.ok{background:#e5f5e8;border:1px solid #5cb85c;color:#1d5a23}
table{border-collapse:collapse;font-size:12.5px;width:100%}
th,td{padding:5px 7px;border-bottom:1px solid #e6e8ef;text-align:right;white-space:nowrap}
th{background:#f4f5f9;position:sticky;top:0} td.l,th.l{text-align:left}
.pos{color:#1d7a2d;font-weight:600}.neg{color:#b3261e;font-weight:600}.inc{color:#666}.inv{color:#b3261e}
.small{font-size:12px;color:#556} svg{background:#fff}
.grid{display:flex;flex-wrap:wrap;gap:12px}
"""


def _pct(x: float | None, digits: int = 2) -> str:
    return "n/a" if x is None or not math.isfinite(x) else f"{x * 100:+.{digits}f}%"


def _num(x: float | None, digits: int = 4) -> str:
    if x is None or not math.isfinite(x):
        return "n/a"
    if abs(x) >= 1000:
        return f"{x:,.1f}"
    return f"{x:.{digits}g}"


def _p(x: float | None) -> str:
    if x is None or not math.isfinite(x):
        return "n/a"
    return f"{x:.2e}" if x < 1e-3 else f"{x:.4f}"


def _ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    if not (math.isfinite(lo) and math.isfinite(hi)) or hi <= lo:
        return [lo]
    raw = (hi - lo) / n
    mag = 10 ** math.floor(math.log10(raw))
    step = min((m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw), default=raw)
    start = math.ceil(lo / step) * step
    out, t = [], start
    while t <= hi + 1e-12:
        out.append(round(t, 12))
        t += step
    return out


def _finite(vals: Iterable[float | None]) -> list[float]:
    return [v for v in vals if v is not None and math.isfinite(v)]


def forest_svg(comps: list[Comparison], width: int = 760) -> str:
    """Relative lift per (metric, variant): fixed-horizon CI (dark), confidence sequence (light), true lift (diamond)."""
    if not comps:
        return "<p class='small'>no comparisons</p>"
    row_h, left, right, top = 28, 230, 30, 26
    height = top + row_h * len(comps) + 34
    vals = _finite(v for c in comps for v in (*c.rel_ci, *c.seq_ci, c.rel_lift, c.true_rel_lift, 0.0))
    lo, hi = min(vals), max(vals)
    pad = 0.08 * (hi - lo or 0.02)
    lo, hi = lo - pad, hi + pad
    x = lambda v: left + (width - left - right) * (v - lo) / (hi - lo)  # noqa: E731
    parts = [f"<svg xmlns='http://www.w3.org/2000/svg' width='{width}' height='{height}' font-size='12' font-family='sans-serif'>"]
    for t in _ticks(lo, hi):
        parts.append(f"<line x1='{x(t):.1f}' x2='{x(t):.1f}' y1='{top - 6}' y2='{height - 30}' stroke='#eceef3'/>")
        parts.append(f"<text x='{x(t):.1f}' y='{height - 14}' text-anchor='middle' fill='#556'>{t * 100:g}%</text>")
    parts.append(f"<line x1='{x(0):.1f}' x2='{x(0):.1f}' y1='{top - 6}' y2='{height - 30}' stroke='#333' stroke-dasharray='3,3'/>")
    parts.append(f"<text x='{left}' y='14' fill='#334'>relative lift vs control; dark: {int(round(100 * (1 - 0.05)))}% CI, light: confidence sequence, \u25c6 true (simulated)</text>")
    for i, c in enumerate(comps):
        y = top + row_h * i + row_h / 2
        color = "#1d7a2d" if c.decision == "significant improvement" else "#b3261e" if c.decision == "significant regression" else "#3b5bdb"
        if c.decision.startswith("invalid"):
            color = "#999"
        parts.append(f"<text x='{left - 8}' y='{y + 4:.1f}' text-anchor='end' fill='#223'>{html.escape(c.metric)} \u00b7 {html.escape(c.variant)}</text>")
        if all(math.isfinite(v) for v in c.seq_ci):
            parts.append(f"<line x1='{x(max(c.seq_ci[0], lo)):.1f}' x2='{x(min(c.seq_ci[1], hi)):.1f}' y1='{y:.1f}' y2='{y:.1f}' stroke='{color}' stroke-opacity='0.25' stroke-width='9'/>")
        if all(math.isfinite(v) for v in c.rel_ci):
            parts.append(f"<line x1='{x(c.rel_ci[0]):.1f}' x2='{x(c.rel_ci[1]):.1f}' y1='{y:.1f}' y2='{y:.1f}' stroke='{color}' stroke-width='2.5'/>")
        if math.isfinite(c.rel_lift):
            parts.append(f"<circle cx='{x(c.rel_lift):.1f}' cy='{y:.1f}' r='4.5' fill='{color}'><title>{html.escape(c.metric)} {html.escape(c.variant)}: {_pct(c.rel_lift)} [{_pct(c.rel_ci[0])}, {_pct(c.rel_ci[1])}]</title></circle>")
        if c.true_rel_lift is not None and math.isfinite(c.true_rel_lift):
            tx = x(c.true_rel_lift)
            parts.append(f"<path d='M{tx:.1f},{y - 6:.1f} l5,6 l-5,6 l-5,-6 z' fill='none' stroke='#e8590c' stroke-width='1.5'/>")
    parts.append("</svg>")
    return "".join(parts)


def timeline_svg(points: list[TimelinePoint], title: str, width: int = 560, height: int = 240) -> str:
    """Cumulative relative lift by day with the fixed-horizon CI (dashed) and the confidence sequence (band)."""
    pts = sorted(points, key=lambda p: p.day)
    if not pts:
        return ""
    left, right, top, bottom = 56, 14, 28, 34
    days = [p.day + 1 for p in pts]
    vals = _finite(v for p in pts for v in (p.rel_lift, *p.ci, *p.seq_ci, 0.0))
    # the confidence sequence is very wide on the first days: clip the view to the fixed CIs x 2.5
    fixed = _finite(v for p in pts for v in (*p.ci, p.rel_lift, 0.0))
    span = (max(fixed) - min(fixed)) or 0.02
    lo = max(min(vals), min(fixed) - 0.75 * span)
    hi = min(max(vals), max(fixed) + 0.75 * span)
    if hi - lo < 1e-9:
        lo, hi = lo - 0.01, hi + 0.01
    d0, d1 = min(days), max(days)
    dx = (d1 - d0) or 1
    x = lambda d: left + (width - left - right) * (d - d0) / dx  # noqa: E731
    y = lambda v: top + (height - top - bottom) * (hi - min(max(v, lo), hi)) / (hi - lo)  # noqa: E731
    parts = [f"<svg xmlns='http://www.w3.org/2000/svg' width='{width}' height='{height}' font-size='11' font-family='sans-serif'>"]
    parts.append(f"<text x='{left}' y='16' fill='#223' font-weight='600'>{html.escape(title)}</text>")
    for t in _ticks(lo, hi, 4):
        parts.append(f"<line x1='{left}' x2='{width - right}' y1='{y(t):.1f}' y2='{y(t):.1f}' stroke='#eceef3'/>")
        parts.append(f"<text x='{left - 6}' y='{y(t) + 4:.1f}' text-anchor='end' fill='#556'>{t * 100:g}%</text>")
    for d in days:
        parts.append(f"<text x='{x(d):.1f}' y='{height - 18}' text-anchor='middle' fill='#556'>{d}</text>")
    parts.append(f"<text x='{(left + width - right) / 2:.0f}' y='{height - 4}' text-anchor='middle' fill='#556'>day of experiment</text>")
    band = [(x(d), y(p.seq_ci[1])) for d, p in zip(days, pts)] + [(x(d), y(p.seq_ci[0])) for d, p in reversed(list(zip(days, pts)))]
    parts.append("<polygon points='" + " ".join(f"{a:.1f},{b:.1f}" for a, b in band) + "' fill='#3b5bdb' fill-opacity='0.15'/>")
    for k in (0, 1):
        parts.append("<polyline fill='none' stroke='#3b5bdb' stroke-dasharray='4,3' points='" + " ".join(f"{x(d):.1f},{y(p.ci[k]):.1f}" for d, p in zip(days, pts)) + "'/>")
    parts.append("<polyline fill='none' stroke='#1d2330' stroke-width='2' points='" + " ".join(f"{x(d):.1f},{y(p.rel_lift):.1f}" for d, p in zip(days, pts)) + "'/>")
    parts.append(f"<line x1='{left}' x2='{width - right}' y1='{y(0):.1f}' y2='{y(0):.1f}' stroke='#333' stroke-dasharray='2,2'/>")
    parts.append("</svg>")
    return "".join(parts)


def _decision_class(d: str) -> str:
    return {"significant improvement": "pos", "significant regression": "neg"}.get(d, "inv" if d.startswith("invalid") else "inc")


def render_html(r: Readout) -> str:
    e = html.escape
    out = [f"<!doctype html><html><head><meta charset='utf-8'><title>A/B readout: {e(r.experiment)}</title><style>{CSS}</style></head><body>"]
    out.append(f"<h1>A/B readout: {e(r.experiment)}</h1>")
    out.append(f"<div class='meta'>layer {e(r.layer)} \u00b7 window {e(str(r.window[0]))} \u2192 {e(str(r.window[1] or 'now'))} \u00b7 "
               f"\u03b1 = {r.alpha} \u00b7 correction: {e(r.correction)} \u00b7 generated {e(r.generated_at)}</div>")
    if r.simulation:
        out.append(f"<div class='banner sim'>{e(r.simulation.get('label', 'SIMULATED DATA'))}</div>")
    srm = r.srm
    if not r.valid:
        out.append(
            f"<div class='banner srm'>SAMPLE RATIO MISMATCH: units per variant {list(srm['counts'])} vs expected "
            f"{[round(v, 1) for v in srm['expected']]} (\u03c7\u00b2 = {srm['chi2']:.2f}, p = {srm['p_value']:.2e} &lt; {srm['threshold']}). "
            "The assignment or the logging is broken; this readout is INVALID and no decision should be taken from it.</div>"
        )
    else:
        out.append(f"<div class='banner ok'>Sample ratio check passed: units {dict(r.units)} (\u03c7\u00b2 p = {srm['p_value']:.3f}). {e(r.summary)}</div>")
    for n in r.notes:
        out.append(f"<p class='small'>\u26a0 {e(n)}</p>")

    out.append("<h2>Metrics</h2><table><tr><th class='l'>metric</th><th class='l'>variant</th><th>units (C/T)</th><th>control</th><th>treatment</th>"
               "<th>abs. lift [CI]</th><th>rel. lift [CI]</th><th>p</th><th>p adj.</th><th>seq. p</th><th>seq. CI</th>"
               "<th>P(beat ctrl)</th><th>exp. loss</th><th>CUPED \u0394var</th><th class='l'>decision</th></tr>")
    for c in r.comparisons:
        out.append(
            f"<tr><td class='l' title='{e(c.label)}'>{e(c.metric)}</td><td class='l'>{e(c.variant)}</td><td>{c.n_control:,}/{c.n_treatment:,}</td>"
            f"<td>{_num(c.control_value)}</td><td>{_num(c.treatment_value)}</td>"
            f"<td>{_num(c.abs_lift, 3)} [{_num(c.abs_ci[0], 3)}, {_num(c.abs_ci[1], 3)}]</td>"
            f"<td>{_pct(c.rel_lift)} [{_pct(c.rel_ci[0])}, {_pct(c.rel_ci[1])}]</td>"
            f"<td>{_p(c.p_value)}</td><td>{_p(c.p_adjusted)}</td><td>{_p(c.seq_p_value)}</td>"
            f"<td>[{_pct(c.seq_ci[0])}, {_pct(c.seq_ci[1])}]</td><td>{c.chance_to_beat_control:.1%}</td>"
            f"<td>{_pct(c.expected_loss_treatment, 3)}</td><td>{'-' + format(c.variance_reduction, '.0%') if c.cuped else 'off'}</td>"
            f"<td class='l {_decision_class(c.decision)}'>{e(c.decision)}</td></tr>"
        )
    out.append("</table>")
    out.append("<p class='small'>Values of CUPED metrics are adjusted (pre-period covariate, \u03b8 pooled across arms). Ratio metrics (CTR, AOV) use the delta method; "
               "relative lifts use the delta-method variance; p from Welch's t-test on the relative lift, adjusted across all metric \u00d7 variant comparisons; "
               "seq. p / seq. CI: normal-mixture mSPRT, valid under continuous monitoring; P(beat ctrl) and expected loss (relative) from a Gaussian prior on the relative lift.</p>")
    out.append("<h2>Forest plot</h2>" + forest_svg(r.comparisons))
    if r.timeline:
        out.append("<h2>Cumulative lift over time</h2><p class='small'>Line: cumulative relative lift; dashed: fixed-horizon 95% CI at that look (not valid under peeking); "
                   "band: always-valid confidence sequence (running intersection).</p><div class='grid'>")
        order = {c.metric: i for i, c in reversed(list(enumerate(r.comparisons)))}
        keys = sorted({(p.metric, p.variant) for p in r.timeline}, key=lambda k: (order.get(k[0], len(order)), k[1]))
        for m, v in keys:
            out.append(timeline_svg([p for p in r.timeline if p.metric == m and p.variant == v], f"{m} \u00b7 {v} vs {r.control}"))
        out.append("</div>")
    if r.winsor_caps:
        caps = ", ".join(f"{c['column']} \u2264 {_num(c['upper'])}" for c in r.winsor_caps)
        out.append(f"<p class='small'>Winsorized per-unit values (pooled percentiles): {e(caps)}.</p>")
    out.append("</body></html>")
    return "".join(out)


def write_report(r: Readout, out_dir: str | Path) -> tuple[Path, Path]:
    """Write ``report.html`` and ``report.json``; returns their paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    h, j = out / "report.html", out / "report.json"
    h.write_text(render_html(r))
    j.write_text(json.dumps(r.to_dict(), indent=2, default=str))
    return h, j
