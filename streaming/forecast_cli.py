"""`recast forecast ...` subcommands (registered by recast/cli.py).

    recast forecast train [--series victoria] [--backbone dlinear]   # backbone + PIR, then export (needs torch)
    recast forecast export                                           # checkpoint.pt -> ONNX bundle (parity checked)
    recast forecast topics                                           # create the forecast topics (idempotent)
    recast forecast replay [--limit N] [--stride S]                  # a real series as actuals + base forecasts
    recast forecast serve [--until-caught-up]                        # the PIR revision service (onnxruntime, no torch)
    recast forecast plot [--n 4]                                     # PNGs: actual vs base vs revised, with δ

Settings: the ``forecast`` section (recast/settings.py), e.g.
RECAST_FORECAST__BUNDLE_DIR, RECAST_FORECAST__PRED_LEN, RECAST_FORECAST__METRICS_PORT.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path
from typing import Any


def _print(obj: Any) -> None:
    print(json.dumps(obj, indent=2, default=str))


def _bundle(args: argparse.Namespace, s) -> Path:
    return Path(args.bundle) if getattr(args, "bundle", None) else s.path(s.forecast.bundle_dir)


def cmd_train(args: argparse.Namespace, s) -> None:
    import sys

    from training.forecasting.export import train_bundle

    f = s.forecast
    log = (lambda m: print(m, file=sys.stderr, flush=True)) if not args.quiet else None
    _print(train_bundle(args.series or f.series, args.backbone or f.backbone, args.lookback or f.seq_len,
                        args.horizon or f.pred_len, f.epochs if args.epochs is None else args.epochs,
                        f.pir_epochs if args.pir_epochs is None else args.pir_epochs, _bundle(args, s), seed=f.seed,
                        store_capacity=f.store_capacity, threads=args.threads, log=log))


def cmd_export(args: argparse.Namespace, s) -> None:
    from training.forecasting.export import export_checkpoint

    out = _bundle(args, s)
    meta = export_checkpoint(Path(args.checkpoint) if args.checkpoint else out / "checkpoint.pt", out,
                             s.forecast.store_capacity)
    _print({"bundle": str(out), "parity": meta["parity"], "store": meta["store"]})


def cmd_topics(args: argparse.Namespace, s) -> None:
    from streaming.forecast_service import ensure_forecast_topics

    _print({"bootstrap": s.kafka.bootstrap_servers, "topics": ensure_forecast_topics(s)})


def cmd_replay(args: argparse.Namespace, s) -> None:
    from streaming.forecast_replay import replay
    from streaming.forecast_service import ensure_forecast_topics

    ensure_forecast_topics(s)
    _print(replay(s, args.series or "victoria", start=args.start, limit=args.limit, stride=args.stride,
                  speed=args.speed))


def cmd_serve(args: argparse.Namespace, s) -> None:
    from streaming.forecast_service import serve

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    logging.getLogger("kafka").setLevel(logging.WARNING)
    _print(serve(s, metrics_port=args.metrics_port, until_caught_up=args.until_caught_up,
                 idle_exit_s=args.idle_exit, max_forecasts=args.max_forecasts))


def cmd_plot(args: argparse.Namespace, s) -> None:
    from streaming.forecast_plot import plot_from_kafka

    _print(plot_from_kafka(s, Path(args.out) if args.out else None, n=args.n, series=args.series))


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the forecasting subcommands; commands import their modules lazily."""
    p = subparsers.add_parser("forecast", help="forecasting with PIR: train, export, replay, serve, plot",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="forecast_command", required=True, metavar="ACTION")

    t = sub.add_parser("train", help="train a backbone (DLinear/PatchTST) and PIR, then export the bundle")
    t.add_argument("--series", help="victoria, etth1, generatedN or a CSV path (default forecast.series)")
    t.add_argument("--backbone", choices=["dlinear", "patchtst"])
    t.add_argument("--lookback", type=int)
    t.add_argument("--horizon", type=int)
    t.add_argument("--epochs", type=int, help="backbone epochs (early stopping may stop sooner)")
    t.add_argument("--pir-epochs", type=int)
    t.add_argument("--threads", type=int, default=1)
    t.add_argument("--bundle", help="output folder (default forecast.bundle_dir)")
    t.add_argument("--quiet", action="store_true")
    t.set_defaults(func=cmd_train)

    e = sub.add_parser("export", help="export checkpoint.pt to ONNX (backbone + PIR), parity checked, + store")
    e.add_argument("--checkpoint", help="default <bundle>/checkpoint.pt")
    e.add_argument("--bundle")
    e.set_defaults(func=cmd_export)

    tp = sub.add_parser("topics", help="create the forecasts, actuals and revised topics")
    tp.set_defaults(func=cmd_topics)

    r = sub.add_parser("replay", help="publish a real series as actuals + base forecasts (the bundle's base.onnx)")
    r.add_argument("--series", help="victoria (default) or a CSV path in the bundle's channel layout")
    r.add_argument("--start", type=int, help="first row (default: the test split's look-back)")
    r.add_argument("--limit", type=int, help="rows to replay")
    r.add_argument("--stride", type=int, default=1, help="a base forecast every S steps")
    r.add_argument("--speed", type=float, help="event-time seconds per wall second (default: as fast as possible)")
    r.set_defaults(func=cmd_replay)

    sv = sub.add_parser("serve", help="run the PIR revision service (Ctrl-C/SIGTERM stop it)")
    sv.add_argument("--metrics-port", type=int, help="Prometheus port (default forecast.metrics_port; 0: none)")
    sv.add_argument("--until-caught-up", action="store_true")
    sv.add_argument("--idle-exit", type=float, metavar="SECONDS")
    sv.add_argument("--max-forecasts", type=int)
    sv.set_defaults(func=cmd_serve)

    pl = sub.add_parser("plot", help="PNGs of actual vs base vs revised forecasts with δ (from the topics)")
    pl.add_argument("--out", help="folder (default forecast.plots_dir)")
    pl.add_argument("--n", type=int, default=4)
    pl.add_argument("--series")
    pl.set_defaults(func=cmd_plot)
