"""MELLM's scores (the composite benchmark's UF1 and UAR, per-AU F1 of the descriptions), the
verdict and the plots, from the fold predictions alone."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from jobs.base import Verdict
from jobs.faces.render import AUS
from jobs.mellm.describe import describe, parse_action_units


def uf1_uar(y: np.ndarray, pred: np.ndarray, classes: int) -> tuple[float, float]:
    """Unweighted F1 and unweighted average recall over the classes present (MEGC's metrics)."""
    f1s, recalls = [], []
    for k in range(classes):
        tp = int(((pred == k) & (y == k)).sum())
        fp, fn = int(((pred == k) & (y != k)).sum()), int(((pred != k) & (y == k)).sum())
        if tp + fn == 0:
            continue
        f1s.append(2 * tp / max(1, 2 * tp + fp + fn))
        recalls.append(tp / (tp + fn))
    return float(np.mean(f1s)), float(np.mean(recalls))


def au_f1(truth: np.ndarray, named: np.ndarray) -> dict[str, float]:
    """Per-AU F1 over the samples (AUs that never occur are left out)."""
    out = {}
    for j, au in enumerate(AUS):
        t, p = truth[:, j] > 0, named[:, j] > 0
        if t.any():
            tp = int((t & p).sum())
            out[au] = 2 * tp / max(1, 2 * tp + int((p & ~t).sum()) + int((t & ~p).sum()))
    return out


def score(outs: list[dict[str, Any]], y: np.ndarray, aus: np.ndarray, classes: list[str]) -> dict[str, Any]:
    """Pool one input kind's test folds; descriptions are written from the predicted units (> 0.5)
    and the emotion, then read back, so the AU F1 is that of the text."""
    index = np.concatenate([o["index"] for o in outs]).astype(int)
    pred = np.concatenate([o["pred"] for o in outs]).astype(int)
    prob = np.concatenate([np.asarray(o["au_prob"]).reshape(-1, len(AUS)) for o in outs])
    uf1, uar = uf1_uar(y[index], pred, len(classes))
    texts = [describe([AUS[j] for j in np.flatnonzero(p > 0.5)], classes[e]) for p, e in zip(prob, pred)]
    named = np.stack([parse_action_units(t) for t in texts])
    per_au = au_f1(aus[index], named)
    return {"uf1": uf1, "uar": uar, "au_f1": per_au, "au_f1_mean": float(np.mean(list(per_au.values()))),
            "n": int(len(index)), "example_descriptions": texts[:3]}


def score_texts(described: dict[str, Any], y: np.ndarray, aus: np.ndarray, classes: list[str]) -> dict[str, Any]:
    """Scores of free-text descriptions (a language model's): the emotion and units they name; a
    description naming no emotion counts as wrong."""
    from jobs.mellm.llm_describer import parse_emotion

    index = np.asarray(described["index"], dtype=int)
    pred = np.array([-1 if (e := parse_emotion(t, classes)) is None else e for t in described["texts"]])
    named = np.stack([parse_action_units(t) for t in described["texts"]])
    uf1, uar = uf1_uar(y[index], pred, len(classes))
    per_au = au_f1(aus[index], named)
    return {"uf1": uf1, "uar": uar, "au_f1": per_au, "au_f1_mean": float(np.mean(list(per_au.values()) or [0.0])),
            "n": int(len(index)), "no_emotion": int((pred < 0).sum())}


def table(results: dict) -> str:
    rows = ["| input | UF1 % | UAR % | mean AU F1 % | samples |", "|---|---|---|---|---|"]
    for kind, seeds in results["scores"].items():
        m = {k: np.mean([s[k] for s in seeds]) for k in ("uf1", "uar", "au_f1_mean")}
        rows.append(f"| {kind} | {100 * m['uf1']:.1f} | {100 * m['uar']:.1f} | {100 * m['au_f1_mean']:.1f} | {seeds[0]['n']} |")
    llm = results.get("llm")
    if llm:
        rows.append(f"| text backend on flow cues ({llm['model']}) | {100 * llm['uf1']:.1f} | {100 * llm['uar']:.1f} | "
                    f"{100 * llm['au_f1_mean']:.1f} | {llm['n']} |")
    aus = sorted({au for seeds in results["scores"].values() for au in seeds[0]["au_f1"]}, key=AUS.index)
    rows += ["", "| input | " + " | ".join(aus) + " |", "|---" * (len(aus) + 1) + "|"]
    for kind, seeds in results["scores"].items():
        rows.append(f"| {kind} | " + " | ".join(f"{100 * np.mean([s['au_f1'].get(a, 0) for s in seeds]):.0f}"
                                             for a in aus) + " |")
    if llm:
        rows.append("| text backend | " + " | ".join(f"{100 * llm['au_f1'].get(a, 0):.0f}" for a in aus) + " |")
        rows += ["", "Language-model descriptions (first three):", ""]
        rows += [f"- cues `{c}` -> {t.strip()!r}" for c, t in list(zip(llm["cues"], llm["texts"]))[:3]]
    return "\n".join(rows)


def verdict(results: dict, data_dir: str | None) -> Verdict:
    s = {k: (float(np.mean([x["uf1"] for x in v])), float(np.mean([x["uar"] for x in v])))
         for k, v in results["scores"].items()}
    if not {"apex", "flow", "fused"} <= set(s):
        return Verdict(None, "Not every input kind was run; nothing to compare.", table(results))
    beats = [s["fused"][i] > s[o][i] for o in ("apex", "flow") for i in (0, 1)]
    held = True if all(beats) else (False if not any(beats) else None)
    data = (f"the data set at {data_dir}" if not results.get("generated") else
            "generated micro-expressions (procedural faces, subtle 2-4 frame AU movements; not CASME II/SAMM/SMIC)")
    summary = (f"On {data}, subject-independent folds: UF1 / UAR of the fused colour map {s['fused'][0]:.1%} / "
               f"{s['fused'][1]:.1%}, flow alone {s['flow'][0]:.1%} / {s['flow'][1]:.1%}, apex frame alone "
               f"{s['apex'][0]:.1%} / {s['apex'][1]:.1%}. The fused map beat "
               + {True: "both on both metrics", False: "neither on either metric", None: "them on some metrics, not all"}[held]
               + ". The per-AU F1 of the CNN rows is of template descriptions written from its AU head.")
    if results.get("llm"):
        llm = results["llm"]
        summary += (f" The text backend ({llm['model']}), given per-region flow cues and {llm['n']} test samples, "
                    f"reached UF1 {llm['uf1']:.1%}, mean AU F1 {llm['au_f1_mean']:.1%} (in-context examples, "
                    "no fine-tuning; it is not part of the verdict).")
    return Verdict(held, summary, table(results))


def plot_scores(results: dict, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    kinds = list(results["scores"])
    fig, ax = plt.subplots(figsize=(6, 3.5))
    x = np.arange(len(kinds))
    for off, m in ((-0.27, "uf1"), (0, "uar"), (0.27, "au_f1_mean")):
        ax.bar(x + off, [100 * np.mean([s[m] for s in results["scores"][k]]) for k in kinds], 0.27, label=m)
    ax.set_xticks(x, kinds)
    ax.set_ylabel("%")
    ax.legend()
    ax.set_title("micro-expression recognition by input")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def plot_examples(examples: Path, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ex = np.load(examples)
    kinds = [k for k in ("apex", "flow", "fused") if f"x_{k}" in ex]
    rows = ["onset", *kinds]
    n = len(ex["onset"])
    fig, ax = plt.subplots(len(rows), n, figsize=(1.6 * n, 1.6 * len(rows)))
    for i, row in enumerate(rows):
        for j in range(n):
            img = ex["onset"][j] if row == "onset" else ex[f"x_{row}"][j].transpose(1, 2, 0)
            ax[i, j].imshow(img, cmap="gray" if row == "onset" else None, vmin=0, vmax=1)
            ax[i, j].set_xticks([])
            ax[i, j].set_yticks([])
        ax[i, 0].set_ylabel(row)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path
