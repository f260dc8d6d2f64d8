"""The MemGAS job's loop: build each conversation's memory, rank sessions for every question with
every method, score the rankings against the gold evidence sessions, answer a sample of questions
with the backend model, and judge the claim."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from jobs.backends.scoring import best_f1, exact_match, mean, ndcg_at_k, recall_at_k
from jobs.base import JobContext, Verdict
from jobs.memgas.job import GRANULARITIES, MemGASConfig, build_units, rank_sessions

RETRIEVAL_METHODS = ("bm25",) + tuple(f"dense:{g}" for g in GRANULARITIES) + (
    "multi:uniform", "multi:router", "memgas:no-assoc", "memgas")
QA_METHODS = ("bm25", "dense:session", "memgas", "memgas+filter")
ANSWER_SYSTEM = "You answer questions about a conversation from the given excerpts. Answer in a few words."


def _qa_pick(total: int, wanted: int, rng: np.random.Generator) -> set[int]:
    return set(rng.choice(total, size=min(wanted, total), replace=False).tolist()) if wanted else set()


def _filter(backend, question: str, candidates: list[int], summaries: list[str], keep: int) -> list[int]:
    """The paper's LLM filtering as a test per memory: keep candidates the model finds more likely
    relevant than not (log p("Yes") > log p("No")), at most ``keep``; none kept -> the top one."""
    prompts = [f"Memory: {summaries[c]}\nQuestion: {question}\nIs this memory useful to answer the question? "
               "Answer Yes or No." for c in candidates]
    yes = backend.logprobs(prompts, ["Yes"] * len(prompts))
    no = backend.logprobs(prompts, ["No"] * len(prompts))
    kept = [c for c, y, n in zip(candidates, yes, no) if y > n][:keep]
    return kept or candidates[:1]


def evaluate(cfg: MemGASConfig, ctx: JobContext) -> dict[str, Any]:
    from jobs.backends import bm25_index, embedder, text_backend
    from jobs.memgas import memory as m
    from jobs.memgas.data import default_path, load_locomo

    backend = text_backend(cfg.llm or None)
    emb = embedder(cfg.embedder or None)
    convs = load_locomo(Path(cfg.data_path) if cfg.data_path else default_path())[:cfg.conversations]
    if cfg.sessions_per_conversation:
        convs = [c.first_sessions(cfg.sessions_per_conversation) for c in convs]
    rng = np.random.default_rng(ctx.seed)
    ctx.log(f"{len(convs)} conversations, model {backend.model_id}, embedder {emb.model_id}")
    per_query: dict[str, dict[str, list[float]]] = {meth: {} for meth in RETRIEVAL_METHODS}
    qa_rows: list[dict[str, Any]] = []
    routers, assoc_edges, n_questions = [], 0, 0
    qa_per_conv = int(np.ceil(cfg.qa_questions / max(1, len(convs)))) if cfg.qa_questions else 0
    for conv in ctx.progress(convs, desc="conversations"):
        questions = conv.questions[:cfg.questions_per_conversation or None]
        n = len(conv.sessions)
        units = build_units(conv, cfg, backend)
        vecs = {g: emb.encode(units[g][0]) for g in GRANULARITIES}
        owners = {g: np.asarray(units[g][1]) for g in GRANULARITIES}
        session_level = [vecs[g] for g in ("session", "summary", "keywords")]
        association = m.associate(session_level, cfg.gmm_min_history, cfg.gmm_posterior, ctx.seed)
        assoc_edges += int((association > 0).sum() // 2)
        unit_owners = [owners[g] for g in GRANULARITIES if g != "session"]
        graph = m.memory_graph(n, unit_owners, association)
        graph_no_assoc = m.memory_graph(n, unit_owners, np.zeros_like(association))
        bm25 = bm25_index(units["session"][0])
        q_vecs = emb.encode([q.question for q in questions])
        bm_ids, bm_scores = bm25.search([q.question for q in questions], k=n)
        qa_pick = _qa_pick(len(questions), qa_per_conv, rng)
        for qi, q in enumerate(questions):
            gold = {pos for pos, s in enumerate(conv.sessions) if s.index in q.gold_sessions}
            scores = rank_sessions(q_vecs[qi], vecs, owners, graph, graph_no_assoc, n, cfg)
            routers.append(scores.pop("_router"))
            rankings = {meth: list(np.argsort(-sc, kind="stable")) for meth, sc in scores.items()}
            rankings["bm25"] = list(bm_ids[qi])
            for meth in RETRIEVAL_METHODS:
                for k in cfg.ks:
                    per_query[meth].setdefault(f"recall@{k}", []).append(recall_at_k(rankings[meth], gold, k))
                    per_query[meth].setdefault(f"ndcg@{k}", []).append(ndcg_at_k(rankings[meth], gold, k))
            n_questions += 1
            if qi in qa_pick:
                qa_rows.append(_answer(cfg, backend, emb, conv, q, q_vecs[qi], rankings, units, vecs, owners))
    retrieval = {meth: {name: mean(vals) for name, vals in metrics.items()} for meth, metrics in per_query.items()}
    for meth, metrics in retrieval.items():
        for name, value in metrics.items():
            ctx.metric("memgas_retrieval", value, method=meth, metric=name)
    qa = {meth: {"f1": mean([r[meth]["f1"] for r in qa_rows]), "em": mean([r[meth]["em"] for r in qa_rows]),
                 "gold_in_context": mean([r[meth]["gold_in_context"] for r in qa_rows])} for meth in QA_METHODS} if qa_rows else {}
    return {"model": backend.model_id, "embedder": emb.model_id, "conversations": len(convs),
            "questions": n_questions, "ks": list(cfg.ks), "summaries": cfg.summaries, "keywords": cfg.keywords,
            "association_edges": assoc_edges, "router_mean_weights": dict(zip(GRANULARITIES, np.mean(routers, axis=0).tolist())),
            "retrieval": retrieval, "qa": qa, "qa_examples": qa_rows[:5], "qa_questions": len(qa_rows)}


def _answer(cfg, backend, emb, conv, q, q_vec, rankings, units, vecs, owners) -> dict[str, Any]:
    from jobs.backends import GenParams

    gold = {pos for pos, s in enumerate(conv.sessions) if s.index in q.gold_sessions}
    summaries = units["summary"][0]
    row: dict[str, Any] = {"question": q.question, "answer": q.answer}
    turn_sims = vecs["turn"] @ q_vec
    chosen = {meth: [int(s) for s in rankings[meth][:cfg.qa_sessions]] for meth in ("bm25", "dense:session", "memgas")}
    chosen["memgas+filter"] = _filter(backend, q.question, [int(s) for s in rankings["memgas"][:cfg.qa_sessions + 2]],
                                      summaries, cfg.qa_sessions)
    for meth, sessions in chosen.items():
        idx = [i for i in np.argsort(-turn_sims) if owners["turn"][i] in sessions][:cfg.qa_turns]
        context = "\n".join(units["turn"][0][i] for i in sorted(idx))
        prompt = f"Conversation excerpts:\n{context}\n\nQuestion: {q.question}\nShort answer:"
        pred = backend.generate([prompt], GenParams(max_tokens=cfg.answer_tokens, stop=("\n",)), system=ANSWER_SYSTEM)[0][0]
        row[meth] = {"prediction": pred, "f1": best_f1(pred, [q.answer]), "em": exact_match(pred, [q.answer]),
                     "gold_in_context": float(bool(set(sessions) & gold))}
    return row


def verdict(results: dict) -> Verdict:
    r = results["retrieval"]
    k = 5 if 5 in results["ks"] else results["ks"][-1]
    singles = [m for m in r if m.startswith("dense:")]
    best_single = max(singles, key=lambda m: (r[m][f"recall@{k}"], r[m][f"ndcg@{k}"]))
    baselines = ["bm25", best_single]
    beats = all(r["memgas"][f"recall@{k}"] > r[b][f"recall@{k}"] and r["memgas"][f"ndcg@{k}"] > r[b][f"ndcg@{k}"]
                for b in baselines)
    rows = ["| method | " + " | ".join(f"R@{k_} | N@{k_}" for k_ in results["ks"]) + " |",
            "|---|" + "---|---|" * len(results["ks"])]
    for meth, vals in r.items():
        cells = " | ".join(f"{vals[f'recall@{k_}']:.3f} | {vals[f'ndcg@{k_}']:.3f}" for k_ in results["ks"])
        rows.append(f"| {meth} | {cells} |")
    qa = results.get("qa") or {}
    if qa:
        rows += ["", "| QA method | F1 | EM | gold session in context |", "|---|---|---|---|"]
        rows += [f"| {m_} | {v['f1']:.3f} | {v['em']:.3f} | {v['gold_in_context']:.2f} |" for m_, v in qa.items()]
    qa_note = ""
    if qa:
        qa_note = (f" QA token F1 on {results['qa_questions']} questions with {results['model']}: MemGAS "
                   f"{qa['memgas']['f1']:.3f}, with LLM filtering {qa['memgas+filter']['f1']:.3f}, dense session "
                   f"{qa['dense:session']['f1']:.3f}, BM25 {qa['bm25']['f1']:.3f} (a small model: F1 differences "
                   "mostly reflect the generator, the retrieval metrics are the meaningful comparison).")
    summary = (f"Session retrieval over {results['questions']} LoCoMo questions in {results['conversations']} "
               f"conversations (summaries: {results['summaries']}, keywords: {results['keywords']}): MemGAS "
               f"recall@{k} {r['memgas'][f'recall@{k}']:.3f} / NDCG@{k} {r['memgas'][f'ndcg@{k}']:.3f} vs best single "
               f"granularity ({best_single}) {r[best_single][f'recall@{k}']:.3f} / {r[best_single][f'ndcg@{k}']:.3f} "
               f"and BM25 {r['bm25'][f'recall@{k}']:.3f} / {r['bm25'][f'ndcg@{k}']:.3f}; "
               f"{results['association_edges']} association edges.{qa_note}")
    return Verdict(held=beats, summary=summary, table_md="\n".join(rows))


def plot_recall(results: dict, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ks = results["ks"]
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for meth, vals in results["retrieval"].items():
        style = {"lw": 2.5} if meth == "memgas" else {"lw": 1, "ls": "--" if meth == "bm25" else "-"}
        axes[0].plot(ks, [vals[f"recall@{k}"] for k in ks], marker="o", label=meth, **style)
        axes[1].plot(ks, [vals[f"ndcg@{k}"] for k in ks], marker="o", label=meth, **style)
    for ax, name in zip(axes, ("recall@k", "NDCG@k")):
        ax.set_xlabel("k (sessions)")
        ax.set_title(name)
        ax.grid(alpha=0.3)
    axes[1].legend(fontsize=7)
    fig.suptitle(f"MemGAS on LoCoMo ({results['questions']} questions)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
