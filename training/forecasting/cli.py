"""`recast forecast train` and `recast forecast export`: the training side of forecasting (torch).

    recast forecast train [--series victoria] [--backbone dlinear]   # backbone + PIR (+ guard), then export
    recast forecast export                                           # checkpoint.pt -> ONNX bundle (parity checked)

The runtime CLI (forecasting/cli.py) forwards these two actions here unparsed,
so the torch-free runtime never imports this package. Settings: the
``forecast`` section of recast/settings.py (RECAST_FORECAST__...).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any


def _print(obj: Any) -> None:
    print(json.dumps(obj, indent=2, default=str))


def _bundle(args: argparse.Namespace, s) -> Path:
    return Path(args.bundle) if getattr(args, "bundle", None) else s.path(s.forecast.bundle_dir)


def cmd_train(args: argparse.Namespace, s) -> None:
    from training.forecasting.export import train_bundle

    f = s.forecast
    log = (lambda m: print(m, file=sys.stderr, flush=True)) if not args.quiet else None
    _print(train_bundle(args.series or f.series, args.backbone or f.backbone, args.lookback or f.seq_len,
                        args.horizon or f.pred_len, f.epochs if args.epochs is None else args.epochs,
                        f.pir_epochs if args.pir_epochs is None else args.pir_epochs, _bundle(args, s), seed=f.seed,
                        store_capacity=f.store_capacity, threads=args.threads, log=log,
                        calibration=args.calibration or f.calibration, top_ks=tuple(args.top_k or f.top_ks),
                        pir_config=_pir_overrides(args.pir_set), parts=tuple(args.parts or f.pir_parts)))


def _pir_overrides(items: list[str]) -> dict[str, Any]:
    """``KEY=VALUE`` pairs of PIRConfig (d_model=64, use_local=false, gates=per_step, ...)."""
    from dataclasses import fields

    from training.forecasting.pir import PIRConfig

    known = {f.name: f.type for f in fields(PIRConfig)}
    out: dict[str, Any] = {}
    for item in items or []:
        key, _, raw = item.partition("=")
        if key not in known or not raw:
            raise ValueError(f"--pir-set expects KEY=VALUE with KEY among {', '.join(sorted(known))}, got {item!r}")
        try:
            out[key] = json.loads(raw)
        except json.JSONDecodeError:
            out[key] = raw
    return out


def cmd_export(args: argparse.Namespace, s) -> None:
    from training.forecasting.export import export_checkpoint

    out = _bundle(args, s)
    meta = export_checkpoint(Path(args.checkpoint) if args.checkpoint else out / "checkpoint.pt", out,
                             s.forecast.store_capacity)
    _print({"bundle": str(out), "parity": meta["parity"], "store": meta["store"], "guard": meta.get("guard")})


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="recast forecast", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    t = sub.add_parser("train", help="train a backbone (DLinear/PatchTST) and PIR, guard it, export the bundle")
    t.add_argument("--series", help="victoria, etth1/etth2/ettm1/ettm2, generatedN, a CSV path or a dataset "
                                    "description (.json) (default forecast.series)")
    t.add_argument("--backbone", choices=["dlinear", "patchtst"])
    t.add_argument("--lookback", type=int)
    t.add_argument("--horizon", type=int)
    t.add_argument("--epochs", type=int, help="backbone epochs (early stopping may stop sooner)")
    t.add_argument("--pir-epochs", type=int)
    t.add_argument("--calibration", choices=["holdout", "crossfit", "insample"],
                   help="where PIR learns the backbone's errors (default forecast.calibration)")
    t.add_argument("--top-k", type=int, nargs="+", help="PIR's K, chosen on held-out windows (default forecast.top_ks)")
    t.add_argument("--parts", nargs="+", choices=["full", "global_only", "local_only"],
                   help="PIR's revisions to try, chosen on held-out windows (default forecast.pir_parts)")
    t.add_argument("--pir-set", action="append", default=[], metavar="KEY=VALUE",
                   help="a PIR setting (training/forecasting/pir.py PIRConfig), e.g. d_model=64, use_local=false")
    t.add_argument("--threads", type=int, default=1)
    t.add_argument("--bundle", help="output folder (default forecast.bundle_dir)")
    t.add_argument("--quiet", action="store_true")
    t.set_defaults(func=cmd_train)

    e = sub.add_parser("export", help="export checkpoint.pt to ONNX (backbone + PIR), parity checked, + store")
    e.add_argument("--checkpoint", help="default <bundle>/checkpoint.pt")
    e.add_argument("--bundle")
    e.set_defaults(func=cmd_export)
    return p


def main(argv: list[str], settings=None) -> None:
    from recast.settings import get_settings

    args = build_parser().parse_args(argv)
    args.func(args, settings or get_settings())
