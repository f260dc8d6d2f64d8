"""A/B analysis of ~10 million exposure + outcome events: polars (abtest) vs an equivalent pandas implementation.

    .venv/bin/python benchmarks/abtest_analysis.py [--events 10000000] [--skip-pandas]

1. The SIMULATOR writes exposures and outcomes (parquet) for ``--events`` rows in total
   (pre-period + experiment, ~1.3 events per request), once, cached under artifacts/benchmarks/.
2. Each implementation runs in its own fresh process (so peak RSS is its own), reading the
   parquet files and computing the same readout: per-unit aggregation (exposures, clicks, orders,
   GMV after first exposure; pre-period covariates with request de-duplication), winsorization
   of GMV (99.9th percentile of non-zero values), per-variant moments, CTR and AOV with the
   delta method, GMV/user and conversion, CUPED (pooled theta), Welch tests, mSPRT, Bayes.
   The statistics (abtest.stats, microseconds) are shared; what differs is the data work.
3. The two readouts are compared number by number, and a table of time and peak memory is printed.

Peak memory is the child's VmHWM (peak RSS; includes the interpreter and imports: see the
"idle" row, a process that only imports both libraries).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

OUT = ROOT / "artifacts" / "benchmarks"
EXPERIMENT = "dlf_vs_dmoe"
EVENTS_PER_UNIT = 13.4  # ~ (0.5 sessions/day x 21 days) x 1.3 events per request, measured on the simulator


def generate(events: int, directory: Path) -> dict:
    from abtest.events import ParquetSink
    from abtest.routing import DEFAULT_CONFIG
    from abtest.config import load_config
    from abtest.simulator import Effect, MarketplaceSimulator, SimulationConfig

    stamp = directory / "simulation.json"
    if stamp.exists():
        meta = json.loads(stamp.read_text())
        if meta.get("target_events") == events:
            return meta
    cfg = load_config(DEFAULT_CONFIG)
    n_units = int(events / EVENTS_PER_UNIT)
    features = ROOT / "data" / "features"
    sim = MarketplaceSimulator(
        SimulationConfig(experiment=EXPERIMENT, n_units=n_units, days=14, pre_days=7, effects={"treatment": Effect(ctr=0.02, purchase=0.02)},
                         features_dir=features if features.exists() else None, seed=7),
        cfg,
    )
    t = time.perf_counter()
    meta = sim.simulate_direct(ParquetSink(directory))
    meta["generate_seconds"] = time.perf_counter() - t
    meta["target_events"] = events
    stamp.write_text(json.dumps(meta, default=str))
    return meta


# --------------------------------------------------------------------------------------- pandas


def pandas_readout(directory: Path) -> dict:
    """The same readout as abtest.analysis.analyze(timeline=False), data work in pandas."""
    import numpy as np
    import pandas as pd

    from abtest import stats
    from abtest.analysis import MOMENT_COLUMNS, compare
    from abtest.config import load_config
    from abtest.routing import DEFAULT_CONFIG

    cfg = load_config(DEFAULT_CONFIG)
    _, e = cfg.find(EXPERIMENT)
    a = e.analysis
    exp = pd.read_parquet(directory / "exposures")
    out = pd.read_parquet(directory / "outcomes")
    in_exp = exp[exp["experiment"] == EXPERIMENT]
    start = in_exp["ts"].min()
    g = in_exp.groupby("unit_id", sort=False)
    units = pd.DataFrame({
        "variant": g["variant"].first(),
        "n_variants": g["variant"].nunique(),
        "first_exposure": g["ts"].min(),
        "requests": g.size().astype(float),
        "impressions": g["n_items"].sum().astype(float),
    })
    post = out[out["ts"] >= start].merge(units[["first_exposure"]], left_on="unit_id", right_index=True, how="inner")
    post = post[post["ts"] >= post["first_exposure"]]
    post = post.assign(click=(post["event"] == "click").astype(float), order=(post["event"] == "purchase").astype(float))
    post = post.assign(gmv=np.where(post["event"] == "purchase", post["value"], 0.0))
    pa = post.groupby("unit_id", sort=False).agg(clicks=("click", "sum"), orders=("order", "sum"), gmv=("gmv", "sum"))
    lo = start - pd.Timedelta(days=a.pre_period_days)
    pre_e = exp[(exp["ts"] >= lo) & (exp["ts"] < start)].drop_duplicates("request_id")
    pe = pre_e.groupby("unit_id", sort=False).agg(pre_requests=("request_id", "size"), pre_impressions=("n_items", "sum")).astype(float)
    pre_o = out[(out["ts"] >= lo) & (out["ts"] < start)]
    pre_o = pre_o.assign(pre_clicks=(pre_o["event"] == "click").astype(float), pre_orders=(pre_o["event"] == "purchase").astype(float),
                         pre_gmv=np.where(pre_o["event"] == "purchase", pre_o["value"], 0.0))
    po = pre_o.groupby("unit_id", sort=False)[["pre_clicks", "pre_orders", "pre_gmv"]].sum()
    t = units.join(pa, how="left").join(pe, how="left").join(po, how="left")
    fill = ["clicks", "orders", "gmv", "pre_requests", "pre_impressions", "pre_clicks", "pre_orders", "pre_gmv"]
    t[fill] = t[fill].fillna(0.0)
    t["converted"] = (t["orders"] > 0).astype(float)
    t["pre_converted"] = (t["pre_orders"] > 0).astype(float)
    t = t[t["n_variants"] == 1]
    w = a.winsorize
    for col in [c for name in w.columns for c in (name, f"pre_{name}")]:
        nz = t.loc[t[col] != 0, col] if w.nonzero_only else t[col]
        hi = nz.quantile(w.upper)
        capped = t[col].clip(upper=hi)
        t[col] = np.where(t[col] == 0, 0.0, capped) if w.nonzero_only else capped
    arms = {v: stats.Moments.from_array(MOMENT_COLUMNS, grp[list(MOMENT_COLUMNS)].to_numpy()) for v, grp in t.groupby("variant")}
    comps = [compare(arms, cfg.metric_defs[m], e.control, "treatment", a) for m in e.metrics]
    return {"units": {v: m.n for v, m in arms.items()}, "rel_lift": {c.metric: c.rel_lift for c in comps},
            "p_value": {c.metric: c.p_value for c in comps}, "rel_ci": {c.metric: list(c.rel_ci) for c in comps}}


def polars_readout(directory: Path, timeline: bool) -> dict:
    from abtest.analysis import readout_from_dir
    from abtest.config import load_config
    from abtest.routing import DEFAULT_CONFIG

    cfg = load_config(DEFAULT_CONFIG)
    _, e = cfg.find(EXPERIMENT)
    e.quantiles, e.segments, e.guardrails = [], [], []  # the same work as the pandas readout
    r = readout_from_dir(cfg, EXPERIMENT, directory, timeline=timeline)
    comps = [c for c in r.comparisons if c.variant == "treatment"]
    return {"units": r.units, "rel_lift": {c.metric: c.rel_lift for c in comps}, "p_value": {c.metric: c.p_value for c in comps},
            "rel_ci": {c.metric: list(c.rel_ci) for c in comps}, "timeline_points": len(r.timeline)}


def peak_rss_mb() -> float:
    """This process's peak resident set (VmHWM: per address space, so not inherited from the parent across exec)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def child(impl: str, directory: Path) -> None:
    # imports first: the clock measures the analysis, not interpreter start-up (the idle row shows that memory)
    import pandas  # noqa: F401
    import polars  # noqa: F401

    import abtest.analysis  # noqa: F401
    import abtest.config  # noqa: F401
    import abtest.routing  # noqa: F401

    t0 = time.perf_counter()
    if impl == "idle":
        result: dict = {}
    elif impl == "pandas":
        result = pandas_readout(directory)
    else:
        result = polars_readout(directory, timeline=impl == "polars+timeline")
    result["seconds"] = time.perf_counter() - t0
    result["peak_rss_mb"] = peak_rss_mb()
    print("RESULT " + json.dumps(result))


def run_child(impl: str, directory: Path) -> dict:
    started = time.perf_counter()
    out = subprocess.run([sys.executable, __file__, "--child", impl, "--dir", str(directory)], capture_output=True, text=True, env=os.environ.copy())
    if out.returncode != 0:
        raise RuntimeError(f"{impl} failed:\n{out.stderr[-3000:]}")
    line = next(x for x in out.stdout.splitlines() if x.startswith("RESULT "))
    res = json.loads(line[7:])
    res["process_seconds"] = time.perf_counter() - started
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--events", type=int, default=10_000_000)
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--skip-pandas", action="store_true")
    ap.add_argument("--child")
    ap.add_argument("--dir")
    args = ap.parse_args()
    if args.child:
        child(args.child, Path(args.dir))
        return
    import polars as pl

    directory = OUT / f"abtest_events_{args.events}"
    t = time.perf_counter()
    meta = generate(args.events, directory)
    n_exp = pl.scan_parquet(directory / "exposures" / "*.parquet").select(pl.len()).collect().item()
    n_out = pl.scan_parquet(directory / "outcomes" / "*.parquet").select(pl.len()).collect().item()
    print(f"SIMULATED events: {n_exp:,} exposures + {n_out:,} outcomes = {n_exp + n_out:,} rows "
          f"({meta['n_units']:,} simulated users, 7 pre-period + 14 experiment days); ready in {time.perf_counter() - t:.1f}s")
    impls = ["idle", "polars", "polars+timeline"] + ([] if args.skip_pandas else ["pandas"])
    results: dict[str, list[dict]] = {}
    for _ in range(args.repeats):
        for impl in impls:
            results.setdefault(impl, []).append(run_child(impl, directory))
            print(f"  {impl}: {results[impl][-1]['seconds']:.2f}s, peak RSS {results[impl][-1]['peak_rss_mb']:.0f} MB", flush=True)
    best = {k: min(v, key=lambda r: r["seconds"]) for k, v in results.items()}
    pol = best["polars"]
    rows = []
    for impl in impls:
        r = best[impl]
        speed = "" if impl == "idle" else f"{best['pandas']['seconds'] / r['seconds']:.1f}x" if "pandas" in best else ""
        rows.append((impl, f"{r['seconds']:.2f}", f"{r['peak_rss_mb']:.0f}", speed))
    widths = [18, 10, 15, 16]
    print()
    print(f"A/B readout of {n_exp + n_out:,} events ({os.cpu_count()} cores, polars {pl.__version__}, best of {args.repeats})")
    header = ("implementation", "time (s)", "peak RSS (MB)", "pandas / this")
    print("  ".join(h.ljust(w) for h, w in zip(header, widths)))
    print("  ".join("-" * w for w in widths))
    for row in rows:
        print("  ".join(str(c).ljust(w) for c, w in zip(row, widths)))
    if "pandas" in best:
        pd_r = best["pandas"]
        diffs = [abs(pd_r["rel_lift"][m] - pol["rel_lift"][m]) for m in pol["rel_lift"]]
        print(f"\nsame readout: units {pol['units']} vs {pd_r['units']}; max |rel lift polars - pandas| = {max(diffs):.2e}")
    print("metrics (polars):", {m: f"{v:+.4f} [{pol['rel_ci'][m][0]:+.4f}, {pol['rel_ci'][m][1]:+.4f}]" for m, v in pol["rel_lift"].items()})
    print("true relative lift (simulation):", meta["true_relative_lift"]["treatment"])
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "abtest_analysis.json").write_text(json.dumps({"events": n_exp + n_out, "results": results}, indent=2))


if __name__ == "__main__":
    main()
