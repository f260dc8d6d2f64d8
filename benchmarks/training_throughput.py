"""Training throughput: TorchRec EBC under DistributedModelParallel vs plain nn.Embedding.

The same DLF model (head built from the same config and seed) trains on real
MovieLens-100K train batches; one step is forward + backward + optimizer
update + the trainer's gradient clipping.

* ``torchrec_dmp``: the project's path (training/trainer.py): CTRModel with a
  TorchRec EmbeddingBagCollection, ``init_distributed`` (gloo group of one),
  ``wrap_model`` (table-wise plan, fused Adagrad inside the FBGEMM backward),
  Adam on the dense part; the padded batch is turned into a KeyedJaggedTensor
  inside the timed step, as the trainer does.
* ``torchrec_dmp_prekjt``: the same, with the KeyedJaggedTensors built before
  timing (shows what the padded -> KJT conversion costs).
* ``plain_embedding``: ``PaddedEmbedding`` (one ``nn.Embedding`` per field,
  gather * mask pooling, as exported) + the same head; torch Adagrad on the
  tables (same lr), torch Adam on the head. No TorchRec.

Variants run interleaved step by step (a, b, c, a, b, c, ...; the order
rotates every repeat) so that noise from other processes on the shared cores
hits all of them alike; each repeat gives one examples/s per variant over
``--steps`` steps. The table reports the median over repeats and the ratio to
plain nn.Embedding both from the medians and as the median of same-repeat
ratios (the steadier of the two on a noisy host).

    .venv/bin/python benchmarks/training_throughput.py --threads 1
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402  (sets OMP_WAIT_POLICY before torch loads)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--features-dir", type=Path, default=common.FEATURES_DIR, help="built MovieLens features (spec.json + parquet splits)")
    p.add_argument("--batch-size", type=int, default=4096)
    p.add_argument("--steps", type=int, default=4, help="training steps per timed repeat")
    p.add_argument("--repeats", type=int, default=7, help="timed repeats per variant (>= 5 recommended)")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps per variant before timing")
    p.add_argument("--threads", type=int, default=1, help="torch intra-op threads (same for all variants)")
    p.add_argument("--model", default="dlf", help="CTR head (training/models)")
    p.add_argument("--embedding-dim", type=int, default=16)
    p.add_argument("--lr", type=float, default=1e-3, help="Adam lr (dense part)")
    p.add_argument("--embedding-lr", type=float, default=0.05, help="Adagrad lr (tables)")
    p.add_argument("--grad-clip", type=float, default=10.0, help="dense grad-norm clip, as the trainer (0 = off)")
    p.add_argument("--seed", type=int, default=2019)
    p.add_argument("--variants", default="torchrec_dmp,torchrec_dmp_prekjt,plain_embedding",
                   help="comma-separated subset of torchrec_dmp, torchrec_dmp_prekjt, plain_embedding")
    p.add_argument("--out", type=Path, default=common.OUT_DIR, help="directory for training_throughput.json")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    common.pin_threads(args.threads)
    import torch
    from torch import nn

    common.pin_threads(args.threads)
    from features.spec import FeatureSpec
    from training.data import batches, load_split
    from training.distributed import dense_parameters, init_distributed, shutdown_distributed, wrap_model
    from training.models import build_head, make_config
    from training.sparse import CTRModel, PaddedEmbedding, padded_to_kjt, table_width

    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    known = {"torchrec_dmp", "torchrec_dmp_prekjt", "plain_embedding"}
    if not variants or set(variants) - known:
        raise SystemExit(f"--variants must be a subset of {sorted(known)}")

    common.progress(f"loading train split from {args.features_dir}")
    spec = FeatureSpec.load(args.features_dir / "spec.json")
    data = load_split(args.features_dir, "train", spec)
    gen = torch.Generator().manual_seed(args.seed)
    pool = [b for b, _ in batches(data, args.batch_size, shuffle=True, generator=gen, drop_last=True)]
    if not pool:
        raise SystemExit(f"the train split ({len(data)} rows) has no full batch of {args.batch_size}")
    kjts = [padded_to_kjt(spec, b.ids, b.mask) for b in pool]
    common.progress(f"{len(data):,} train rows -> {len(pool)} batches of {args.batch_size}; threads={torch.get_num_threads()}")

    config = make_config(args.model)
    loss_fn = nn.BCEWithLogitsLoss()

    def new_head() -> nn.Module:
        torch.manual_seed(args.seed)
        return build_head(args.model, len(spec.sparse), args.embedding_dim, len(spec.dense), config)

    steppers = {}
    needs_dmp = any(v.startswith("torchrec") for v in variants)
    if needs_dmp:
        init_distributed()

    def make_dmp_step(prebuilt: bool):
        model = CTRModel(spec, new_head(), device=torch.device("meta"))
        dmp = wrap_model(model, "adagrad", args.embedding_lr)
        opt = torch.optim.Adam(dense_parameters(dmp), lr=args.lr)
        dmp.train()

        def step(i: int) -> float:  # mirrors training/trainer.py's inner loop
            b = pool[i % len(pool)]
            kjt = kjts[i % len(pool)] if prebuilt else padded_to_kjt(spec, b.ids, b.mask)
            loss = loss_fn(dmp(kjt, b.dense), b.labels)
            opt.zero_grad()
            loss.backward()
            if args.grad_clip:
                torch.nn.utils.clip_grad_norm_(dense_parameters(dmp), args.grad_clip)
            opt.step()
            return loss.detach()

        return step

    class PlainCTR(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.head = new_head()
            self.embedding = PaddedEmbedding(spec, table_width(self.head.embedding_dim))

        def forward(self, ids: torch.Tensor, mask: torch.Tensor, dense: torch.Tensor) -> torch.Tensor:
            return self.head(self.embedding(ids, mask)[..., : self.head.embedding_dim], dense)

    def make_plain_step():
        model = PlainCTR().train()
        emb_opt = torch.optim.Adagrad(model.embedding.parameters(), lr=args.embedding_lr)
        dense_opt = torch.optim.Adam(model.head.parameters(), lr=args.lr)
        head_params = list(model.head.parameters())

        def step(i: int) -> float:
            b = pool[i % len(pool)]
            loss = loss_fn(model(b.ids, b.mask, b.dense), b.labels)
            emb_opt.zero_grad()
            dense_opt.zero_grad()
            loss.backward()
            if args.grad_clip:
                torch.nn.utils.clip_grad_norm_(head_params, args.grad_clip)
            emb_opt.step()
            dense_opt.step()
            return loss.detach()

        return step

    for v in variants:
        steppers[v] = make_dmp_step(v == "torchrec_dmp_prekjt") if v.startswith("torchrec") else make_plain_step()

    counters = {v: 0 for v in variants}
    common.progress(f"warm-up: {args.warmup} steps per variant")
    first_loss = {}
    for v in variants:
        for _ in range(args.warmup):
            loss = steppers[v](counters[v])
            first_loss.setdefault(v, float(loss))
            counters[v] += 1

    # Step-level interleaving: inside a repeat the variants take turns step by
    # step (a, b, c, a, b, c, ...), so a burst of load from other processes
    # lands on all of them; each repeat yields one examples/s per variant.
    times: dict[str, list[float]] = {v: [] for v in variants}
    for r in range(args.repeats):
        order = variants[r % len(variants):] + variants[: r % len(variants)]
        spent = dict.fromkeys(variants, 0.0)
        for _ in range(args.steps):
            for v in order:
                start = time.perf_counter()
                steppers[v](counters[v])
                spent[v] += time.perf_counter() - start
                counters[v] += 1
        for v in variants:
            times[v].append(spent[v])
        common.progress(
            f"repeat {r + 1}/{args.repeats}: "
            + ", ".join(f"{v} {args.steps * args.batch_size / times[v][-1]:,.0f} ex/s" for v in variants)
        )
    if needs_dmp:
        shutdown_distributed()

    examples = args.steps * args.batch_size
    results = {}
    for v in variants:
        eps = [examples / t for t in times[v]]
        results[v] = {
            "examples_per_s_median": common.median(eps),
            "examples_per_s_min": min(eps),
            "examples_per_s_max": max(eps),
            "step_ms_median": common.median(times[v]) / args.steps * 1e3,
            "examples_per_s_all": eps,
            "loss_after_warmup": first_loss.get(v),
        }
    base = results.get("plain_embedding")
    rows = []
    for v in variants:
        r = results[v]
        if base is not None:
            r["ratio_vs_plain"] = common.ratio(r["examples_per_s_median"], base["examples_per_s_median"])
            # same-repeat pairs: robust to load that changes between repeats
            paired = [common.ratio(a, b) for a, b in zip(r["examples_per_s_all"], base["examples_per_s_all"])]
            r["paired_ratio_vs_plain_all"] = paired
            r["paired_ratio_vs_plain_median"] = common.median(paired)
        rows.append([v, r["examples_per_s_median"], r["examples_per_s_min"], r["examples_per_s_max"], r["step_ms_median"],
                     r.get("ratio_vs_plain", float("nan")), r.get("paired_ratio_vs_plain_median", float("nan"))])
    title = (f"Training throughput, {args.model.upper()} on MovieLens-100K train, batch {args.batch_size}, "
             f"{args.threads} thread(s), median of {args.repeats} repeats x {args.steps} steps (variants interleaved step by step)")
    text = title + "\n\n" + common.table(
        ["variant", "examples/s (median)", "min", "max", "ms/step", "ratio vs plain (medians)", "ratio vs plain (median of paired repeats)"], rows
    )
    if "torchrec_dmp" in results and base is not None:
        r = results["torchrec_dmp"]
        text += (f"\n\nTorchRec DMP / plain nn.Embedding = {r['paired_ratio_vs_plain_median']:.2f}x "
                 f"(median of paired repeats; {r['ratio_vs_plain']:.2f}x from the medians) (target >= 1.0x)")
    text += "\n" + common.load_note()
    print(text)
    payload = {
        "benchmark": "training_throughput",
        "args": vars(args),
        "environment": common.environment(args.threads),
        "results": results,
        "table": text,
    }
    path = common.write_json("training_throughput", payload, args.out)
    print(f"\nwrote {path}")
    return payload


if __name__ == "__main__":
    main()
