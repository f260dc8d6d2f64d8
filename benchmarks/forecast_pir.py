"""PIR on an ETT-format dataset: backbones with and without PIR, guarded, per horizon and seed.

Protocol (Time-Series-Library): look-back 96, horizons 96/192/336/720, all
channels (multivariate), the dataset's split (ETTh1/h2/m1/m2: the built-in
12/4/4-month borders; any other CSV 70/10/20 %, or a dataset description
``.json``, forecasting/dataset.py), StandardScaler on the train rows,
MSE/MAE on the scaled test windows (every window). Per seed, horizon and
backbone: train the backbone (authors' optimiser settings, epochs capped),
freeze it, fit PIR out of sample (``--calibration``), choose K on the check
segment, apply the guard, evaluate on test (training/forecasting/pipeline.py).

Printed per cell (mean over seeds): base and revised test MSE, the change
(± its standard deviation over seeds), the change without the guard, the
guard's decisions (kept channel x horizon blocks), K and the revisions
chosen on the check segment, R² of δ.

    nice -n 10 OMP_WAIT_POLICY=PASSIVE .venv/bin/python benchmarks/forecast_pir.py --seeds 2021 2022 2023
    .venv/bin/python benchmarks/forecast_pir.py --data OTHER.csv --horizons 96 --backbones dlinear
    .venv/bin/python benchmarks/forecast_pir.py --from-json a.json b.json   # one table from several runs

Target: average MSE change <= -5 % per backbone over the horizons, and no
cell where the revised MSE is worse than the backbone's by more than seed
noise. Reference numbers are printed only for ETTh1, whose they are.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import environment, load_note, pin_threads, progress, table, write_json  # noqa: E402

# reference numbers for ETTh1 only (../shared/data/README.md; test MSE, look-back 96)
ETTH1_TSLIB_HERE = {("dlinear", 96): 0.396, ("dlinear", 192): 0.445, ("dlinear", 336): 0.487, ("dlinear", 720): 0.513,
                    ("patchtst", 96): 0.384}
ETTH1_PUBLISHED = {("dlinear", 96): 0.386, ("dlinear", 192): 0.437, ("dlinear", 336): 0.481, ("dlinear", 720): 0.519,
                   ("patchtst", 96): 0.414}


def _pir_overrides(items):
    from training.forecasting.cli import _pir_overrides as parse

    return parse(items)


def run_cell(prep, name: str, seed: int, args, log) -> dict:
    from training.forecasting.pipeline import GuardConfig, fit_pipeline
    from training.forecasting.train import default_fit, default_pir_fit

    epochs = args.dlinear_epochs if name == "dlinear" else args.patchtst_epochs
    bfit = dataclasses.replace(default_fit(name), epochs=epochs, seed=seed)
    pfit = dataclasses.replace(default_pir_fit(), epochs=args.pir_epochs, seed=seed)
    pir_config = {"gates": args.gates, **_pir_overrides(args.pir_set)}
    guard = GuardConfig(blocks=args.guard_blocks, t_min=args.guard_t, enabled=not args.no_guard)
    run = fit_pipeline(prep, name, bfit, pir_config=pir_config, pir_fit=pfit, calibration=args.calibration,
                       top_ks=tuple(args.top_k), guard=guard, parts=tuple(args.parts), log=log)
    t = run.test
    return {"horizon": prep.pred_len, "backbone": name, "seed": seed, "base": t["base"], "pir": t["pir"],
            "pir_unguarded": t["pir_unguarded"], "delta": t["delta"], "top_k": t["top_k"], "parts": t["parts"],
            "k_scores": run.k_scores,
            "guard": run.guard.to_json(), "calibration": run.summary()["calibration"],
            "backbone_fit": {"best_epoch": run.backbone_fit.best_epoch, "epochs": run.backbone_fit.epochs_run,
                             "seconds": run.backbone_fit.seconds},
            "pir_fit": {"best_epoch": run.pir_fit.best_epoch, "epochs": run.pir_fit.epochs_run}}


def pct(a: float, b: float) -> float:
    return 100.0 * (a - b) / b


def report(results: list[dict], dataset: str) -> None:
    import numpy as np

    cells: dict[tuple[str, int], list[dict]] = {}
    for r in results:
        cells.setdefault((r["backbone"], r["horizon"]), []).append(r)
    rows = []
    per_backbone: dict[str, list[float]] = {}
    worse = []
    for (name, h), rs in sorted(cells.items()):
        base = np.array([r["base"]["mse"] for r in rs])
        rev = np.array([r["pir"]["mse"] for r in rs])
        raw = np.array([r["pir_unguarded"]["mse"] for r in rs])
        change = np.array([pct(a, b) for a, b in zip(rev, base)])
        noise = float(np.std([pct(b, base.mean()) for b in base], ddof=1)) if len(rs) > 1 else float("nan")
        kept = [int(np.sum(r["guard"]["keep"])) for r in rs]
        total = int(np.size(rs[0]["guard"]["keep"]))
        per_backbone.setdefault(name, []).append(float(change.mean()))
        if change.mean() > 0 and not (len(rs) > 1 and change.mean() <= noise):
            worse.append(f"{name}/{h}")
        ref = (f"{ETTH1_TSLIB_HERE.get((name, h), float('nan')):.3f} / {ETTH1_PUBLISHED.get((name, h), float('nan')):.3f}"
               if dataset.lower() == "etth1" else "-")
        rows.append([name, h, len(rs), base.mean(), rev.mean(),
                     f"{change.mean():+.2f}% ± {change.std(ddof=1) if len(rs) > 1 else 0:.2f}",
                     f"{np.mean([pct(a, b) for a, b in zip(raw, base)]):+.2f}%", f"{noise:.2f}%",
                     f"{'/'.join(map(str, kept))} of {total}",
                     "/".join(f"{r['top_k']}{'' if 'local' in r.get('parts', ['local']) else 'g'}" for r in rs),
                     np.mean([r["delta"]["r2"] for r in rs]), ref])
    headers = ["backbone", "H", "seeds", "MSE base", "MSE +PIR", "Δ guarded", "Δ unguarded", "seed sd base",
               "guard kept (C x blocks)", "K (g: global only)", "R² δ", "ref MSE TSLib here / published" if dataset.lower() == "etth1"
               else "ref"]
    print(table(headers, rows, digits=4))
    for name, changes in per_backbone.items():
        avg = sum(changes) / len(changes)
        print(f"{name} + PIR on {dataset}: mean MSE change {avg:+.2f}% over {len(changes)} horizons "
              f"(target <= -5%: {'met' if avg <= -5 else 'NOT met'})")
    print(f"cells worse than the backbone beyond seed noise: {worse or 'none'}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=None, help="CSV or dataset description .json (default ../shared/data/ETTh1.csv)")
    ap.add_argument("--name", default=None, help="dataset name (default: the description's, or the file stem)")
    ap.add_argument("--horizons", type=int, nargs="+", default=[96, 192, 336, 720])
    ap.add_argument("--backbones", nargs="+", default=["dlinear", "patchtst"])
    ap.add_argument("--seeds", type=int, nargs="+", default=[2021])
    ap.add_argument("--lookback", type=int, default=96)
    ap.add_argument("--dlinear-epochs", type=int, default=10, help="budget: backbone epoch cap")
    ap.add_argument("--patchtst-epochs", type=int, default=10, help="budget: backbone epoch cap")
    ap.add_argument("--pir-epochs", type=int, default=6, help="budget: PIR epoch cap per K")
    ap.add_argument("--calibration", default="holdout", choices=["holdout", "crossfit", "insample"])
    ap.add_argument("--top-k", type=int, nargs="+", default=[10, 20, 50], help="K grid, chosen on the check segment")
    ap.add_argument("--gates", default="paper", choices=["paper", "per_step"])
    ap.add_argument("--pir-set", action="append", default=[], metavar="KEY=VALUE",
                    help="any PIRConfig field, e.g. d_model=64 (sizes), local_input_window=true")
    ap.add_argument("--parts", nargs="+", default=["full", "global_only"],
                    choices=["full", "global_only", "local_only"],
                    help="PIR's revisions to try (full = local + global, the paper), chosen on the check segment")
    ap.add_argument("--no-guard", action="store_true")
    ap.add_argument("--guard-t", type=float, default=1.0)
    ap.add_argument("--guard-blocks", type=int, default=4)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default="forecast_pir", help="name of the JSON written under artifacts/benchmarks")
    ap.add_argument("--from-json", nargs="+", help="print one table from saved runs instead of running")
    args = ap.parse_args()

    if args.from_json:
        payloads = [json.loads(Path(p).read_text()) for p in args.from_json]
        report([r for p in payloads for r in p["results"]], payloads[0]["dataset"])
        return

    pin_threads(args.threads)
    import torch

    torch.set_num_threads(args.threads)
    from forecasting.dataset import DatasetSpec
    from training.forecasting.data import ETTH1, load_spec, prepare

    data = args.data or str(ETTH1)
    spec = DatasetSpec.from_json(data) if data.endswith(".json") else DatasetSpec.for_csv(data, args.name)
    series = load_spec(spec)
    started = time.perf_counter()
    results: list[dict] = []
    payload = {"dataset": spec.name, "spec": spec.to_dict(), "args": vars(args), "results": results}
    for seed in args.seeds:
        for h in args.horizons:
            prep = prepare(series, args.lookback, h)
            for name in args.backbones:
                tag = f"{spec.name} seed {seed} H={h} {name}"
                r = run_cell(prep, name, seed, args, log=lambda m, tag=tag: progress(f"{tag} {m}"))
                results.append(r)
                progress(f"{tag}: MSE {r['base']['mse']:.4f} -> {r['pir']['mse']:.4f} "
                         f"({pct(r['pir']['mse'], r['base']['mse']):+.2f}%, unguarded "
                         f"{pct(r['pir_unguarded']['mse'], r['base']['mse']):+.2f}%), K={r['top_k']}, "
                         f"kept {int(sum(map(sum, r['guard']['keep'])))} cells, R2(δ) {r['delta']['r2']:.3f}; "
                         f"{time.perf_counter() - started:.0f}s so far")
                payload["env"] = environment(args.threads)
                write_json(args.out, payload)  # after every cell: a partial run keeps what it measured
    report(results, spec.name)
    print(f"settings: look-back {args.lookback}, calibration {args.calibration}, K grid {args.top_k}, parts "
          f"{args.parts}, gates {args.gates}, "
          f"guard {'off' if args.no_guard else f't<=-{args.guard_t:g}, {args.guard_blocks} blocks'}; DLinear <= "
          f"{args.dlinear_epochs} epochs, PatchTST <= {args.patchtst_epochs} epochs (authors' optimiser settings), "
          f"PIR <= {args.pir_epochs} epochs per K; seeds {args.seeds}; {args.threads} threads; "
          f"total {time.perf_counter() - started:.0f}s")
    print(load_note())
    print(f"wrote {write_json(args.out, payload)}")


if __name__ == "__main__":
    main()
