"""Team-draft interleaving vs A/B testing: users needed to tell two rankers apart, on the SIMULATOR.

    .venv/bin/python benchmarks/abtest_interleaving.py [--users 20000] [--requests 0] [--noise-a 0.8 --noise-b 1.0]

Two rankers order the same candidates by the simulator's true click logit plus Gaussian noise
(ranker A less noisy = better). Every simulated user makes as many requests as its simulated activity gives over 14 days
(heavy-tailed; or a fixed ``--requests``); for each
request the benchmark draws clicks (the simulator's position-based ground-truth click model)
three ways on the same candidates: the list of ranker A, the list of ranker B (the two arms of
an A/B test, observed counterfactually for every user) and their team-draft interleaving.

* A/B: clicks per user (mean metric) and CTR (ratio metric, delta method); units per arm for 80%
  power at alpha = 0.05 (two-sided) ``n = (z_.975 + z_.8)^2 (var_A + var_B) / delta^2``; total users = 2 n.
* Interleaving: per user, credited clicks A - credited clicks B; ``n = (z_.975 + z_.8)^2 var(d) / mean(d)^2``.

The formula sizes are then checked empirically: ``--trials`` experiments of that many users drawn
from the simulated pool (A/B: disjoint users per arm, Welch test; interleaving: t-test and sign test).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402
from scipy import stats as sps  # noqa: E402


def simulate(users: int, requests: int, noise_a: float, noise_b: float, candidates: int, k: int, seed: int):
    from abtest.config import load_config
    from abtest.interleaving import credit, team_draft
    from abtest.routing import DEFAULT_CONFIG
    from abtest.simulator import MarketplaceSimulator, SimulationConfig

    features = ROOT / "data" / "features"
    sim = MarketplaceSimulator(SimulationConfig(experiment="dlf_vs_dmoe", n_units=users, seed=seed,
                                                features_dir=features if features.exists() else None), load_config(DEFAULT_CONFIG))
    rng = np.random.default_rng(seed + 1)
    n_items = sim.pop.item_ids.len()
    clicks_a = np.zeros(users)
    clicks_b = np.zeros(users)
    credit_a = np.zeros(users)
    credit_b = np.zeros(users)
    pos = np.arange(k)
    # requests per user: the simulator's heavy-tailed activity over 14 days (``requests`` = 0), or a fixed number
    n_req = rng.poisson(sim.pop.activity * 14) if requests == 0 else np.full(users, requests)
    for u in range(users):
        for _ in range(int(n_req[u])):
            cand = rng.choice(n_items, size=candidates, replace=False, p=sim.pop.item_pop)
            logit = sim.attractiveness_logit(np.full(candidates, u), cand)
            ra = cand[np.argsort(-(logit + noise_a * rng.standard_normal(candidates)))]
            rb = cand[np.argsort(-(logit + noise_b * rng.standard_normal(candidates)))]
            uu = np.full(k, u)
            clicks_a[u] += np.sum(rng.random(k) < sim.click_probability(uu, ra[:k], pos))
            clicks_b[u] += np.sum(rng.random(k) < sim.click_probability(uu, rb[:k], pos))
            items, teams = team_draft(list(ra), list(rb), k, rng)
            shown = np.asarray(items)
            cl = rng.random(shown.size) < sim.click_probability(np.full(shown.size, u), shown, np.arange(shown.size))
            x, y = credit(teams, cl)
            credit_a[u] += x
            credit_b[u] += y
    return clicks_a, clicks_b, credit_a, credit_b, n_req * k


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--users", type=int, default=20000)
    ap.add_argument("--requests", type=int, default=0, help="requests per user (0: the simulator's activity over 14 days, heavy-tailed)")
    ap.add_argument("--noise-a", type=float, default=0.8, help="ranker A: sd of the noise on the true logit (better)")
    ap.add_argument("--noise-b", type=float, default=1.0, help="ranker B")
    ap.add_argument("--candidates", type=int, default=50)
    ap.add_argument("--k", type=int, default=10, help="items shown per request")
    ap.add_argument("--trials", type=int, default=400)
    ap.add_argument("--seed", type=int, default=2026)
    args = ap.parse_args()

    t = time.perf_counter()
    ca, cb, ia, ib, imps = simulate(args.users, args.requests, args.noise_a, args.noise_b, args.candidates, args.k, args.seed)
    active = imps > 0  # users with at least one request are the exposed units
    ca, cb, ia, ib, imps = ca[active], cb[active], ia[active], ib[active], imps[active].astype(float)
    users = int(active.sum())
    sim_s = time.perf_counter() - t
    z2 = (sps.norm.ppf(0.975) + sps.norm.ppf(0.8)) ** 2
    delta_ab = ca.mean() - cb.mean()
    n_ab = z2 * (ca.var(ddof=1) + cb.var(ddof=1)) / delta_ab**2  # per arm
    # CTR as a ratio metric (delta method): per-unit variance of the linearisation (clicks - r imps) / mean(imps)
    r_a, r_b = ca.sum() / imps.sum(), cb.sum() / imps.sum()
    lin_var = lambda c, r: np.var(c - r * imps, ddof=1) / imps.mean() ** 2  # noqa: E731
    n_ctr = z2 * (lin_var(ca, r_a) + lin_var(cb, r_b)) / (r_a - r_b) ** 2
    d = ia - ib
    n_il = z2 * d.var(ddof=1) / d.mean() ** 2

    rng = np.random.default_rng(args.seed + 7)
    half = users // 2

    def power_ab(n: int, ctr: bool = False) -> float:
        from abtest import stats as S

        hits = 0
        for _ in range(args.trials):
            perm = rng.permutation(users)
            a, b = rng.choice(perm[:half], n), rng.choice(perm[half:], n)
            if not ctr:
                hits += sps.ttest_ind(ca[a], cb[b], equal_var=False).pvalue < 0.05
                continue
            arms = []
            for clicks, idx in ((ca, a), (cb, b)):
                m = S.Moments.from_array(["c", "i"], np.column_stack([clicks[idx], imps[idx]]))
                arms.append(S.metric_estimate(m, "ratio", ["c", "i"]))
            hits += S.welch_t_test(arms[0], arms[1]).p_value < 0.05
        return hits / args.trials

    def power_il(n: int) -> tuple[float, float]:
        t_hits = s_hits = 0
        for _ in range(args.trials):
            x = d[rng.choice(users, n)]
            t_hits += sps.ttest_1samp(x, 0.0).pvalue < 0.05
            pa, pb = int(np.sum(x > 0)), int(np.sum(x < 0))
            s_hits += (sps.binomtest(pa, pa + pb, 0.5).pvalue if pa + pb else 1.0) < 0.05
        return t_hits / args.trials, s_hits / args.trials

    n_ab_i, n_ctr_i, n_il_i = int(np.ceil(n_ab)), int(np.ceil(n_ctr)), int(np.ceil(n_il))
    p_ab = power_ab(n_ab_i) if n_ab_i <= half else float("nan")
    p_ctr = power_ab(n_ctr_i, ctr=True) if n_ctr_i <= half else float("nan")
    p_il_t, p_il_s = power_il(n_il_i)
    reqs = "activity-driven (Poisson, heavy-tailed)" if args.requests == 0 else str(args.requests)
    print(f"SIMULATED: {users:,} active users, requests per user {reqs} (mean {imps.mean() / args.k:.1f}), {args.candidates} candidates, "
          f"top {args.k}; ranker A noise {args.noise_a}, ranker B noise {args.noise_b}; simulated in {sim_s:.1f}s\n")
    na = lambda p: f"{p:.2f}" if np.isfinite(p) else f"n/a (> pool {half:,}/arm)"  # noqa: E731
    rows = [
        ("A/B, clicks per user", f"{delta_ab:+.4f} ({delta_ab / cb.mean():+.2%})", f"{2 * n_ab_i:,}", na(p_ab), "1.0x"),
        ("A/B, CTR (delta method)", f"{r_a - r_b:+.5f} ({r_a / r_b - 1:+.2%})", f"{2 * n_ctr_i:,}", na(p_ctr), f"{n_ab / n_ctr:.1f}x fewer"),
        ("team-draft interleaving", f"{d.mean():+.4f} credit/user", f"{n_il_i:,}", f"{p_il_t:.2f} (t) / {p_il_s:.2f} (sign)",
         f"{2 * n_ab / n_il:.1f}x fewer ({2 * n_ctr / n_il:.1f}x vs CTR)"),
    ]
    header = ("method", "effect", "users for 80% power", "empirical power", "users vs A/B clicks/user")
    widths = [24, 26, 20, 26, 30]
    print("  ".join(h.ljust(w) for h, w in zip(header, widths)))
    print("  ".join("-" * w for w in widths))
    for r in rows:
        print("  ".join(str(c).ljust(w) for c, w in zip(r, widths)))
    print(f"\n(users: both arms together for A/B; empirical power from {args.trials} experiments of that size resampled "
          f"from the simulated pool: A/B with disjoint users per arm, Welch; interleaving t-test and sign test.)")


if __name__ == "__main__":
    main()
