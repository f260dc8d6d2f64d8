"""`recast abtest ...` subcommands (registered by recast/cli.py).

    recast abtest validate [--config F] [--against OLD.yaml]   # check the experiments file (and a ramp)
    recast abtest assign USER [USER...]                        # which experiments/variants/model a user gets
    recast abtest simulate [--experiment E] [--units N] ...     # SIMULATED events for the demo -> data/abtest/E/
    recast abtest report EXPERIMENT [--data DIR] [--out DIR]    # HTML + JSON readout (--from-kafka: the topics)
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any


def _print(obj: Any) -> None:
    print(json.dumps(obj, indent=2, default=str))


def _config(args: argparse.Namespace, s):
    from abtest.config import load_config
    from abtest.routing import config_from_settings

    return load_config(args.config) if getattr(args, "config", None) else config_from_settings(s)


def cmd_validate(args: argparse.Namespace, s) -> None:
    from abtest.config import check_ramp, load_config

    cfg = _config(args, s)
    out: dict[str, Any] = {
        "ok": True,
        "holdout": cfg.holdout.fraction,
        "layers": {
            layer.name: [
                {"experiment": e.name, "buckets": list(e.buckets), "traffic": e.traffic, "enabled": e.enabled,
                 "variants": {v.name: round(w, 4) for v, w in zip(e.variants, e.weights)}}
                for e in layer.experiments
            ]
            for layer in cfg.layers
        },
    }
    if args.against:
        problems = check_ramp(load_config(args.against), cfg)
        out["ramp_problems"] = problems
        out["ok"] = not problems
    _print(out)
    if not out["ok"]:
        raise SystemExit(1)


def cmd_assign(args: argparse.Namespace, s) -> None:
    from abtest.routing import Router

    router = Router(_config(args, s), s.gateway.model_name)
    _print([
        {"user": u, "model": d.model, "holdout": d.holdout, "experiments": d.public()}
        for u in args.users
        for d in [router.route(u)]
    ])


def cmd_simulate(args: argparse.Namespace, s) -> None:
    from abtest.events import ParquetSink
    from abtest.simulator import Effect, MarketplaceSimulator, SimulationConfig

    cfg = _config(args, s)
    _, exp = cfg.find(args.experiment)
    variant = args.variant or next((v.name for v in exp.variants if v.name != exp.control), None)
    effects = {variant: Effect(ctr=args.ctr_lift, purchase=args.purchase_lift)} if variant else {}
    sim_cfg = SimulationConfig(
        experiment=exp.name, n_units=args.units, days=args.days, pre_days=args.pre_days, effects=effects,
        srm_drop=args.srm_drop, seed=args.seed, sessions_per_day=args.sessions_per_day,
        features_dir=s.path(s.data.features_dir),
    )
    out = Path(args.out) if args.out else s.path(s.abtest.data_dir) / exp.name
    started = time.perf_counter()
    sim = MarketplaceSimulator(sim_cfg, cfg)
    sink = ParquetSink(out)
    if args.kafka:
        if args.mode != "driven":
            raise ValueError("--kafka needs --mode driven (exposure events carry the shown items)")
        from abtest.events import FanoutSink
        from abtest.stream import KafkaEventSink

        sink = FanoutSink(sink, KafkaEventSink(s))
    if args.mode == "direct":
        meta = sim.simulate_direct(sink)
    else:
        from abtest.driver import GatewayDriver, InProcessDriver, OracleRanker
        from abtest.routing import Router

        router = Router(cfg, s.gateway.model_name)
        if args.gateway:
            driver = GatewayDriver(args.gateway, router=router, gateway_routes=args.gateway_routes)
        else:
            models = {v.model or router.default_model for v in exp.variants} | {router.default_model}
            noise = {m: args.noise for m in models if m}
            for m in args.better_model or []:
                noise[m] = args.noise * 0.5
            driver = InProcessDriver(router, {m: OracleRanker(sim, n, seed=args.seed + i) for i, (m, n) in enumerate(sorted(noise.items()))})
        meta = sim.simulate_driven(driver, sink, max_requests=args.max_requests)
    meta["seconds"] = round(time.perf_counter() - started, 2)
    (out / "simulation.json").write_text(json.dumps(meta, indent=2, default=str))
    _print({"out": str(out), **{k: meta[k] for k in ("label", "mode", "experiment", "requests", "true_relative_lift", "seconds")}})


def cmd_report(args: argparse.Namespace, s) -> None:
    from abtest.analysis import readout_from_dir
    from abtest.report import write_report

    cfg = _config(args, s)
    data = Path(args.data) if args.data else s.path(s.abtest.data_dir) / args.experiment
    out = Path(args.out) if args.out else s.path(s.abtest.reports_dir) / args.experiment
    started = time.perf_counter()
    if args.from_kafka:
        from abtest.analysis import analyze
        from abtest.stream import read_stream

        exposures, outcomes = read_stream(s, cfg)
        r = analyze(cfg, args.experiment, exposures, outcomes, timeline=not args.no_timeline)
    else:
        r = readout_from_dir(cfg, args.experiment, data, timeline=not args.no_timeline)
    html_path, json_path = write_report(r, out)
    _print({
        "html": str(html_path), "json": str(json_path), "valid": r.valid, "units": r.units,
        "srm_p_value": r.srm["p_value"], "summary": r.summary, "seconds": round(time.perf_counter() - started, 2),
        "metrics": [
            {"metric": c.metric, "variant": c.variant, "rel_lift": round(c.rel_lift, 5),
             "ci": [round(x, 5) for x in c.rel_ci], "p_adjusted": c.p_adjusted, "decision": c.decision}
            for c in r.comparisons
        ],
    })


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add this area's subcommands; commands import their modules lazily."""
    p = subparsers.add_parser("abtest", help="A/B experiments: validate config, assign, simulate, report",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="abtest_command", required=True, metavar="ACTION")

    def common(q: argparse.ArgumentParser) -> None:
        q.add_argument("--config", help="experiments YAML (default: settings.abtest.config or abtest/experiments.yaml)")

    v = sub.add_parser("validate", help="validate the experiments file; --against OLD checks that a change only ramps")
    common(v)
    v.add_argument("--against", help="the config currently serving; fails if the change would move assigned units")
    v.set_defaults(func=cmd_validate)

    a = sub.add_parser("assign", help="experiments, variants and model for users")
    common(a)
    a.add_argument("users", nargs="+")
    a.set_defaults(func=cmd_assign)

    sm = sub.add_parser("simulate", help="SIMULATED marketplace events (exposures + outcomes) for an experiment")
    common(sm)
    sm.add_argument("--experiment", default="dlf_vs_dmoe")
    sm.add_argument("--units", type=int, default=100_000, help="simulated users (MovieLens users, then replicas)")
    sm.add_argument("--days", type=int, default=14)
    sm.add_argument("--pre-days", type=int, default=7, help="pre-period days (CUPED covariates)")
    sm.add_argument("--sessions-per-day", type=float, default=0.5)
    sm.add_argument("--variant", help="variant that gets the injected effect (default: the first non-control)")
    sm.add_argument("--ctr-lift", type=float, default=0.03, help="injected relative lift of the click probability")
    sm.add_argument("--purchase-lift", type=float, default=0.02, help="injected relative lift of P(purchase | click)")
    sm.add_argument("--srm-drop", type=float, default=0.0, help="drop this share of treatment units' exposures (shows SRM)")
    sm.add_argument("--seed", type=int, default=2026)
    sm.add_argument("--mode", choices=["direct", "driven"], default="direct",
                    help="direct: vectorised tables; driven: request by request through a driver (in-process or --gateway)")
    sm.add_argument("--gateway", help="driven mode through the running gateway at this URL (e.g. http://127.0.0.1:18080)")
    sm.add_argument("--gateway-routes", action="store_true", help="the gateway assigns variants itself (hook installed)")
    sm.add_argument("--noise", type=float, default=1.0, help="in-process rankers: noise around the true click logit")
    sm.add_argument("--better-model", action="append", help="in-process: this model ranks with half the noise")
    sm.add_argument("--max-requests", type=int, help="driven mode: stop after this many requests")
    sm.add_argument("--kafka", action="store_true", help="driven mode: also publish ExposureV1/OutcomeV1 on the Kafka topics")
    sm.add_argument("--out", help="output folder (default: settings.abtest.data_dir/EXPERIMENT)")
    sm.set_defaults(func=cmd_simulate)

    r = sub.add_parser("report", help="HTML + JSON readout of an experiment from logged (or simulated) events")
    common(r)
    r.add_argument("experiment")
    r.add_argument("--data", help="events folder (default: settings.abtest.data_dir/EXPERIMENT)")
    r.add_argument("--out", help="report folder (default: settings.abtest.reports_dir/EXPERIMENT)")
    r.add_argument("--no-timeline", action="store_true", help="skip the cumulative-lift-over-time section")
    r.add_argument("--from-kafka", action="store_true", help="read exposures/outcomes from the Kafka topics instead of --data")
    r.set_defaults(func=cmd_report)
