"""D-MoE ablation on one dataset (default MovieLens-100K: random 80/10/10, seed 2019).

Rows add one de-correlation strategy at a time, as in the paper's key finding:
  (a) homogeneous experts (3 x DNN), one shared embedding
  (b) + per-expert embeddings (Multi-Embedding)
  (c) + heterogeneous experts (DNN, DCN-V2 cross, FM)
  (d) + Cross-Expert De-Correlation loss (lambda)
and DLF beside them. Each cell is mean +/- std over seeds of test AUC, test
log loss and the Cross-Expert Correlation (mean |Pearson rho| between expert
pairs over the test set). The expected trend is falling correlation and rising
AUC down the table; whatever it shows is printed as measured.

    python benchmarks/dmoe_ablation.py [--dataset NAME|FILE.yaml] [--seeds 2019 2020 2021]
                                       [--epochs 10] [--lambda 0.1]

The dataset is built as by benchmarks/quality.py (a built-in name or a dataset
description YAML); every row starts from D-MoE's recipe (training/recipes.py).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from training.recipes import recipe  # noqa: E402
from training.trainer import TrainConfig, train  # noqa: E402

from quality import build_dataset  # noqa: E402


def variants(lam: float) -> dict[str, dict]:
    return {
        "(a) homogeneous, shared emb": {"heterogeneous": False, "per_expert_embeddings": False, "decorrelation_weight": 0.0},
        "(b) + per-expert emb": {"heterogeneous": False, "per_expert_embeddings": True, "decorrelation_weight": 0.0},
        "(c) + heterogeneous": {"heterogeneous": True, "per_expert_embeddings": True, "decorrelation_weight": 0.0},
        f"(d) + de-corr loss (l={lam:g})": {"heterogeneous": True, "per_expert_embeddings": True, "decorrelation_weight": lam},
    }


def fmt(values: list[float], digits: int = 4) -> str:
    a = np.asarray(values, dtype=float)
    if np.isnan(a).all():
        return "-"
    return f"{np.nanmean(a):.{digits}f} ± {np.nanstd(a):.{digits}f}"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", default="movielens-100k", help="built-in name or dataset description YAML")
    p.add_argument("--features-root", type=Path, default=Path("artifacts/benchmarks/features"))
    p.add_argument("--seeds", type=int, nargs="+", default=[2019, 2020, 2021])
    p.add_argument("--epochs", type=int, default=15, help="maximum epochs of the D-MoE rows (early stopping on val AUC)")
    p.add_argument("--lambda", dest="lam", type=float, default=0.01, help="de-correlation loss weight of row (d)")
    p.add_argument("--no-dlf", action="store_true", help="skip the DLF reference row")
    p.add_argument("--out", type=Path, default=Path("artifacts/benchmarks/dmoe_ablation.json"))
    args = p.parse_args()

    features, dataset = build_dataset(args.dataset, args.features_root)
    rows: dict[str, tuple[str, dict]] = {name: ("dmoe", {"hparams": hp, "epochs": args.epochs})
                                         for name, hp in variants(args.lam).items()}
    if not args.no_dlf:
        rows["DLF (its recipe)"] = ("dlf", {})
    results: dict[str, list[dict]] = {name: [] for name in rows}
    runs = len(rows) * len(args.seeds)
    done = 0
    for seed in args.seeds:
        for index, (name, (model, fields)) in enumerate(rows.items()):
            done += 1
            started = time.perf_counter()
            cfg = TrainConfig(**recipe(model, {**fields, "seed": seed, "progress": False}))
            r = train(cfg, features, Path("artifacts/benchmarks/runs") / f"ablation-{index}-{model}-{seed}", resume=False)
            results[name].append({"seed": seed, "test_auc": r.test_auc, "test_logloss": r.test_logloss,
                                  "correlation": r.test_expert_correlation, "best_epoch": r.best_epoch})
            print(f"[{done}/{runs}] {name:32s} seed {seed}: AUC {r.test_auc:.4f}  logloss {r.test_logloss:.4f}  "
                  f"corr {r.test_expert_correlation:.4f}  ({time.perf_counter() - started:.0f}s)", flush=True)

    base = np.mean([x["test_auc"] for x in results[next(iter(rows))]])
    print(f"\nD-MoE ablation, {dataset} test split, {len(args.seeds)} seeds (mean ± std); "
          f"1-min load average {os.getloadavg()[0]:.2f}")
    print(f"{'variant':34s} {'test AUC':>17s} {'ΔAUC vs (a)':>12s} {'test logloss':>17s} {'expert correlation':>19s}")
    for name, rs in results.items():
        aucs = [x["test_auc"] for x in rs]
        print(f"{name:34s} {fmt(aucs):>17s} {np.mean(aucs) - base:>+12.4f} {fmt([x['test_logloss'] for x in rs]):>17s} "
              f"{fmt([x['correlation'] for x in rs]):>19s}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"dataset": dataset, "seeds": args.seeds, "epochs": args.epochs, "lambda": args.lam, "results": results}, indent=2))
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
