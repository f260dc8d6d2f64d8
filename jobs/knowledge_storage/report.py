"""Verdict and phase-diagram plots of the knowledge-storage job, from results alone."""
from __future__ import annotations

import numpy as np

from jobs.base import Verdict

MLP, ATT = "attention+mlp", "attention-only"


def _cell(results: dict, arch: str, m: int) -> dict | None:
    return next((c for c in results["cells"] if c["arch"] == arch and c["multiplicity"] == m), None)


def ood(results: dict, arch: str, m: int, size: int, mode: str, schedule: str) -> float:
    c = _cell(results, arch, m)
    if c is None:
        return float("nan")
    return next((r["ood_acc"] for r in c["finetune"] if (r["size"], r["mode"], r["schedule"]) == (size, mode, schedule)),
                float("nan"))


def judge(cfg, results: dict) -> Verdict:
    ms, sizes = list(cfg.multiplicities), list(cfg.finetune_sizes)
    m_lo, m_hi, n_lo, n_hi = min(ms), max(ms), min(sizes), max(sizes)
    sched = cfg.schedules[0]
    checks = []
    top = _cell(results, MLP, m_hi)
    if top is not None:
        memorized = all(c["pretrain"]["train"]["value_loss"] < 0.05 for c in results["cells"] if c["arch"] == MLP)
        gap = top["pretrain"]["fresh"]["loss"] - top["pretrain"]["entropy_floor"]
        checks.append(("near-optimal pretraining loss (attention+MLP: fact tokens memorized at every multiplicity; "
                       f"fresh biographies within 0.1 nats of the generator entropy at m={m_hi})",
                       memorized and gap < 0.1, f"fresh loss - entropy floor = {gap:.3f} nats"))
    for mode in cfg.finetune_modes:
        for s in cfg.schedules:
            a = ood(results, MLP, m_hi, n_hi, mode, s)
            checks.append((f"extraction: OOD accuracy >= {cfg.high_acc} at m={m_hi}, {n_hi} fine-tuned individuals "
                           f"({mode}, {s})", a >= cfg.high_acc, f"{a:.2f}"))
    if len(ms) > 1 and len(sizes) > 1:
        a1, a2 = ood(results, MLP, m_lo, n_hi, "full", sched), ood(results, MLP, m_hi, n_lo, "full", sched)
        checks.append((f"hallucination otherwise: OOD accuracy < {cfg.low_acc} at m={m_lo} (size {n_hi}) and at "
                       f"size {n_lo} (m={m_hi})", a1 < cfg.low_acc and a2 < cfg.low_acc, f"{a1:.2f} and {a2:.2f}"))
    elif len(ms) > 1:
        a1 = ood(results, MLP, m_lo, n_hi, "full", sched)
        checks.append((f"hallucination at low multiplicity: OOD accuracy < {cfg.low_acc} at m={m_lo}",
                       a1 < cfg.low_acc, f"{a1:.2f}"))
    if ATT in cfg.architectures:
        a = ood(results, ATT, m_hi, n_hi, "full", sched)
        checks.append((f"attention-only fails: OOD accuracy < {cfg.low_acc} at m={m_hi}, size {n_hi}",
                       a < cfg.low_acc, f"{a:.2f} (attention+MLP {ood(results, MLP, m_hi, n_hi, 'full', sched):.2f})"))
    verdicts = [c[1] for c in checks]
    held = True if all(verdicts) else (False if not any(verdicts) else None)
    lines = ["| check | held | measured |", "|---|---|---|"]
    lines += [f"| {n} | {'yes' if v else 'no'} | {m} |" for n, v, m in checks]
    lines += ["", f"OOD QA accuracy (chance {1 / cfg.n_values:.3f}), schedule {sched}:", "",
              "| architecture | fine-tuning | multiplicity | " + " | ".join(f"{n} ind." for n in sizes) + " |",
              "|---|---|---|" + "---|" * len(sizes)]
    for arch in cfg.architectures:
        for mode in cfg.finetune_modes:
            for m in ms:
                lines.append(f"| {arch} | {mode} | {m} | " +
                             " | ".join(f"{ood(results, arch, m, n, mode, sched):.2f}" for n in sizes) + " |")
    lines += ["", "| architecture | multiplicity | train loss | train fact-token loss | fresh-biography loss | "
              "entropy floor | fresh fact accuracy |", "|---|---|---|---|---|---|---|"]
    for c in results["cells"]:
        p = c["pretrain"]
        lines.append(f"| {c['arch']} | {c['multiplicity']} | {p['train']['loss']:.3f} | {p['train']['value_loss']:.3f} | "
                     f"{p['fresh']['loss']:.3f} | {p['entropy_floor']:.3f} | {p['fresh']['value_acc']:.2f} |")
    summary = (f"{cfg.n_individuals} synthetic individuals x {cfg.n_relations} relations over {cfg.n_values} shared "
               f"values; {len(results['cells'])} pretrained one-layer models. " +
               "; ".join(f"{n}: {'yes' if v else 'no'} ({m})" for n, v, m in checks) + ".")
    return Verdict(held, summary, "\n".join(lines))


def draw_plots(cfg, results: dict, ctx) -> list:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ms, sizes = list(cfg.multiplicities), list(cfg.finetune_sizes)
    panels = [(a, mode, s) for a in cfg.architectures for mode in cfg.finetune_modes for s in cfg.schedules]
    cols = len(cfg.finetune_modes) * len(cfg.schedules)
    rows = len(cfg.architectures)
    fig, axes = plt.subplots(rows, cols, figsize=(3.6 * cols, 3.6 * rows), squeeze=False, layout="constrained")
    for ax, (arch, mode, s) in zip(axes.flat, panels):
        grid = np.array([[ood(results, arch, m, n, mode, s) for n in sizes] for m in ms])
        im = ax.imshow(grid, origin="lower", vmin=0, vmax=1, cmap="viridis", aspect="auto")
        for i in range(len(ms)):
            for j in range(len(sizes)):
                ax.text(j, i, f"{grid[i, j]:.2f}", ha="center", va="center",
                        color="white" if grid[i, j] < 0.6 else "black", fontsize=8)
        ax.set_xticks(range(len(sizes)), [str(n) for n in sizes])
        ax.set_yticks(range(len(ms)), [str(m) for m in ms])
        ax.set_xlabel("fine-tuned individuals")
        ax.set_ylabel("multiplicity")
        ax.set_title(f"{arch}\n{mode} FT, {s} LR", fontsize=9)
    fig.colorbar(im, ax=axes, shrink=0.8, label="OOD QA accuracy")
    p = ctx.plot_path("phase_diagram")
    fig.savefig(p, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return [p]
