"""The effect over time: daily lifts and the novelty check, through analyze() on logged events."""

from __future__ import annotations

from datetime import datetime, timedelta

import numpy as np
import polars as pl

from abtest.analysis import analyze
from abtest.config import ExperimentsConfig
from abtest.events import EXPOSURE_SCHEMA, OUTCOME_SCHEMA
from abtest.report import render_html

START = datetime(2026, 3, 2)
DAYS = 8


def events(novelty: bool, n_units: int = 3000, seed: int = 0):
    """Every unit visits daily; the treatment buys more. With ``novelty`` only in the first 4 days."""
    rng = np.random.default_rng(seed)
    ex, out = [], []
    for u in range(n_units):
        v = ("control", "treatment")[u % 2]
        for day in range(DAYS):
            ts = START + timedelta(days=day, hours=int(rng.integers(0, 20)))
            rid = f"r{u}-{day}"
            ex.append({"request_id": rid, "ts": ts, "unit_id": f"u{u}", "model": "dlf", "n_items": 10,
                       "layer": "ranking", "experiment": "e", "variant": v})
            boosted = v == "treatment" and (day < DAYS // 2 or not novelty)
            if rng.random() < (0.3 if boosted else 0.1):
                out.append({"request_id": rid, "ts": ts + timedelta(minutes=1), "unit_id": f"u{u}", "item_id": "i",
                            "event": "purchase", "value": float(rng.lognormal(3, 0.5))})
    cfg = ExperimentsConfig.model_validate({"layers": [{"name": "ranking", "experiments": [{
        "name": "e", "variants": [{"name": "control", "weight": 1}, {"name": "treatment", "weight": 1}],
        "metrics": ["gmv_per_user", "conversion"], "analysis": {"pre_period_days": 0, "winsorize": None}}]}]})
    return cfg, pl.DataFrame(ex, schema=EXPOSURE_SCHEMA), pl.DataFrame(out, schema=OUTCOME_SCHEMA)


def test_novelty_effect_is_flagged_and_daily_lifts_follow_it():
    cfg, ex, out = events(novelty=True)
    r = analyze(cfg, "e", ex, out)
    gmv = next(n for n in r.novelty if n.metric == "gmv_per_user")
    # 3x the purchases for 4 days, then none: early lift ~ +200%, late ~ 0, p tiny
    assert gmv.changed and gmv.change_p_value < 1e-6 and gmv.early_lift > 1.0 and abs(gmv.late_lift) < 0.3
    assert "novelty effect" in gmv.note
    daily = {p.day: p for p in r.timeline if p.metric == "gmv_per_user"}
    assert daily[0].daily_rel_lift > 1.0 and daily[DAYS - 1].daily_ci[0] < 0 < daily[DAYS - 1].daily_ci[1]
    assert "novelty check" in render_html(r)


def test_a_steady_effect_is_not_called_novelty():
    cfg, ex, out = events(novelty=False)
    r = analyze(cfg, "e", ex, out)
    gmv = next(n for n in r.novelty if n.metric == "gmv_per_user")
    # the same effect in both halves: the two half-window lifts agree to within their noise
    assert abs(gmv.early_lift - gmv.late_lift) < 0.5 and gmv.early_lift > 1.0 and gmv.late_lift > 1.0


def test_segment_breakdown_finds_the_segment_that_moves():
    """The treatment lifts GMV only for users with pre-period activity; new users see nothing.
    Cochran's Q flags new_vs_returning, and the cells say which segment moved."""
    rng = np.random.default_rng(4)
    ex, out = [], []
    for u in range(4000):
        v = ("control", "treatment")[u % 2]
        returning = u % 4 < 2
        days = range(-3, 6) if returning else range(0, 6)
        for day in days:
            ts = START + timedelta(days=day, hours=int(rng.integers(0, 20)))
            rid = f"r{u}-{day}"
            ex.append({"request_id": rid, "ts": ts, "unit_id": f"u{u}", "model": "dlf", "n_items": 10,
                       "layer": "ranking" if day >= 0 else None, "experiment": "e" if day >= 0 else None,
                       "variant": v if day >= 0 else None})
            boosted = v == "treatment" and returning and day >= 0
            if rng.random() < (0.3 if boosted else 0.1):
                out.append({"request_id": rid, "ts": ts + timedelta(minutes=1), "unit_id": f"u{u}", "item_id": "i",
                            "event": "purchase", "value": float(rng.lognormal(3, 0.5))})
    attributes = pl.DataFrame({"unit_id": [f"u{u}" for u in range(4000)], "platform": ["ios" if u % 3 else "web" for u in range(4000)]})
    cfg = ExperimentsConfig.model_validate({"layers": [{"name": "ranking", "experiments": [{
        "name": "e", "variants": [{"name": "control", "weight": 1}, {"name": "treatment", "weight": 1}],
        "metrics": ["gmv_per_user"], "segments": ["new_vs_returning", "platform"],
        "analysis": {"pre_period_days": 3}}]}]})
    r = analyze(cfg, "e", pl.DataFrame(ex, schema=EXPOSURE_SCHEMA), pl.DataFrame(out, schema=OUTCOME_SCHEMA), attributes=attributes,
                timeline=False)
    cells = {c.segment: c for c in r.segments}
    assert set(cells) == {"new_vs_returning=new", "new_vs_returning=returning", "platform=ios", "platform=web"}
    assert cells["new_vs_returning=returning"].decision == "significant improvement"
    assert cells["new_vs_returning=new"].rel_ci[0] < 0 < cells["new_vs_returning=new"].rel_ci[1]
    het = {h.dimension: h for h in r.heterogeneity}
    assert het["new_vs_returning"].differs and het["new_vs_returning"].p_adjusted < 1e-6
    assert cells["new_vs_returning=new"].n_control + cells["new_vs_returning=returning"].n_control == r.units["control"]
    assert "Segments" in render_html(r)
