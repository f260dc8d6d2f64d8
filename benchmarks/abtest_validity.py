"""Validity of the A/B readout on heavy-tailed marketplace data, through the production path.

    PYTHONPATH=$PWD nice -n 10 .venv/bin/python benchmarks/abtest_validity.py [--sims 2000]

Simulated experiments (abtest/montecarlo.py: buy rate 0.1, GMV per buyer log-normal with log-sd 2)
go through ``comparison.compare`` exactly as a readout does. Tables (rate +- Monte-Carlo standard error):

1. A/A false-positive rate of the decision test (target 5 +- 1%) and 95% coverage at a true +5% lift
   (target 95 +- 1.5%), for GMV per user, CTR and AOV at 1,000 and 10,000 users per arm, with and
   without CUPED and winsorization (the readout's default cap: the 99.5th percentile of the non-zero values, pooled);
2. the sequential test: A/A false positives over 14 daily looks (target <= 5%);
3. power at +5% next to the calculator's prediction (abtest/power.py, from the per-unit variances of
   a large pilot draw).

With winsorization the interval estimates the lift of the capped means: its "true lift" is the ratio
of the capped means averaged over the simulated experiments (Monte-Carlo noise well below the
interval widths).

Target = the bar each cell should meet; MC error = sqrt(p (1 - p) / sims).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from abtest import montecarlo as M  # noqa: E402
from abtest import stats  # noqa: E402
from abtest.config import BUILTIN_METRICS  # noqa: E402
from abtest.power import power_at  # noqa: E402


def pct(p: tuple[float, float]) -> str:
    return f"{p[0] * 100:5.2f} +- {p[1] * 100:4.2f}"


def pilot(seed: int = 99, n: int = 400_000, winsorize: bool = False) -> dict[str, tuple[float, float]]:
    """Control mean and per-unit sd of the linearised metric (delta method) from one large draw
    (winsorized at the readout's default percentile when asked)."""
    z = M.draw_units(np.random.default_rng(seed), 1, n)
    if winsorize:
        M.winsorize_pooled(z, z.copy())
    m = stats.Moments.from_array(M.COLUMNS, z[0])
    out = {}
    for name in M.METRICS:
        d = BUILTIN_METRICS[name]
        est = stats.metric_estimate(m, d.kind, d.columns)
        out[name] = (est.value, float(np.sqrt(est.variance * m.n)))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sims", type=int, default=2000)
    ap.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000])
    ap.add_argument("--per-day", type=int, nargs="+", default=[100, 500])
    args = ap.parse_args()
    t0 = time.perf_counter()
    print(f"# A/B readout validity, {args.sims} simulations per cell (load average {os.getloadavg()[0]:.2f})\n")
    fixed = {}
    for n in args.sizes:
        for wins in (False, True):
            for lift in (0.0, 0.05):
                started = time.perf_counter()
                fixed[(n, wins, lift)] = M.run_fixed(seed=1000 + n + 10 * wins + int(lift * 100), sims=args.sims, n=n, lift=lift, winsorize=wins)
                print(f"  ran n={n} winsorized={wins} lift={lift} in {time.perf_counter() - started:.0f}s", file=sys.stderr, flush=True)

    print("## Fixed horizon: A/A false-positive rate (target 5 +- 1%) and coverage at +5% (target 95 +- 1.5%)\n")
    print("| metric | users/arm | winsorized | CUPED | A/A FPR % | coverage % | true lift covered | power % |")
    print("|---|---|---|---|---|---|---|---|")
    for m in M.METRICS:
        for n in args.sizes:
            for wins in (False, True):
                if m == "ctr" and wins:
                    continue  # winsorization caps GMV only
                for cuped in (False, True):
                    aa, ab = fixed[(n, wins, 0.0)], fixed[(n, wins, 0.05)]
                    fpr = M.rate(M.rejections(aa.rows[m][cuped]))
                    cov = M.rate(M.covered(ab.rows[m][cuped], ab.true_lift[m]))
                    pw = M.rate(M.rejections(ab.rows[m][cuped]))
                    print(f"| {m} | {n:,} | {'yes' if wins else 'no'} | {'yes' if cuped else 'no'} | {pct(fpr)} | {pct(cov)} "
                          f"| {ab.true_lift[m] * 100:+.2f}% | {pct(pw)} |")

    print("\n## Power at +5% vs the calculator (no CUPED; the prediction uses a 400k-user pilot's per-unit sd)\n")
    print("| metric | users/arm | winsorized | predicted power % | simulated power % | within 2 MC errors |")
    print("|---|---|---|---|---|---|")
    for wins in (False, True):
        base = pilot(winsorize=wins)
        for m in M.METRICS:
            if m == "ctr" and wins:
                continue
            mean, sd = base[m]
            for n in args.sizes:
                run = fixed[(n, wins, 0.05)]
                pred = power_at(mean, sd, run.true_lift[m], n)
                sim = M.rate(M.rejections(run.rows[m][False]))
                print(f"| {m} | {n:,} | {'yes' if wins else 'no'} | {pred * 100:.2f} | {pct(sim)} "
                      f"| {'yes' if abs(pred - sim[0]) <= 2 * sim[1] else 'NO'} |")

    print("\n## Sequential (mSPRT on the absolute difference, GMV per user): A/A false positives with 14 daily looks (target <= 5%)\n")
    print("| users/arm/day | any look % | day-1 rejections % |")
    print("|---|---|---|")
    for per_day in args.per_day:
        p = M.run_sequential(seed=7000 + per_day, sims=args.sims, per_day=per_day)
        print(f"| {per_day} | {pct(M.rate(p[:, -1] < 0.05))} | {pct(M.rate(p[:, 0] < 0.05))} |")
    print(f"\nTotal {time.perf_counter() - t0:.0f}s, load average {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
