"""`recast forecast ...` subcommands (registered by recast/cli.py).

The runtime's commands (topics, replay, serve, plot) live here; ``train`` and
``export`` belong to the training side (training/forecasting/cli.py, torch) and
are forwarded to it unparsed, so this module never imports training.

    recast forecast train [--series victoria] [--backbone dlinear]   # backbone + PIR, then export (training side, torch)
    recast forecast export                                           # checkpoint.pt -> ONNX bundle (training side)
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


def cmd_training(args: argparse.Namespace, s) -> None:
    """``train`` and ``export`` are training's commands (torch): forwarded to training/forecasting/cli.py."""
    import importlib

    try:
        training_cli = importlib.import_module("training.forecasting.cli")
    except ImportError as exc:
        raise RuntimeError(f"`recast forecast {args.forecast_command}` needs the training side (torch): {exc}")
    training_cli.main([args.forecast_command, *args.rest], s)


def cmd_topics(args: argparse.Namespace, s) -> None:
    from forecasting.service import ensure_forecast_topics

    _print({"bootstrap": s.kafka.bootstrap_servers, "topics": ensure_forecast_topics(s)})


def cmd_replay(args: argparse.Namespace, s) -> None:
    from forecasting.replay import replay
    from forecasting.service import ensure_forecast_topics

    ensure_forecast_topics(s)
    _print(replay(s, args.series or "victoria", start=args.start, limit=args.limit, stride=args.stride,
                  speed=args.speed))


def cmd_serve(args: argparse.Namespace, s) -> None:
    from forecasting.service import serve

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    logging.getLogger("kafka").setLevel(logging.WARNING)
    _print(serve(s, metrics_port=args.metrics_port, until_caught_up=args.until_caught_up,
                 idle_exit_s=args.idle_exit, max_forecasts=args.max_forecasts))


def cmd_plot(args: argparse.Namespace, s) -> None:
    from forecasting.plot import plot_from_kafka

    _print(plot_from_kafka(s, Path(args.out) if args.out else None, n=args.n, series=args.series))


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the forecasting subcommands; commands import their modules lazily."""
    p = subparsers.add_parser("forecast", help="forecasting with PIR: train, export, replay, serve, plot",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="forecast_command", required=True, metavar="ACTION")

    for action, text in (("train", "train a backbone (DLinear/PatchTST) and PIR, then export the bundle (torch)"),
                         ("export", "export checkpoint.pt to the ONNX bundle, parity checked (torch)")):
        t = sub.add_parser(action, help=text, add_help=False, prefix_chars="\0")  # every argument is forwarded
        t.add_argument("rest", nargs=argparse.REMAINDER, help="see `recast forecast %s --help`" % action)
        t.set_defaults(func=cmd_training)

    tp = sub.add_parser("topics", help="create the forecasts, actuals and revised topics")
    tp.set_defaults(func=cmd_topics)

    r = sub.add_parser("replay", help="publish a real series as actuals + base forecasts (the bundle's base.onnx)")
    r.add_argument("--series", help="victoria (default), a CSV path or a dataset description (.json), in the bundle's channel layout")
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
