"""``recast``: one command-line entry point for the whole system.

    recast demo                       # everything below, end to end, on local defaults
    recast features build             # a dataset (MovieLens-100K by default, or --dataset NAME|FILE.yaml)
                                      #   -> polars features -> parquet + Feast
    recast train --model dlf          # TorchRec training (add --nproc 2 for two gloo ranks)
    recast export --model dlf         # ONNX + parity check + Triton repositories (new version)
    recast stack up|down|status       # local Kafka broker + tritonserver + scoring gateway
    recast serve                      # the gateway in the foreground
    recast score USER ITEM [ITEM...]  # ask the running gateway
    recast stream ...                 # Kafka feature stream: replay, process, labels, status
    recast abtest ...                 # experiments: validate, assign, simulate, report
    recast forecast ...               # PIR forecast revision: train, serve, plot
    recast jobs ...                   # offline batch jobs (paper experiments): list, run, status, report
    recast loop                       # continuous training: retrain, register a candidate, guarded rollout

Settings: defaults, then recast.yaml (or $RECAST_CONFIG), then RECAST_* environment
variables, e.g. RECAST_GATEWAY__PORT=9000 (see recast/settings.py).
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from recast.settings import Settings, get_settings

MODELS = ("lr", "deepfm", "dcnv2", "finalmlp", "dlf", "dlf_branch_softmax", "dmoe")


def _parse_set(values: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in values:
        if "=" not in item:
            raise SystemExit(f"--set expects key=value, got {item!r}")
        key, raw = item.split("=", 1)
        try:
            out[key] = json.loads(raw)
        except json.JSONDecodeError:
            out[key] = raw
    return out


def _print(obj: Any) -> None:
    print(json.dumps(obj, indent=2, default=str))


def cmd_features(args: argparse.Namespace, s: Settings) -> None:
    from recast.workflow import build_features

    _print(build_features(s, force=args.force, dataset=args.dataset))


def cmd_train(args: argparse.Namespace, s: Settings) -> None:
    from recast.workflow import train_model

    overrides = _parse_set(args.set)
    hparams = {k[len("hp."):]: v for k, v in overrides.items() if k.startswith("hp.")}
    overrides = {k: v for k, v in overrides.items() if not k.startswith("hp.")}
    if hparams:
        overrides["hparams"] = hparams
    if args.epochs is not None:
        overrides["epochs"] = args.epochs
    _print(train_model(s, args.model, overrides, nproc=args.nproc, resume=not args.restart))


def cmd_export(args: argparse.Namespace, s: Settings) -> None:
    from recast.workflow import export_model

    _print(export_model(s, args.model, args.version))


def cmd_stack(args: argparse.Namespace, s: Settings) -> None:
    from recast import stack

    if args.action == "up":
        _print(stack.stack_up(s, args.models or None))
    elif args.action == "down":
        _print(stack.stack_down(s))
    else:
        _print(stack.stack_status(s))


def cmd_serve(args: argparse.Namespace, s: Settings) -> None:
    import uvicorn

    uvicorn.run("serving.gateway:app_factory", factory=True, host=s.gateway.host, port=args.port or s.gateway.port,
                workers=s.gateway.workers)


def cmd_score(args: argparse.Namespace, s: Settings) -> None:
    import httpx

    body = {"user_id": args.user, "item_ids": args.items}
    if args.model:
        body["model"] = args.model
    r = httpx.post(f"http://{s.gateway.host}:{s.gateway.port}/v1/score", json=body, timeout=10)
    _print(r.json())
    if r.status_code >= 400:
        sys.exit(1)


def cmd_demo(args: argparse.Namespace, s: Settings) -> None:
    from recast.demo import run_demo

    run_demo(s, models=args.models, epochs=args.epochs, keep_running=not args.stop)


def cmd_loop(args: argparse.Namespace, s: Settings) -> None:
    from recast.loop import guarded_rollout, run_cycle

    if args.check_consistency:
        from recast.consistency import run_check

        _print(run_check(s))
        return
    if args.rollout_only:
        _print(guarded_rollout(s))
        return
    scratch = True if args.from_scratch else False if args.incremental else None
    _print(run_cycle(s, from_scratch=scratch, rollout=args.rollout))


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="recast", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    f = sub.add_parser("features", help="build a dataset's features, the parquet offline store and the Feast repo")
    f.add_argument("action", choices=["build"])
    f.add_argument("--dataset", metavar="NAME|FILE",
                   help="movielens-100k, criteo, ratings-csv, or a dataset description YAML "
                        "(see features/dataset.py); default: settings.data.dataset")
    f.add_argument("--force", action="store_true", help="rebuild even when outputs are up to date")
    f.set_defaults(func=cmd_features)

    t = sub.add_parser("train", help="train a CTR model with TorchRec (resumes from its checkpoint)")
    t.add_argument("--model", choices=MODELS, default=None, help="default: settings.train.model")
    t.add_argument("--epochs", type=int, help="maximum epochs (early stopping on validation AUC may stop sooner)")
    t.add_argument("--nproc", type=int, default=1, help="gloo ranks (processes) sharding the embedding tables")
    t.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="TrainConfig field (batch_size=1024) or model hyperparameter (hp.num_layers=2)")
    t.add_argument("--restart", action="store_true", help="ignore an existing checkpoint")
    t.set_defaults(func=cmd_train)

    e = sub.add_parser("export", help="export the best checkpoint to ONNX and publish it to the Triton repositories")
    e.add_argument("--model", choices=MODELS, default=None)
    e.add_argument("--version", type=int, help="version number (default: next free)")
    e.set_defaults(func=cmd_export)

    st = sub.add_parser("stack", help="start/stop/inspect the local broker, tritonserver and gateway (up: supervised, "
                                      "restarted when they crash; status: model health and restarts)")
    st.add_argument("action", choices=["up", "down", "status"])
    st.add_argument("--models", nargs="*", help="models that must be ready before `up` returns")
    st.set_defaults(func=cmd_stack)

    sv = sub.add_parser("serve", help="run the scoring gateway in the foreground")
    sv.add_argument("--port", type=int)
    sv.set_defaults(func=cmd_serve)

    sc = sub.add_parser("score", help="score candidate items for a user through the running gateway")
    sc.add_argument("user")
    sc.add_argument("items", nargs="+")
    sc.add_argument("--model")
    sc.set_defaults(func=cmd_score)

    d = sub.add_parser("demo", help="fetch data, build features, train, export, start the stack, score sample users")
    d.add_argument("--models", nargs="+", choices=MODELS, default=None, help="models to train and serve (default: dlf dmoe)")
    d.add_argument("--epochs", type=int, default=None)
    d.add_argument("--stop", action="store_true", help="stop the stack at the end")
    d.set_defaults(func=cmd_demo)

    # each area registers its own subcommands (recast stream ..., recast abtest ...)
    lp = sub.add_parser("loop", help="continuous training: retrain on labelled exposures + replayed history, register a "
                                     "candidate (no traffic), then promote or roll it back by a guarded rollout",
                        description="One cycle of the loop (recast/loop.py; settings: the `loop` section). The "
                                    "decisions go to <loop.dir>/decisions.jsonl and report.md.")
    how = lp.add_mutually_exclusive_group()
    how.add_argument("--from-scratch", action="store_true", help="train from scratch (default: only when no checkpoint "
                                                                 "exists or on the loop.scratch_every schedule)")
    how.add_argument("--incremental", action="store_true", help="continue the last checkpoint (fail if none)")
    lp.add_argument("--rollout", choices=["simulate", "none"], help="default: loop.rollout; none leaves the candidate "
                                                                    "registered without traffic")
    lp.add_argument("--rollout-only", action="store_true", help="decide on the pending candidate, train nothing")
    lp.add_argument("--check-consistency", action="store_true",
                    help="compare the features the gateway logged with sampled exposures against the training-set "
                         "builder's, per feature; write the mismatch rates and their Prometheus gauges")
    lp.set_defaults(func=cmd_loop)

    from abtest.cli import register as register_abtest
    from jobs.cli import register as register_jobs
    from streaming.cli import register as register_streaming
    from forecasting.cli import register as register_forecast

    register_streaming(sub)
    register_abtest(sub)
    register_forecast(sub)
    register_jobs(sub)
    return p


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    settings = get_settings()
    if getattr(args, "model", None) is None and args.command in ("train", "export"):
        args.model = settings.train.model
    try:
        args.func(args, settings)
    except (FileNotFoundError, RuntimeError, ValueError, KeyError) as exc:
        print(f"recast {args.command}: {exc}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
