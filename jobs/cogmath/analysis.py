"""CogMath's measures from judged records: plain accuracy, mastery (the original right and every
inquiry passed), the overestimation (accuracy − mastery, relative to accuracy), and pass rates per
dimension and stage with Wilson intervals."""

from __future__ import annotations

from typing import Any

from jobs.cogmath.dimensions import DIMENSIONS
from jobs.reasoning.stats import proportion


def summarize_model(evaluation: dict[str, Any]) -> dict[str, Any]:
    probs = evaluation["problems"]
    n = len(probs)
    correct = sum(p["original_correct"] for p in probs)
    mastered = sum(p["original_correct"] and all(d["passed"] for d in p["dimensions"].values()) for p in probs)
    acc = correct / n if n else float("nan")
    mastery = mastered / n if n else float("nan")
    dims: dict[str, Any] = {}
    for d in DIMENSIONS:
        passes = [p["dimensions"][str(d.number)]["passed"] for p in probs if str(d.number) in p["dimensions"]]
        if passes:
            dims[str(d.number)] = {"key": d.key, "stage": d.stage, **proportion(sum(map(bool, passes)), len(passes))}
    stages: dict[str, Any] = {}
    for stage in ("comprehension", "solving", "summarisation"):
        passes = [v for p in probs for k, v in p["dimensions"].items()
                  if next(d.stage for d in DIMENSIONS if str(d.number) == k) == stage]
        if passes:
            stages[stage] = proportion(sum(bool(v["passed"]) for v in passes), len(passes))
    judged = [d["judge"] for p in probs for d in p["dimensions"].values()]
    return {"model": evaluation["model"], "problems": n, "accuracy": proportion(correct, n),
            "mastery": proportion(mastered, n),
            "overestimation": (acc - mastery) / acc if acc else float("nan"),
            "dimensions": dims, "stages": stages,
            "judged_by_rule": judged.count("rule"), "judged_by_llm": judged.count("llm")}


def _pct(p: dict[str, Any]) -> str:
    return f"{p['rate']:.0%} [{p['low']:.0%}, {p['high']:.0%}] (n={p['n']})"


def markdown_tables(summaries: list[dict[str, Any]], agreement: dict[str, Any]) -> str:
    rows = ["| model | problems | accuracy | mastery | overestimation (acc−mastery)/acc |", "|---|---|---|---|---|"]
    for s in summaries:
        rows.append(f"| {s['model']} | {s['problems']} | {_pct(s['accuracy'])} | {_pct(s['mastery'])} "
                    f"| {s['overestimation']:.0%} |")
    rows += ["", "| dimension | stage | " + " | ".join(s["model"] for s in summaries) + " |",
             "|---|---|" + "---|" * len(summaries)]
    for d in DIMENSIONS:
        cells = [_pct(s["dimensions"][str(d.number)]) if str(d.number) in s["dimensions"] else "–" for s in summaries]
        rows.append(f"| {d.number} {d.key} | {d.stage} | " + " | ".join(cells) + " |")
    rows += ["", "| judge vs hand labels | n | agreement | Cohen's κ |", "|---|---|---|---|"]
    for name, a in agreement.items():
        rows.append(f"| {name}{' (' + a['model'] + ')' if 'model' in a else ''} | {a['n']} | {a['agreement']:.0%} "
                    f"| {a['kappa']:.2f} |")
    return "\n".join(rows) + "\n\nPass rates with 95% Wilson intervals."
