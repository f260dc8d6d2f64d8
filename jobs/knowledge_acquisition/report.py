"""Verdict and plots of the knowledge-acquisition job, from results alone."""
from __future__ import annotations

import math

import numpy as np

from jobs.base import Verdict

KIND_NAMES = {"mem": "memorization", "gen": "semantic", "hard_gen": "composition"}


def _f(x, digits=3) -> str:
    return "n/a" if x is None or not isinstance(x, (int, float)) or not math.isfinite(x) else f"{x:.{digits}f}"


def _groups(run: dict, regimes, kinds):
    return [run["groups"][f"{r}/{k}"] for r in regimes for k in kinds if f"{r}/{k}" in run["groups"]]


def _decay(run: dict, regime: str, kind: str) -> float:
    return run["groups"][f"{regime}/{kind}"]["fit"].get("decay_constant", float("nan"))


def judge(cfg, results: dict) -> Verdict:
    base, large, less = results["runs"]
    kinds = list(KIND_NAMES)
    checks = []
    effs = [g["effectivity_mean"] for g in _groups(base, ("paraphrase", "duplicate", "once"), kinds)]
    checks.append(("log-prob rises after injection (effectivity > 0, all 9 groups)",
                   all(e > 0 for e in effs), f"min effectivity {_f(min(effs))}"))
    fits = [g["fit"] for r in (base, large, less) for g in _groups(r, ("paraphrase", "duplicate", "once"), kinds)]
    # only curves that forget (a > 0) can tell the two decay laws apart
    pl = [f for f in fits if f.get("decay_constant", 0) > 0 and math.isfinite(f.get("power_r2", float("nan")))
          and math.isfinite(f.get("exp_r2", float("nan")))]
    wins = sum(f["power_r2"] > f["exp_r2"] for f in pl)
    checks.append(("forgetting follows a power law (power-law R^2 above exponential, curves with a > 0)",
                   wins > len(pl) / 2 if pl else None, f"{wins}/{len(pl)} curves"))
    dup_faster = [_decay(base, "duplicate", k) > _decay(base, "paraphrase", k) for k in kinds
                  if math.isfinite(_decay(base, "duplicate", k)) and math.isfinite(_decay(base, "paraphrase", k))]
    checks.append(("duplicates are forgotten faster than paraphrases (decay constant)",
                   sum(dup_faster) > len(dup_faster) / 2 if dup_faster else None,
                   f"{sum(dup_faster)}/{len(dup_faster)} probe kinds"))
    slower = [_decay(large, r, k) < _decay(base, r, k) for r in ("paraphrase", "duplicate") for k in kinds
              if math.isfinite(_decay(large, r, k)) and math.isfinite(_decay(base, r, k))]
    checks.append((f"larger batch ({large['batch_size']}) forgets more slowly than {base['batch_size']}",
                   sum(slower) > len(slower) / 2 if slower else None, f"{sum(slower)}/{len(slower)} groups"))
    e_more = float(np.mean(effs))
    e_less = float(np.mean([g["effectivity_mean"] for g in _groups(less, ("paraphrase", "duplicate", "once"), kinds)]))
    checks.append((f"more pretraining ({base['pretrain_steps']} vs {less['pretrain_steps']} steps) does not raise "
                   "effectivity (not >10% higher)", e_more <= 1.1 * e_less,
                   f"effectivity {_f(e_more)} vs {_f(e_less)}"))
    verdicts = [c[1] for c in checks]
    held = True if all(v is True for v in verdicts) else (False if not any(v is True for v in verdicts) else None)
    table = ["| check | held | measured |", "|---|---|---|"]
    table += [f"| {name} | {'yes' if v else ('n/a' if v is None else 'no')} | {m} |" for name, v, m in checks]
    table += ["", "| run | regime | effectivity mem / sem / comp | decay constant a (R = b - a ln t) mem / sem / comp "
              "| R^2 power vs exp (mem) |", "|---|---|---|---|---|"]
    for run in (base, large, less):
        for r in ("paraphrase", "duplicate", "once"):
            g = [run["groups"][f"{r}/{k}"] for k in kinds]
            table.append(f"| {run['label']} | {r} | {' / '.join(_f(x['effectivity_mean']) for x in g)} | "
                         f"{' / '.join(_f(x['fit'].get('decay_constant')) for x in g)} | "
                         f"{_f(g[0]['fit'].get('power_r2'), 2)} vs {_f(g[0]['fit'].get('exp_r2'), 2)} |")
    held_names = [n for n, v, _ in checks if v]
    summary = (f"Pretrained a {results['pretrain']['parameters']}-parameter GPT on {results['pretrain']['corpus_tokens']} "
               f"background tokens, then injected {cfg.docs_per_regime} fictional documents per regime. "
               f"{len(held_names)} of {len(checks)} checks held: " + "; ".join(
                   f"{n}: {'yes' if v else 'no' if v is False else 'n/a'} ({m})" for n, v, m in checks) + ".")
    return Verdict(held, summary, "\n".join(table))


def draw_plots(cfg, results: dict, ctx) -> list:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    base = results["runs"][0]
    traj = results["trajectories"][base["label"]]
    colors = {"paraphrase": "tab:blue", "duplicate": "tab:red", "once": "tab:green", "control": "tab:gray"}
    adjust = getattr(cfg, "subtract_control_drift", False)
    fig, axes = plt.subplots(1, 3, figsize=(15, 4), sharey=True)
    for ax, kind in zip(axes, KIND_NAMES):
        c_steps, c_vals = traj.get(f"control/{kind}", ([], []))
        for regime, color in colors.items():
            steps, vals = traj.get(f"{regime}/{kind}", ([], []))
            if adjust and c_steps and steps:
                vals = list(np.asarray(vals) - np.interp(steps, c_steps, c_vals))
            ax.plot(steps, vals, color=color, label=regime, lw=1)
        ax.set_title(f"{KIND_NAMES[kind]} probes ({base['label']})")
        ax.set_xlabel("step of the injection run")
    axes[0].set_ylabel("mean change of target log-prob since step 0" + (",\nminus the control documents' drift" if adjust else ""))
    axes[0].legend()
    fig.tight_layout()
    p1 = ctx.plot_path("logprob_trajectories")
    fig.savefig(p1, dpi=110)
    plt.close(fig)

    fig, axes = plt.subplots(1, 3, figsize=(15, 4), sharey=True)
    styles = {0: "-", 1: "--", 2: ":"}
    for ax, kind in zip(axes, KIND_NAMES):
        for i, run in enumerate(results["runs"]):
            for regime in ("paraphrase", "duplicate", "once"):
                g = run["groups"][f"{regime}/{kind}"]
                ax.plot(g["offsets"], g["retention"], styles[i], color=colors[regime],
                        label=f"{regime}, {run['label']}", lw=1)
        ax.set_xscale("log")
        ax.set_title(f"retainability, {KIND_NAMES[kind]} probes")
        ax.set_xlabel("steps after the last local acquisition maximum")
    axes[0].set_ylabel("share of the acquired gain retained")
    axes[0].legend(fontsize=6)
    fig.tight_layout()
    p2 = ctx.plot_path("retainability")
    fig.savefig(p2, dpi=110)
    plt.close(fig)
    return [p1, p2]
