"""Does a CTR model gain from the streaming features? MovieLens-100K replayed in time order.

Two features folders from the same ratings (features/point_in_time.py): the
static features only, and the static features plus the streaming features
(user click/event counts over 1 h / 24 h, recent items, item popularity) as of
strictly before each rating. Both are split by time: the first 80% of events
train, the next 10% validate (model selection, early stopping), the last 10%
test. The same model recipe (training/recipes.py, chosen on the random split's
validation AUC; nothing is tuned here on test) trains on each for every seed.

    nice -n 10 .venv/bin/python benchmarks/streaming_features.py --seeds 1 2 3

prints a side-by-side table (test AUC mean +- sd over the seeds, validation AUC,
log loss) and the 1-minute load average, and writes
``artifacts/benchmarks/streaming_features.json``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.common import ROOT, environment, load_note, pin_threads, table, write_json  # noqa: E402


def _mean_sd(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="dlf", help="model recipe to train on both feature sets")
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--epochs", type=int, default=None, help="cap the recipe's epochs (early stopping still applies)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--work", type=Path, default=ROOT / "artifacts" / "benchmarks" / "streaming_features")
    args = parser.parse_args()
    pin_threads(args.threads)

    from features.movielens import fetch_movielens
    from features.point_in_time import build_time_split
    from recast.settings import get_settings
    from training.distributed import shutdown_distributed
    from training.recipes import recipe
    from training.trainer import TrainConfig, train

    settings = get_settings()
    raw = fetch_movielens(settings.path(settings.data.dir), settings.data.recbole_version)
    variants = {"static": False, "static+stream": True}
    dirs = {}
    for name, stream in variants.items():
        dirs[name] = args.work / "features" / name
        started = time.perf_counter()
        build_time_split(raw, dirs[name], stream=stream, genres_max_len=settings.data.genres_max_len)
        print(f"built {name} time-split features in {time.perf_counter() - started:.1f} s", flush=True)

    runs: list[dict] = []
    for seed in args.seeds:
        for name in variants:
            overrides = {"seed": seed, "progress": False, **({"epochs": args.epochs} if args.epochs else {})}
            cfg = TrainConfig(**recipe(args.model, overrides))
            t0 = time.perf_counter()
            result = train(cfg, dirs[name], args.work / "runs" / f"{name}-{seed}", resume=False)
            runs.append({"features": name, "seed": seed, "val_auc": result.val_auc, "test_auc": result.test_auc,
                         "test_logloss": result.test_logloss, "best_epoch": result.best_epoch,
                         "seconds": time.perf_counter() - t0, "loadavg_1min": os.getloadavg()[0]})
            print(f"{name:<14} seed {seed}: val AUC {result.val_auc:.4f}  test AUC {result.test_auc:.4f}  "
                  f"best epoch {result.best_epoch}  {runs[-1]['seconds']:.0f} s  load {runs[-1]['loadavg_1min']:.2f}",
                  flush=True)
    shutdown_distributed()

    rows, summary = [], {}
    for name in variants:
        mine = [r for r in runs if r["features"] == name]
        test, test_sd = _mean_sd([r["test_auc"] for r in mine])
        val, val_sd = _mean_sd([r["val_auc"] for r in mine])
        ll, ll_sd = _mean_sd([r["test_logloss"] for r in mine])
        summary[name] = {"test_auc": test, "test_auc_sd": test_sd, "val_auc": val, "val_auc_sd": val_sd,
                         "test_logloss": ll, "test_logloss_sd": ll_sd, "seeds": len(mine)}
        rows.append([name, f"{test:.4f} ± {test_sd:.4f}", f"{val:.4f} ± {val_sd:.4f}", f"{ll:.4f} ± {ll_sd:.4f}",
                     f"{statistics.fmean(r['seconds'] for r in mine):.0f}"])
    gain = summary["static+stream"]["test_auc"] - summary["static"]["test_auc"]
    print(f"\n{args.model} on MovieLens-100K, time split 80/10/10 (train on the past, test on the future), "
          f"seeds {args.seeds}")
    print(table(["features", "test AUC", "val AUC", "test logloss", "s / run"], rows))
    print(f"test AUC gain of the streaming features: {gain:+.4f}   {load_note()}")
    write_json("streaming_features", {"model": args.model, "seeds": args.seeds, "runs": runs, "summary": summary,
                                      "test_auc_gain": gain, "environment": environment(args.threads)})


if __name__ == "__main__":
    main()
