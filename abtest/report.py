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

from abtest.analysis import Readout, TimelinePoint
from abtest.comparison import Comparison

CSS = """
*{box-sizing:border-box}
body{font-family:-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:16px;color:#1d2330;max-width:1240px}
h1{font-size:22px;margin-bottom:4px} h2{font-size:17px;margin-top:26px;border-bottom:1px solid #dde;padding-bottom:4px}
.meta{color:#667;font-size:13px}
.banner{padding:10px 14px;border-radius:6px;margin:12px 0;font-weight:600}
.sim{background:#fff7d6;border:1px solid #e5c84a;color:#5a4700}
.srm{background:#fde2e1;border:1px solid #d9534f;color:#7a1c19}
.verdicts{margin:14px 0;padding:0;list-style:none}
.verdicts li{padding:10px 14px;border-radius:6px;margin:6px 0;font-size:15px;border:1px solid}
.v-ship{background:#e5f5e8;border-color:#5cb85c;color:#1d5a23}
.v-dont{background:#fde2e1;border-color:#d9534f;color:#7a1c19}
.v-keep{background:#eef2ff;border-color:#5c7cfa;color:#1f2f7a}
.v-invalid,.v-none{background:#f1f1f1;border-color:#999;color:#333}
.check{font-size:13px;color:#445;margin:4px 0}
table{border-collapse:collapse;font-size:12.5px;width:100%;table-layout:auto}
th,td{padding:5px 6px;border-bottom:1px solid #e6e8ef;text-align:right;vertical-align:top}
th{background:#f4f5f9;cursor:help} td.l,th.l{text-align:left} td.n{white-space:nowrap}
.pos{color:#1d7a2d;font-weight:600}.neg{color:#b3261e;font-weight:600}.inc{color:#666}.inv{color:#b3261e}
.small{font-size:12px;color:#556} svg{background:#fff;max-width:100%;height:auto}
.grid{display:flex;flex-wrap:wrap;gap:12px}
dl.legend{display:grid;grid-template-columns:max-content 1fr;gap:2px 12px;font-size:12px;color:#445}
dl.legend dt{font-weight:600} dl.legend dd{margin:0}
details{margin-top:10px} summary{cursor:pointer;font-size:13px;color:#334}
"""

LEGEND = {
    "control / treatment": "Metric value per arm. With CUPED these are adjusted for each user's pre-period behaviour (less noise, same expected value); the raw value is shown on hover.",
    "lift [95% CI]": "Relative change of treatment vs control with its 95% interval (Fieller). It contains 0 exactly when the test is not significant, and never goes below -100%.",
    "raw lift": "The same lift without the CUPED adjustment (plain means), for comparison.",
    "p (adj.)": "Welch t-test of the absolute difference. Secondary metrics are adjusted for testing several of them (Holm or Benjamini-Hochberg); the primary metric, the pre-registered decision, is not. Below alpha = significant.",
    "detectable now": "Minimum detectable effect: the smallest relative change this sample detects with 80% power. Effects smaller than this are invisible so far.",
    "decision": "significant improvement / regression, inconclusive, not enough data (minimum sample not reached), not computable (reason given), invalid (SRM).",
    "always-valid p / CI": "Sequential test (mSPRT on the absolute difference): stays valid however often the readout is looked at, at the price of wider intervals.",
    "chance to beat": "Bayesian probability that the treatment is better (Gaussian prior on the relative lift).",
    "risk": "Expected loss of shipping the treatment if it is in fact worse (relative).",
    "CUPED": "Variance removed by the pre-period covariate (CUPED); 'off' when it could not be used (reason listed).",
    "guardrail": "Do-no-harm metric: non-inferior when the interval's bad side stays within the margin; harm when it is significantly worse.",
}

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
    for d, p in zip(days, pts):  # that day's lift alone (clipped to the view)
        if math.isfinite(p.daily_rel_lift):
            parts.append(f"<circle cx='{x(d):.1f}' cy='{y(p.daily_rel_lift):.1f}' r='3' fill='#e8590c' fill-opacity='0.8'>"
                         f"<title>day {d}: {_pct(p.daily_rel_lift)} {_ci(p.daily_ci)} (that day only)</title></circle>")
    parts.append(f"<line x1='{left}' x2='{width - right}' y1='{y(0):.1f}' y2='{y(0):.1f}' stroke='#333' stroke-dasharray='2,2'/>")
    parts.append("</svg>")
    return "".join(parts)


def _decision_class(d: str) -> str:
    return {"significant improvement": "pos", "non-inferior": "pos", "significant regression": "neg", "harm": "neg"}.get(
        d, "inv" if d.startswith("invalid") else "inc")


VERDICT_CLASS = {"ship": "v-ship", "don't ship": "v-dont", "keep running": "v-keep", "invalid": "v-invalid", "no verdict": "v-none"}


def _ci(ci: tuple[float, float]) -> str:
    hi = _pct(ci[1]) if math.isfinite(ci[1]) or not math.isfinite(ci[0]) else "+\u221e"
    return f"[{_pct(ci[0])}, {hi}]"


def _mde(x: float) -> str:
    return f"\u00b1{x * 100:.1f}%" if math.isfinite(x) else "n/a"


def _th(label: str, key: str | None = None, cls: str = "") -> str:
    tip = html.escape(LEGEND.get(key or label, ""), quote=True)
    return f"<th class='{cls}' title='{tip}'>{html.escape(label)}</th>"


def _value(c: Comparison, adjusted: float, raw: float) -> str:
    tip = f" title='raw (unadjusted): {_num(raw)}'" if c.cuped else ""
    return f"<td class='n'{tip}>{_num(adjusted)}</td>"


def _metric_table(rows: list[Comparison]) -> str:
    out = ["<table><tr>", _th("metric", "", "l"), _th("control / treatment"), _th("lift [95% CI]"), _th("raw lift"),
           _th("p (adj.)"), _th("detectable now"), _th("decision", cls="l"), "</tr>"]
    for c in rows:
        raw = f"{_pct(c.raw_rel_lift)} {_ci(c.raw_rel_ci)}" if c.cuped else "same (no CUPED)"
        p = c.p_adjusted if c.role == "metric" else c.p_value
        out.append(
            f"<tr><td class='l' title='{html.escape(c.label, quote=True)}'>{html.escape(c.metric)} \u00b7 {html.escape(c.variant)}"
            f"{' (guardrail, margin ' + format(c.margin or 0, '.0%') + ')' if c.role == 'guardrail' else ''}</td>"
            f"<td class='n' title='raw: {_num(c.control_unadjusted)} / {_num(c.treatment_unadjusted)}; units {c.n_control:,} / {c.n_treatment:,}'>"
            f"{_num(c.control_value)} / {_num(c.treatment_value)}</td>"
            f"<td class='n'>{_pct(c.rel_lift)} {_ci(c.rel_ci)}</td><td class='n'>{raw}</td><td class='n'>{_p(p)}</td>"
            f"<td class='n'>{_mde(c.mde)}</td>"
            f"<td class='l {_decision_class(c.decision)}'>{html.escape(c.decision)}</td></tr>"
        )
    out.append("</table>")
    return "".join(out)


def _details_table(rows: list[Comparison]) -> str:
    out = ["<table><tr>", _th("metric", "", "l"), _th("units C / T", ""), _th("abs. lift [95% CI]", "p (adj.)"), _th("p raw", "p (adj.)"),
           _th("always-valid p", "always-valid p / CI"), _th("always-valid CI", "always-valid p / CI"), _th("chance to beat"),
           _th("risk"), _th("CUPED"), "</tr>"]
    for c in rows:
        out.append(
            f"<tr><td class='l'>{html.escape(c.metric)} \u00b7 {html.escape(c.variant)}</td><td class='n'>{c.n_control:,} / {c.n_treatment:,}</td>"
            f"<td class='n'>{_num(c.abs_lift, 3)} [{_num(c.abs_ci[0], 3)}, {_num(c.abs_ci[1], 3)}]</td><td class='n'>{_p(c.p_value)}</td>"
            f"<td class='n'>{_p(c.seq_p_value)}</td><td class='n'>{_ci(c.seq_ci)}</td>"
            f"<td class='n'>{_pct(c.chance_to_beat_control, 1).lstrip('+') if math.isfinite(c.chance_to_beat_control) else 'n/a'}</td>"
            f"<td class='n'>{_pct(c.expected_loss_treatment, 3).lstrip('+')}</td>"
            f"<td class='n'>{'-' + format(c.variance_reduction, '.0%') if c.cuped else 'off'}</td></tr>"
        )
    out.append("</table>")
    return "".join(out)


def _quantile_table(r: Readout) -> str:
    e = html.escape
    out = ["<table><tr>" + _th("quantile", "", "l") + _th("orders C / T", "") + _th("control / treatment") + _th("lift [95% CI]")
           + "<th title='z-test of the difference, standard errors from the clustered (per-user) interval of each quantile'>p</th>"
           + _th("decision", cls="l") + "</tr>"]
    for q in r.quantiles:
        decision = "invalid (SRM)" if not r.valid else q.status if q.status != "ok" else (
            "inconclusive" if not q.p_value < r.alpha else "higher" if q.abs_lift > 0 else "lower")
        out.append(f"<tr><td class='l' title='{e(q.reason)}'>{e(q.name)} \u00b7 {e(q.variant)}</td><td class='n'>{q.n_orders[0]:,} / {q.n_orders[1]:,}</td>"
                   f"<td class='n'>{_num(q.control_value)} / {_num(q.treatment_value)}</td><td class='n'>{_pct(q.rel_lift)} {_ci(q.rel_ci)}</td>"
                   f"<td class='n'>{_p(q.p_value)}</td><td class='l'>{e(decision)}</td></tr>")
    out.append("</table><p class='small'>Quantiles of the order values; intervals account for users ordering more than once "
               "(delta method on the share of orders below the quantile, Deng et al. 2018).</p>")
    return "".join(out)


def _segment_table(r: Readout) -> str:
    e = html.escape
    out = []
    for h in r.heterogeneity:
        if h.differs:
            out.append(f"<p class='small'>\u26a0 The {e(h.metric)} lift differs across {e(h.dimension)} (Cochran's Q = {h.q:.1f}, "
                       f"Holm-adjusted p = {_p(h.p_adjusted)}): read the segments below.</p>")
    if not any(h.differs for h in r.heterogeneity):
        out.append("<p class='small'>No dimension shows a lift that differs between its segments (Cochran's Q, Holm-adjusted); "
                   "differences between segment rows below are within noise.</p>")
    out.append("<table><tr>" + _th("segment", "", "l") + _th("metric", "", "l") + _th("units C / T", "") + _th("lift [95% CI]")
               + "<th title='Benjamini-Hochberg over all segment cells'>p (BH)</th>" + _th("decision", cls="l") + "</tr>")
    for c in r.segments:
        out.append(f"<tr><td class='l'>{e(c.segment or '')}</td><td class='l'>{e(c.metric)} \u00b7 {e(c.variant)}</td>"
                   f"<td class='n'>{c.n_control:,} / {c.n_treatment:,}</td><td class='n'>{_pct(c.rel_lift)} {_ci(c.rel_ci)}</td>"
                   f"<td class='n'>{_p(c.p_adjusted)}</td><td class='l {_decision_class(c.decision)}'>{e(c.decision)}</td></tr>")
    out.append("</table>")
    return "".join(out)


def render_html(r: Readout) -> str:
    e = html.escape
    out = [f"<!doctype html><html><head><meta charset='utf-8'><meta name='viewport' content='width=device-width'>"
           f"<title>A/B readout: {e(r.experiment)}</title><style>{CSS}</style></head><body>"]
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
    out.append("<ul class='verdicts'>")
    for v in r.verdicts:
        out.append(f"<li class='{VERDICT_CLASS.get(v.verdict, 'v-none')}'>{e(v.headline)}</li>")
    if not r.verdicts:
        out.append("<li class='v-none'>No primary metric comparison.</li>")
    out.append("</ul>")
    if r.valid:
        out.append(f"<p class='check'>Sample ratio check passed: units {e(str(dict(r.units)))} (\u03c7\u00b2 p = {srm['p_value']:.3f}).</p>")
    for n in r.notes:
        out.append(f"<p class='small'>\u26a0 {e(n)}</p>")

    metrics = [c for c in r.comparisons if c.role == "metric"]
    guards = [c for c in r.comparisons if c.role == "guardrail"]
    out.append("<h2>Metrics</h2>" + _metric_table(metrics))
    if guards:
        out.append("<h2>Guardrails</h2>" + _metric_table(guards))
    if r.quantiles:
        out.append("<h2>Order-value quantiles</h2>" + _quantile_table(r))
    if r.segments:
        out.append("<h2>Segments</h2>" + _segment_table(r))
    reasons = [(c, x) for c in r.comparisons for x in c.reasons]
    if reasons:
        out.append("<ul class='small'>" + "".join(f"<li>{e(c.metric)} \u00b7 {e(c.variant)}: {e(x)}</li>" for c, x in reasons) + "</ul>")
    out.append("<details><summary>More statistics (absolute lift, sequential test, Bayesian readout, CUPED)</summary>"
               + _details_table(r.comparisons) + "</details>")
    out.append("<h3 class='small'>What the columns mean</h3><dl class='legend'>"
               + "".join(f"<dt>{e(k)}</dt><dd>{e(v)}</dd>" for k, v in LEGEND.items()) + "</dl>")
    out.append("<h2>Forest plot</h2>" + forest_svg(metrics))
    if r.timeline:
        out.append("<h2>Lift over time</h2><p class='small'>Line: cumulative relative lift; dashed: fixed-horizon 95% CI at that look (not valid under peeking); "
                   "band: always-valid confidence sequence (running intersection); orange dots: the lift on that day's activity alone.</p>")
        for nv in r.novelty:
            verdict = e(nv.note) if nv.changed else (f"{e(nv.metric)} \u00b7 {e(nv.variant)}: no change of the effect between days "
                                                    f"{nv.early_days[0]}-{nv.early_days[1]} ({_pct(nv.early_lift)}) and "
                                                    f"{nv.late_days[0]}-{nv.late_days[1]} ({_pct(nv.late_lift)}), p = {_p(nv.change_p_value)}")
            label = "\u26a0 novelty check: " if nv.changed else "Novelty check: "
            out.append(f"<p class='small'>{label}{verdict}</p>")
        out.append("<div class='grid'>")
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
