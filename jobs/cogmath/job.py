"""CogMath (Liu et al., 2025): a problem counts as mastered only when the model answers it and
passes all nine inquiries over comprehension, solving and summarisation; accuracy overestimates
mastery. Each evaluated model is a text backend spec ("local", "openai:<url>#<model>")."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from jobs.base import Job, JobContext, Verdict, register


@dataclass
class CogMathConfig:
    models: list[str] = field(default_factory=lambda: ["local"])
    """Text backend specs of the evaluated models (local default, or openai:<base_url>#<model>)."""
    judge_model: str | None = None
    """The LLM judge for answers the rules cannot decide (the paper: GPT-4); None: the first model."""
    inquiries: str = "published+templated"
    """published (the paper's example inquiries), templated (rule-built), generated (the templated
    problems' originals with inquiries written by the Inquiry/Judge/Reference agents), or a '+' mix."""
    inquiry_model: str | None = None
    """Backend of the agents that write inquiries (generated); None: judge_model, else the first model."""
    inquiry_rounds: int = 3
    """Inquiry agent attempts per dimension until the Judge agent accepts."""
    templated_problems: int = 12
    dimensions: list[int] = field(default_factory=lambda: list(range(1, 10)))
    max_tokens: int = 256
    judge_mode: Literal["rule+llm", "llm"] = "rule+llm"
    """rule+llm: rules where they decide (numeric answers, refusals), the LLM judge otherwise; llm: LLM only."""
    check_llm_judge: bool = True
    """Also measure the LLM judge's agreement with the hand labels (the rule judge's is always measured)."""


def evaluate_cell(cell: dict[str, Any]) -> dict[str, Any]:
    """One evaluated model (a sweep cell: one pod per model on a cluster)."""
    from jobs.backends.text import text_backend
    from jobs.cogmath.evaluate import evaluate_model
    from jobs.cogmath.problems import load_problems

    problems = load_problems(cell["inquiries"], cell["templated_problems"], cell["seed"])
    for p in problems:
        p.inquiries = [i for i in p.inquiries if i.dimension in cell["dimensions"]]
        if p.source == "generated":
            from jobs.cogmath.agents import generate_inquiries

            p.inquiries, _ = generate_inquiries(text_backend(cell["inquiry_model"]), p, cell["dimensions"],
                                                max_rounds=cell["inquiry_rounds"], max_tokens=cell["max_tokens"])
    return evaluate_model(text_backend(cell["model"]), text_backend(cell["judge_model"]), problems,
                          max_tokens=cell["max_tokens"], judge_mode=cell["judge_mode"])


@register
class CogMathJob(Job):
    name = "cogmath"
    title = "Cognitive Evaluation of LLMs' Mathematical Abilities via Inquiry (CogMath, Liu et al., 2025)"
    claim = ("Accuracy overestimates mathematical ability: counting a problem as mastered only when the model also "
             "passes nine inquiries on comprehending, solving and summarising it (mastery) gives a much lower rate "
             "than plain accuracy, for every model evaluated.")
    Config = CogMathConfig
    presets = {
        "tiny": {"inquiries": "templated", "templated_problems": 1, "dimensions": [1, 3, 9], "max_tokens": 48,
                 "check_llm_judge": False},
        # bounded for a shared 2-core CPU (~10 tokens/s): the 3 published problems and 5 templated ones
        "full": {"templated_problems": 5, "max_tokens": 160},
    }

    def run(self, cfg: CogMathConfig, ctx: JobContext) -> dict:
        from jobs.cogmath.analysis import summarize_model
        from jobs.cogmath.evaluate import judge_agreement

        if cfg.judge_mode not in ("rule+llm", "llm"):
            raise ValueError(f"judge_mode must be rule+llm or llm, got {cfg.judge_mode!r}")
        if not cfg.models:
            raise ValueError("name at least one model to evaluate (models)")
        ctx.log(f"{cfg.inquiries} problems, dimensions {cfg.dimensions}, {len(cfg.models)} model(s)")
        cells = [{"model": spec, "judge_model": cfg.judge_model or cfg.models[0], "inquiries": cfg.inquiries,
                  "templated_problems": cfg.templated_problems, "dimensions": cfg.dimensions,
                  "max_tokens": cfg.max_tokens, "judge_mode": cfg.judge_mode, "seed": ctx.seed,
                  "inquiry_model": cfg.inquiry_model or cfg.judge_model or cfg.models[0],
                  "inquiry_rounds": cfg.inquiry_rounds} for spec in cfg.models]
        evaluations = ctx.map(evaluate_cell, cells, desc="cogmath models")
        summaries = [summarize_model(ev) for ev in evaluations]
        for s in summaries:
            ctx.metric("accuracy", s["accuracy"]["rate"], model=s["model"])
            ctx.metric("mastery", s["mastery"]["rate"], model=s["model"])
        judge = None
        if cfg.check_llm_judge:
            from jobs.backends.text import text_backend

            judge = text_backend(cfg.judge_model or cfg.models[0])
        return {"evaluations": evaluations, "summaries": summaries, "judge_agreement": judge_agreement(judge)}

    def verdict(self, cfg: CogMathConfig, results: dict[str, Any]) -> Verdict:
        from jobs.cogmath.analysis import markdown_tables

        summaries = results["summaries"]
        table = markdown_tables(summaries, results["judge_agreement"])
        parts = [f"{s['model']}: accuracy {s['accuracy']['rate']:.0%}, mastery {s['mastery']['rate']:.0%}"
                 for s in summaries]
        scored = [s for s in summaries if s["accuracy"]["k"] > 0]
        if not scored:
            return Verdict(None, "No evaluated model answered any original problem right, so there is no accuracy "
                                 "for mastery to fall short of: " + "; ".join(parts) + ".", table)
        lower = [s["mastery"]["rate"] < s["accuracy"]["rate"] for s in scored]
        held = True if all(lower) else (False if not any(lower) else None)
        return Verdict(held, "; ".join(parts) + ". " + {
            True: "Mastery was below accuracy for every model that answered anything: accuracy overestimates it.",
            False: "Mastery equalled accuracy: the inquiries found no overestimation.",
            None: "Mastery was below accuracy for some models only."}[held]
            + f" Problems: {cfg.inquiries} ({summaries[0]['problems']}); answers judged by rule "
            f"({summaries[0]['judged_by_rule']}) or by the LLM judge ({summaries[0]['judged_by_llm']}).", table)
