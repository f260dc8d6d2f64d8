"""The verdict of a readout, one line per primary metric and variant, in words a product manager reads.

ship          the primary metric improved significantly and every guardrail is shown non-inferior;
don't ship    the primary metric regressed, a guardrail shows harm, or the experiment already had the
              users to detect the target effect and found none;
keep running  no decision yet: the minimum sample is not reached, the effect is inconclusive with too
              few users for the target effect (the line says how many more per arm), or a guardrail is
              not yet shown non-inferior;
invalid       the sample ratio check failed: assignment or logging is broken, nothing can be read;
no verdict    the metric cannot be computed (the reason is given).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from abtest.comparison import Comparison


@dataclass(frozen=True)
class Verdict:
    metric: str
    variant: str
    verdict: str
    headline: str
    rel_lift: float
    rel_ci: tuple[float, float]
    mde: float
    users_more_per_arm: int


def _pct(x: float) -> str:
    return "n/a" if not math.isfinite(x) else f"{x * 100:+.1f}%"


def _effect(c: Comparison) -> str:
    if not math.isfinite(c.rel_lift):
        return f"absolute change {c.abs_lift:+.4g}" if math.isfinite(c.abs_lift) else "no estimate"
    lo, hi = c.rel_ci
    hi_s = "+inf" if not math.isfinite(hi) else _pct(hi)
    return f"{_pct(c.rel_lift)} (95% CI {_pct(lo)} to {hi_s})"


def _mde(c: Comparison) -> str:
    return f"detectable now: \u00b1{c.mde * 100:.1f}%" if math.isfinite(c.mde) else "detectable effect unknown"


def verdict_for(c: Comparison, guardrails: list[Comparison], valid: bool, target_lift: float) -> Verdict:
    """The verdict of one primary comparison given the same variant's guardrail comparisons."""
    name = f"{c.label} ({c.variant} vs {c.control})"

    def out(v: str, text: str) -> Verdict:
        return Verdict(c.metric, c.variant, v, text, c.rel_lift, c.rel_ci, c.mde, c.users_more_per_arm)

    if not valid:
        return out("invalid", f"INVALID: the split of users does not match the configured weights; fix assignment/logging before reading {name}.")
    if c.status == "not computable":
        return out("no verdict", f"No verdict on {name}: {'; '.join(c.reasons) or 'not computable'}.")
    harmed = [g for g in guardrails if g.decision == "harm"]
    pending = [g for g in guardrails if g.decision != "non-inferior"]
    more = c.users_more_per_arm
    needs = f"needs about {more:,} more users per arm to detect \u00b1{target_lift:.0%}" if more else ""
    if harmed:
        names = ", ".join(f"{g.label} {_pct(g.rel_lift)}" for g in harmed)
        return out("don't ship", f"DON'T SHIP {c.variant}: guardrail harmed ({names}); {name} {_effect(c)}.")
    if c.status == "not enough data":
        return out("keep running", f"KEEP RUNNING: {name} {_effect(c)}; not enough data yet"
                                   f"{' (' + needs + ')' if needs else ''}; {_mde(c)}.")
    if c.decision == "significant regression":
        return out("don't ship", f"DON'T SHIP {c.variant}: {name} got worse, {_effect(c)}.")
    if c.decision == "significant improvement":
        if pending:
            names = ", ".join(g.label for g in pending)
            return out("keep running", f"KEEP RUNNING: {name} improved {_effect(c)}, but guardrail(s) {names} "
                                       "are not yet shown non-inferior.")
        return out("ship", f"SHIP {c.variant}: {name} improved, {_effect(c)}.")
    if more:
        return out("keep running", f"KEEP RUNNING: {name} {_effect(c)}, inconclusive; {needs} ({_mde(c)}).")
    return out("don't ship", f"DON'T SHIP {c.variant} for {name}: no effect found although the sample could detect "
                             f"\u00b1{target_lift:.0%} ({_effect(c)}; {_mde(c)}).")


def verdicts(comparisons: list[Comparison], primary: str | None, valid: bool, target_lift: float) -> list[Verdict]:
    primary_rows = [c for c in comparisons if c.role == "metric" and c.metric == primary]
    return [
        verdict_for(c, [g for g in comparisons if g.role == "guardrail" and g.variant == c.variant], valid, target_lift)
        for c in primary_rows
    ]


__all__ = ["Verdict", "verdict_for", "verdicts"]
