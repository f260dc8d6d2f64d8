"""Quality benchmark: every CTR model on one dataset, several seeds, side by side.

    python benchmarks/quality.py [--dataset movielens-100k|criteo|ratings-csv|FILE.yaml]
                                 [--models lr deepfm dcnv2 finalmlp dlf dlf/att_cross dlf/att_self
                                           dlf/att_self_gate dlf_branch_softmax dmoe]
                                 [--seeds 2019 2020 2021] [--set KEY=VALUE ...] [--out PATH]

The dataset (a built-in name or a dataset description YAML, features/dataset.py)
is built into ``artifacts/benchmarks/features/<name>`` (skipped when up to
date); the split is the description's (MovieLens: random 80/10/10, seed 2019).
Every (model, seed) run goes through ``training.trainer.train`` with the
model's recipe (training/recipes.py: settings chosen on the VALIDATION split,
never on test); ``dlf/<variant>`` is DLF with that official variant. ``--seeds``
changes the initialisation and batch order only. Test metrics are those of the
checkpoint selected on validation. Printed per model: test AUC and log loss
(mean ± std over seeds), validation AUC, best epochs, dense and embedding
parameters, training samples/s (median over seeds, with the host's load average:
the host is shared, so throughput is noisy).
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch starts its OpenMP pool

import argparse
import json
import logging
import statistics
import sys
import time
import warnings
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

MODELS = ("lr", "deepfm", "dcnv2", "finalmlp", "dlf", "dlf/att_cross", "dlf/att_self", "dlf/att_self_gate",
          "dlf_branch_softmax", "dmoe")
DEFAULT_MODELS = ("lr", "deepfm", "dcnv2", "finalmlp", "dlf", "dlf/att_self_gate", "dmoe")

# Published numbers on the MovieLens-100K protocol (FuxiCTR / BARS), test AUC.
REFERENCE: dict[str, tuple[float, float | None]] = {
    "dcnv2": (0.7900, 0.0023),
    "deepfm": (0.7893, 0.0029),
    "lr": (0.783, None),
}


def _quiet() -> None:
    warnings.filterwarnings("ignore")
    for name in ("torchrec", "torch.distributed", "fbgemm_gpu", "root"):
        logging.getLogger(name).setLevel(logging.ERROR)
    logging.getLogger().setLevel(logging.ERROR)


def _stats(values: list[float]) -> tuple[float, float]:
    mean = statistics.fmean(values)
    return mean, statistics.stdev(values) if len(values) > 1 else 0.0


def run_config(entry: str, seed: int, overrides: dict[str, Any]) -> dict[str, Any]:
    """TrainConfig fields of a benchmark entry (``model`` or ``model/variant``)."""
    from training.recipes import recipe

    model, _, variant = entry.partition("/")
    extra = dict(overrides)
    if variant:
        extra["hparams"] = {**extra.get("hparams", {}), "variant": variant}
    return recipe(model, {**extra, "seed": seed, "progress": False})


def parameter_counts(cfg: Any, spec: Any) -> tuple[int, int]:
    """(dense head parameters, embedding parameters) of a configuration on a spec."""
    from training.models import build_head, make_config
    from training.sparse import table_width

    head = build_head(cfg.model, len(spec.sparse), cfg.embedding_dim, len(spec.dense), make_config(cfg.model, cfg.hparams))
    dense = sum(p.numel() for p in head.parameters())
    return dense, sum(f.vocab_size * table_width(head.embedding_dim) for f in spec.sparse)


def build_dataset(dataset: str, root: Path) -> tuple[Path, str]:
    """Features of ``dataset`` under ``root/<name>`` (no Feast repository: offline evaluation only)."""
    from features.builder import build_dataset as build_description
    from features.dataset import MOVIELENS, load_description
    from features.pipeline import build_features as build_movielens
    from recast.settings import get_settings

    settings = get_settings()
    if dataset == MOVIELENS:
        name, features = dataset, (root / dataset).resolve()
        data = settings.data.model_copy(update={"features_dir": features})
        build_movielens(settings.model_copy(update={"data": data}))
    else:
        description = load_description(dataset, settings.path(settings.data.dir))
        name, features = description.name, (root / description.name).resolve()
        build_description(description, features)
    return features, name


def run(dataset: str, models: list[str], seeds: list[int], overrides: dict[str, Any], out: Path, run_root: Path,
        features_root: Path) -> dict[str, Any]:
    from features.spec import FeatureSpec
    from training.distributed import shutdown_distributed
    from training.trainer import TrainConfig, train

    features_dir, name = build_dataset(dataset, features_root)
    spec = FeatureSpec.load(features_dir / "spec.json")
    load_start = os.getloadavg()[0]
    runs: list[dict[str, Any]] = []
    total = len(models) * len(seeds)
    started = time.perf_counter()
    for entry in models:
        for seed in seeds:
            cfg = TrainConfig(**run_config(entry, seed, overrides))
            t0 = time.perf_counter()
            result = train(cfg, features_dir, run_root / name / f"{entry.replace('/', '-')}-{seed}", resume=False)
            record = {
                "model": entry, "seed": seed, "val_auc": result.val_auc, "test_auc": result.test_auc,
                "test_logloss": result.test_logloss, "best_epoch": result.best_epoch, "epochs_run": len(result.history),
                "train_examples_per_s": result.examples_per_second, "seconds": time.perf_counter() - t0,
                "loadavg_1min": os.getloadavg()[0], "history": result.history,
            }
            runs.append(record)
            print(f"[{len(runs):2d}/{total}] {entry:<18} seed {seed}: val AUC {result.val_auc:.4f}  test AUC "
                  f"{result.test_auc:.4f}  logloss {result.test_logloss:.4f}  best epoch {result.best_epoch}/"
                  f"{len(result.history)}  {result.examples_per_second:,.0f} ex/s  {record['seconds']:.0f} s  "
                  f"load {record['loadavg_1min']:.2f}", flush=True)
    shutdown_distributed()

    summary: dict[str, dict[str, Any]] = {}
    for entry in models:
        mine = [r for r in runs if r["model"] == entry]
        auc, auc_std = _stats([r["test_auc"] for r in mine])
        ll, ll_std = _stats([r["test_logloss"] for r in mine])
        val, val_std = _stats([r["val_auc"] for r in mine])
        dense, emb = parameter_counts(TrainConfig(**run_config(entry, seeds[0], overrides)), spec)
        summary[entry] = {
            "test_auc_mean": auc, "test_auc_std": auc_std, "test_logloss_mean": ll, "test_logloss_std": ll_std,
            "val_auc_mean": val, "val_auc_std": val_std, "best_epochs": [r["best_epoch"] for r in mine],
            "train_examples_per_s": statistics.median(r["train_examples_per_s"] for r in mine),
            "dense_params": dense, "embedding_params": emb,
        }
    report = {
        "dataset": name, "spec_meta": spec.meta, "seeds": seeds, "overrides": overrides,
        "settings": {m: run_config(m, seeds[0], overrides) for m in models}, "summary": summary,
        "reference": {k: {"auc": v[0], "std": v[1]} for k, v in REFERENCE.items()} if name == "movielens-100k" else {},
        "runs": runs, "seconds": time.perf_counter() - started,
        "loadavg_1min": {"start": load_start, "end": os.getloadavg()[0]},
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2, default=str))
    print_table(name, summary, len(seeds), "dcnv2" if "dcnv2" in summary else next(iter(summary)))
    print(f"host: {os.cpu_count()} CPUs, 1-min load average {load_start:.2f} at start, {os.getloadavg()[0]:.2f} at end "
          "(shared host: samples/s are noisy)")
    print(f"\nwrote {out}")
    return report


def print_table(dataset: str, summary: dict[str, dict[str, Any]], n_seeds: int, base: str) -> None:
    print(f"\n{dataset}, test split, mean ± std over {n_seeds} seed(s); ratios vs {base}")
    header = (f"{'model':<18} | {'test AUC':>15} | {'ΔAUC':>7} | {'test logloss':>15} | {'val AUC':>7} | "
              f"{'best ep':>8} | {'dense params':>12} | {'emb params':>10} | {'samples/s':>9} | {'× ' + base:>8}")
    print(header)
    print("-" * len(header))
    ref_auc, ref_speed = summary[base]["test_auc_mean"], summary[base]["train_examples_per_s"]
    for model, s in summary.items():
        epochs = "/".join(str(e) for e in s["best_epochs"])
        print(f"{model:<18} | {s['test_auc_mean']:.4f} ± {s['test_auc_std']:.4f} | {s['test_auc_mean'] - ref_auc:+.4f} | "
              f"{s['test_logloss_mean']:.4f} ± {s['test_logloss_std']:.4f} | {s['val_auc_mean']:.4f} | {epochs:>8} | "
              f"{s['dense_params']:>12,} | {s['embedding_params']:>10,} | {s['train_examples_per_s']:>9,.0f} | "
              f"{s['train_examples_per_s'] / ref_speed:>8.2f}")
    if dataset == "movielens-100k":
        print("published (FuxiCTR/BARS): " + ", ".join(
            f"{m} {a:.4f}" + (f" ± {s:.4f}" if s else "") for m, (a, s) in REFERENCE.items()))


def parse_set(values: list[str]) -> dict[str, Any]:
    """``KEY=VALUE`` TrainConfig fields (``hp.NAME=VALUE`` for model hyperparameters); values as JSON."""
    out: dict[str, Any] = {}
    for item in values:
        key, sep, raw = item.partition("=")
        if not sep:
            raise SystemExit(f"--set expects KEY=VALUE, got {item!r}")
        try:
            value = json.loads(raw)
        except json.JSONDecodeError:
            value = raw
        if key.startswith("hp."):
            out.setdefault("hparams", {})[key[3:]] = value
        else:
            out[key] = value
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="movielens-100k", help="built-in name or dataset description YAML")
    parser.add_argument("--models", nargs="+", default=list(DEFAULT_MODELS), choices=list(MODELS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[2019, 2020, 2021])
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a TrainConfig field for every model (epochs=5, hp.num_layers=1)")
    parser.add_argument("--out", type=Path, default=Path("artifacts/benchmarks/quality.json"))
    parser.add_argument("--run-dir", type=Path, default=Path("artifacts/benchmarks/runs"),
                        help="checkpoints of the benchmark runs (overwritten)")
    parser.add_argument("--features-root", type=Path, default=Path("artifacts/benchmarks/features"))
    args = parser.parse_args(argv)
    _quiet()
    run(args.dataset, args.models, args.seeds, parse_set(args.set), args.out, args.run_dir, args.features_root)


if __name__ == "__main__":
    main()
