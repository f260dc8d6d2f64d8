"""Per-unit aggregation (polars, lazy) against a plain-Python recomputation, and variant moments."""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime, timedelta

import numpy as np
import polars as pl
import pytest

from abtest.aggregate import cumulative_units, daily_unit_increments, unit_table, variant_moments, winsorize_units
from abtest.events import EXPOSURE_SCHEMA, OUTCOME_SCHEMA
from abtest.stats import Moments, winsorize

START = datetime(2026, 1, 5)


def events(seed=0, n_units=300, n_req=4000):
    rng = np.random.default_rng(seed)
    exp_rows, out_rows = [], []
    for r in range(n_req):
        u = f"u{rng.integers(n_units)}"
        ts = START + timedelta(seconds=float(rng.uniform(-7 * 86400, 14 * 86400)))
        in_exp = ts >= START and int(u[1:]) % 3 != 0  # a third of the units are never enrolled
        variant = ("control", "treatment")[int(u[1:]) % 2] if in_exp else None
        base = {"request_id": f"r{r}", "ts": ts, "unit_id": u, "model": "dlf", "n_items": int(rng.integers(1, 12))}
        # the logging contract (abtest.routing): one row per experiment of the request, or one null row
        rows = [{**base, "layer": "ranking", "experiment": "e", "variant": variant}] if in_exp else []
        if rng.random() < 0.2:  # also in a second layer's experiment: one more row for the same request
            rows.append({**base, "layer": "ui", "experiment": "other", "variant": "x"})
        exp_rows.extend(rows or [{**base, "layer": None, "experiment": None, "variant": None}])
        for _ in range(rng.poisson(0.4)):
            t = ts + timedelta(seconds=float(rng.exponential(60)))
            out_rows.append({"request_id": f"r{r}", "ts": t, "unit_id": u, "item_id": "i", "event": "click", "value": 0.0})
            if rng.random() < 0.3:
                out_rows.append({"request_id": f"r{r}", "ts": t + timedelta(seconds=5), "unit_id": u, "item_id": "i", "event": "purchase",
                                 "value": float(rng.lognormal(3, 1))})
    return pl.DataFrame(exp_rows, schema=EXPOSURE_SCHEMA), pl.DataFrame(out_rows, schema=OUTCOME_SCHEMA)


def reference(exp: pl.DataFrame, out: pl.DataFrame, end: datetime, pre_days: int):
    first, variant, imps, reqs = {}, {}, defaultdict(float), defaultdict(float)
    for r in exp.iter_rows(named=True):
        if r["experiment"] == "e" and START <= r["ts"] < end:
            u = r["unit_id"]
            first[u] = min(first.get(u, r["ts"]), r["ts"])
            variant[u] = r["variant"]
            imps[u] += r["n_items"]
            reqs[u] += 1
    post = defaultdict(lambda: [0.0, 0.0, 0.0])
    for r in out.iter_rows(named=True):
        u = r["unit_id"]
        if u in first and first[u] <= r["ts"] < end and r["ts"] >= START:
            post[u][0] += r["event"] == "click"
            post[u][1] += r["event"] == "purchase"
            post[u][2] += r["value"] if r["event"] == "purchase" else 0.0
    lo = START - timedelta(days=pre_days)
    seen, pre_imp = set(), defaultdict(float)
    for r in exp.iter_rows(named=True):
        if lo <= r["ts"] < START and r["request_id"] not in seen:
            seen.add(r["request_id"])
            pre_imp[r["unit_id"]] += r["n_items"]
    pre_gmv = defaultdict(float)
    for r in out.iter_rows(named=True):
        if lo <= r["ts"] < START and r["event"] == "purchase":
            pre_gmv[r["unit_id"]] += r["value"]
    return {u: dict(variant=variant[u], impressions=imps[u], requests=reqs[u], clicks=post[u][0], orders=post[u][1], gmv=post[u][2],
                    converted=float(post[u][1] > 0), pre_impressions=pre_imp[u], pre_gmv=pre_gmv[u]) for u in first}


@pytest.mark.parametrize("end_days", [14, 9])
def test_unit_table_matches_python_reference(end_days):
    exp, out = events()
    end = START + timedelta(days=end_days)
    got = unit_table(exp.lazy(), out.lazy(), "e", START, end, pre_days=7).collect()
    ref = reference(exp, out, end, 7)
    assert isinstance(unit_table(exp, out, "e", START, end, 7), pl.LazyFrame)
    assert sorted(got["unit_id"].to_list()) == sorted(ref)
    for row in got.iter_rows(named=True):
        r = ref[row["unit_id"]]
        for k, v in r.items():
            assert row[k] == (v if isinstance(v, str) else pytest.approx(v, rel=1e-12)), (row["unit_id"], k)
    assert got["n_variants"].max() == 1


def test_variant_moments_equal_numpy():
    exp, out = events(1)
    units = unit_table(exp, out, "e", START, START + timedelta(days=14), 7).collect()
    cols = ["impressions", "clicks", "gmv", "pre_gmv"]
    m = variant_moments(units, cols)
    for v, g in units.group_by("variant"):
        ref = Moments.from_array(cols, g.select(cols).to_numpy())
        assert m[v[0]].n == ref.n
        np.testing.assert_allclose(m[v[0]].mean, ref.mean, rtol=1e-12)
        np.testing.assert_allclose(m[v[0]].cov, ref.cov, rtol=1e-9)


def test_winsorize_units_matches_numpy():
    rng = np.random.default_rng(5)
    gmv = rng.lognormal(3, 1.5, 2000) * (rng.random(2000) < 0.3)
    df = pl.DataFrame({"variant": ["a"] * 1000 + ["b"] * 1000, "gmv": gmv, "pre_gmv": gmv[::-1].copy()})
    for nonzero in (True, False):
        got, caps = winsorize_units(df, ["gmv"], upper=0.99, nonzero_only=nonzero)
        np.testing.assert_allclose(got["gmv"].to_numpy(), winsorize(gmv, 0.99, nonzero_only=nonzero), rtol=1e-12)
        np.testing.assert_allclose(got["pre_gmv"].to_numpy(), winsorize(gmv[::-1], 0.99, nonzero_only=nonzero), rtol=1e-12)
        assert {c.column for c in caps} == {"gmv", "pre_gmv"}


def test_multi_variant_units_are_flagged():
    exp, out = events(2)
    bad = exp.filter(pl.col("experiment") == "e").head(1).with_columns(
        pl.lit("r-extra").alias("request_id"),
        pl.when(pl.col("variant") == "control").then(pl.lit("treatment")).otherwise(pl.lit("control")).alias("variant"),
    )
    units = unit_table(pl.concat([exp, bad]), out, "e", START, None, 7).collect()
    assert units.filter(pl.col("n_variants") > 1).height == 1


def test_cumulative_units_by_day_add_up_to_the_unit_table():
    exp, out = events(3)
    end = START + timedelta(days=14)
    incr = daily_unit_increments(exp, out, "e", START, end).collect()
    full = unit_table(exp, out, "e", START, end, 0).collect().sort("unit_id")
    last = cumulative_units(incr, int(incr["day"].max())).sort("unit_id")
    assert last["unit_id"].to_list() == full["unit_id"].to_list()
    for c in ("impressions", "clicks", "orders", "gmv", "converted"):
        np.testing.assert_allclose(last[c].to_numpy(), full[c].to_numpy(), rtol=1e-12)
    day3 = cumulative_units(incr, 3)
    early = unit_table(exp, out, "e", START, START + timedelta(days=4), 0).collect()
    assert sorted(day3["unit_id"].to_list()) == sorted(early["unit_id"].to_list())
