"""PIR on ETTh1: DLinear and PatchTST with and without PIR, side by side with reference numbers.

Protocol (Time-Series-Library): look-back 96, horizons 96/192/336/720, all 7
channels (multivariate), split 12/4/4 months, StandardScaler on the train
rows, MSE/MAE on the scaled test windows (every window, no drop_last).
Per horizon: train DLinear and PatchTST (authors' ETTh1 settings, epochs
capped, early stopping on validation MSE), freeze them, build the retrieval
store from the training pairs, train PIR on the training windows (early
stopping on the validation MSE of the revised forecast), evaluate on test.
Also: R² (1 - SSres/SStot) and squared Pearson r between the estimated error
δ and the realised per-channel MSE of the base forecast on the test windows.

    OMP_WAIT_POLICY=PASSIVE .venv/bin/python benchmarks/forecast_pir.py            # ~20 min on 2 shared cores
    .venv/bin/python benchmarks/forecast_pir.py --horizons 96 192 --patchtst-epochs 5

Target: PIR lowers PatchTST's test MSE by >= 5 % on average over the
four horizons, with no horizon worse than its backbone. The data file
(``../shared/data/ETTh1.csv``) is read in place, never copied.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import environment, load_note, pin_threads, progress, table, write_json  # noqa: E402

# reference numbers from ../shared/data/README.md (test MSE / MAE, look-back 96)
TSLIB_HERE = {  # thuml/Time-Series-Library 4e938a1, official scripts, seed 2021, run on this kind of machine
    ("dlinear", 96): (0.396, 0.411), ("dlinear", 192): (0.445, 0.440), ("dlinear", 336): (0.487, 0.465),
    ("dlinear", 720): (0.513, 0.510), ("patchtst", 96): (0.384, 0.401),
}
PUBLISHED_MSE = {("dlinear", 96): 0.386, ("dlinear", 192): 0.437, ("dlinear", 336): 0.481, ("dlinear", 720): 0.519,
                 ("patchtst", 96): 0.414}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=None, help="ETTh1.csv (default ../shared/data/ETTh1.csv)")
    ap.add_argument("--horizons", type=int, nargs="+", default=[96, 192, 336, 720])
    ap.add_argument("--backbones", nargs="+", default=["dlinear", "patchtst"])
    ap.add_argument("--dlinear-epochs", type=int, default=10)
    ap.add_argument("--patchtst-epochs", type=int, default=10)
    ap.add_argument("--pir-epochs", type=int, default=6)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=2021)
    args = ap.parse_args()

    pin_threads(args.threads)
    import numpy as np
    import torch

    torch.set_num_threads(args.threads)
    from training.forecasting.data import load_etth1, prepare
    from training.forecasting.pir import PIR, PIRConfig
    from training.forecasting.train import (build_backbone, default_fit, default_pir_fit, error_r2, metrics,
                                            pir_arrays, pir_predict, predict, seed_everything, train_backbone,
                                            train_pir, training_store)

    series = load_etth1(args.data)
    started = time.perf_counter()
    rows, results = [], []
    for h in args.horizons:
        prep = prepare(series, 96, h)
        pcfg = PIRConfig(seq_len=96, pred_len=h, n_channels=prep.n_channels)
        t0 = time.perf_counter()
        store = training_store(prep)
        retrieval = {n: pir_arrays(prep.windows(n), np.zeros_like(prep.windows(n).y), store, pcfg.top_k,
                                   exclude_overlap=(n == "train")) for n in ("train", "val", "test")}
        progress(f"H={h}: store {len(store)} pairs, retrieval of every window {time.perf_counter() - t0:.1f}s")
        for name in args.backbones:
            fit = default_fit(name)
            fit = dataclasses.replace(fit, epochs=args.dlinear_epochs if name == "dlinear" else args.patchtst_epochs,
                                      seed=args.seed)
            seed_everything(args.seed)
            model = build_backbone(name, prep)
            bres = train_backbone(model, prep, fit, log=lambda m: progress(f"H={h} {name} {m}"))
            arrays = {n: dataclasses.replace(a, base=predict(model, prep.windows(n))) for n, a in retrieval.items()}
            pfit = dataclasses.replace(default_pir_fit(), epochs=args.pir_epochs, seed=args.seed)
            seed_everything(args.seed)
            pir = PIR(pcfg)
            pres = train_pir(pir, arrays["train"], arrays["val"], pfit, log=lambda m: progress(f"H={h} {name}+PIR {m}"))
            test = arrays["test"]
            revised, delta = pir_predict(pir, test)
            base_m, pir_m = metrics(test.base, test.y), metrics(revised, test.y)
            r2 = error_r2(delta, test.base, test.y)
            ref = TSLIB_HERE.get((name, h), (float("nan"), float("nan")))
            pub = PUBLISHED_MSE.get((name, h), float("nan"))
            change = 100.0 * (pir_m["mse"] - base_m["mse"]) / base_m["mse"]
            rows.append([h, name, base_m["mse"], pir_m["mse"], f"{change:+.1f}%", base_m["mae"], pir_m["mae"],
                         r2["r2"], r2["corr2"], ref[0], ref[1], pub, bres.best_epoch, pres.best_epoch])
            results.append({"horizon": h, "backbone": name, "base": base_m, "pir": pir_m, "mse_change_pct": change,
                            "delta": r2, "tslib_reference": ref, "published_mse": pub,
                            "backbone_fit": dataclasses.asdict(bres), "pir_fit": dataclasses.asdict(pres),
                            "n_test_windows": len(test)})
            progress(f"H={h} {name}: MSE {base_m['mse']:.4f} -> {pir_m['mse']:.4f} ({change:+.1f}%), "
                     f"R2(delta) {r2['r2']:.3f}; {time.perf_counter() - started:.0f}s so far")

    headers = ["H", "backbone", "MSE", "MSE +PIR", "ΔMSE", "MAE", "MAE +PIR", "R² δ", "r² δ",
               "TSLib MSE", "TSLib MAE", "published MSE", "best ep", "PIR best ep"]
    print(table(headers, rows, digits=3))
    pt = [r for r in results if r["backbone"] == "patchtst"]
    if pt:
        avg = sum(r["mse_change_pct"] for r in pt) / len(pt)
        worse = [r["horizon"] for r in pt if r["mse_change_pct"] > 0]
        print(f"\nPatchTST + PIR: mean MSE change {avg:+.2f}% over horizons {[r['horizon'] for r in pt]} "
              f"(target <= -5%); horizons worse than the backbone: {worse or 'none'}")
    print(f"settings: look-back 96, DLinear <= {args.dlinear_epochs} epochs (bs 32, lr 5e-3, halving), PatchTST <= "
          f"{args.patchtst_epochs} epochs (bs 128, lr 1e-3, halving; 3 layers, d_model 16, 4 heads, patch 16/8), "
          f"PIR <= {args.pir_epochs} epochs (bs 64, lr 1e-3, K={PIRConfig().top_k}), patience 3/2 on val MSE, "
          f"seed {args.seed}, {args.threads} threads; total {time.perf_counter() - started:.0f}s")
    print(load_note())
    path = write_json("forecast_pir", {"args": vars(args), "results": results, "env": environment(args.threads)})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
