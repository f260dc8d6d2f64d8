"""D-MoE ablation on the MovieLens-100K protocol (random 80/10/10, seed 2019).

Rows add one de-correlation strategy at a time, as in the paper's key finding:
  (a) homogeneous experts (3 x DNN), one shared embedding
  (b) + per-expert embeddings (Multi-Embedding)
  (c) + heterogeneous experts (DNN, DCN-V2 cross, FM)
  (d) + Cross-Expert De-Correlation loss (lambda)
and DLF beside them. Each cell is mean +/- std over seeds of test AUC, test
log loss and the Cross-Expert Correlation (mean |Pearson rho| between expert
pairs over the test set). The expected trend is falling correlation and rising
AUC down the table; whatever it shows is printed as measured.

    python benchmarks/dmoe_ablation.py [--seeds 2019 2020 2021] [--epochs 10] [--lambda 0.1]
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

from recast.settings import get_settings  # noqa: E402
from training.trainer import TrainConfig, train  # noqa: E402

from quality import BEST  # noqa: E402  (tuned settings of the quality benchmark; DLF row uses them)

# Trainer settings of every D-MoE row: batch 1024 was best for the DNN-family baselines.
COMMON = {"batch_size": 1024, "patience": 2}


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
    p.add_argument("--seeds", type=int, nargs="+", default=[2019, 2020, 2021])
    p.add_argument("--epochs", type=int, default=15, help="maximum epochs of the D-MoE rows (early stopping on val AUC)")
    p.add_argument("--lambda", dest="lam", type=float, default=0.01, help="de-correlation loss weight of row (d)")
    p.add_argument("--no-dlf", action="store_true", help="skip the DLF reference row")
    p.add_argument("--out", type=Path, default=Path("artifacts/benchmarks/dmoe_ablation.json"))
    args = p.parse_args()

    settings = get_settings()
    features = settings.path(settings.data.features_dir)
    if not (features / "spec.json").exists():
        raise SystemExit(f"{features} has no features: run `recast features build` first")
    rows: dict[str, tuple[str, dict]] = {name: ("dmoe", {"hparams": hp, **COMMON, "epochs": args.epochs})
                                         for name, hp in variants(args.lam).items()}
    if not args.no_dlf:
        rows["DLF (tuned, benchmarks/quality.py)"] = ("dlf", BEST["dlf"])
    results: dict[str, list[dict]] = {name: [] for name in rows}
    runs = len(rows) * len(args.seeds)
    done = 0
    for seed in args.seeds:
        for index, (name, (model, fields)) in enumerate(rows.items()):
            done += 1
            started = time.perf_counter()
            cfg = TrainConfig(model=model, seed=seed, progress=False, **fields)
            r = train(cfg, features, Path("artifacts/benchmarks/runs") / f"ablation-{index}-{model}-{seed}", resume=False)
            results[name].append({"seed": seed, "test_auc": r.test_auc, "test_logloss": r.test_logloss,
                                  "correlation": r.test_expert_correlation, "best_epoch": r.best_epoch})
            print(f"[{done}/{runs}] {name:32s} seed {seed}: AUC {r.test_auc:.4f}  logloss {r.test_logloss:.4f}  "
                  f"corr {r.test_expert_correlation:.4f}  ({time.perf_counter() - started:.0f}s)", flush=True)

    base = np.mean([x["test_auc"] for x in results[next(iter(rows))]])
    print(f"\nD-MoE ablation, MovieLens-100K test split, {len(args.seeds)} seeds (mean ± std)")
    print(f"{'variant':34s} {'test AUC':>17s} {'ΔAUC vs (a)':>12s} {'test logloss':>17s} {'expert correlation':>19s}")
    for name, rs in results.items():
        aucs = [x["test_auc"] for x in rs]
        print(f"{name:34s} {fmt(aucs):>17s} {np.mean(aucs) - base:>+12.4f} {fmt([x['test_logloss'] for x in rs]):>17s} "
              f"{fmt([x['correlation'] for x in rs]):>19s}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"seeds": args.seeds, "epochs": args.epochs, "lambda": args.lam, "results": results}, indent=2))
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
