"""`recast abtest ...` subcommands (registered by recast/cli.py).

    recast abtest validate [--config F] [--against OLD.yaml]   # check the experiments file (and a ramp)
    recast abtest assign USER [USER...]                        # which experiments/variants/model a user gets
    recast abtest simulate [--experiment E] [--units N] ...     # SIMULATED events for the demo -> data/abtest/E/
    recast abtest report EXPERIMENT [--data DIR] [--out DIR]    # HTML + JSON readout (--from-kafka: the topics)
    recast abtest power --mean M --sd S [--lift 0.05]           # users per arm for a lift; --users N: MDE and power
    recast abtest power --experiment E [--data DIR]             # the same from logged events, per metric (CUPED included)
    recast abtest holdout --data DIR [--start ISO] [--out DIR]  # everything launched vs the global holdout
"""

from __future__ import annotations

import argparse
import json
import math
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
    from abtest.analysis import json_safe, readout_from_dir
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
    _print(json_safe({
        "html": str(html_path), "json": str(json_path), "valid": r.valid, "units": r.units,
        "srm_p_value": r.srm["p_value"], "summary": r.summary, "seconds": round(time.perf_counter() - started, 2),
        "verdicts": [{"metric": v.metric, "variant": v.variant, "verdict": v.verdict, "headline": v.headline, "mde": v.mde,
                      "users_more_per_arm": v.users_more_per_arm} for v in r.verdicts],
        "metrics": [
            {"metric": c.metric, "variant": c.variant, "role": c.role, "rel_lift": c.rel_lift, "ci": list(c.rel_ci),
             "p_adjusted": c.p_adjusted if c.role == "metric" else c.p_value, "mde": c.mde, "decision": c.decision,
             "status": c.status, "reasons": c.reasons}
            for c in r.comparisons
        ],
    }))


def cmd_power(args: argparse.Namespace, s) -> None:
    """Users per arm for a relative lift (and the MDE/power at --users), from given moments or logged events."""
    from abtest import power

    kw = dict(alpha=args.alpha)
    if args.mean is not None:
        if args.sd is None or args.sd <= 0 or args.mean == 0 or args.lift == 0:
            raise SystemExit("--mean needs --sd > 0 (the per-user standard deviation of the metric); mean and --lift must be non-zero")
        out: dict[str, Any] = {
            "lift": args.lift, "alpha": args.alpha, "power": args.power, "variance_reduction": args.variance_reduction,
            "users_per_arm": math.ceil(power.sample_size_per_arm(args.mean, args.sd, args.lift, power=args.power,
                                                                 variance_reduction=args.variance_reduction, **kw)),
        }
        if args.users:
            out["at_users_per_arm"] = args.users
            out["mde"] = power.minimum_detectable_effect(args.mean, args.sd, args.users, power=args.power,
                                                         variance_reduction=args.variance_reduction, **kw)
            out["power_at_lift"] = power.power_at(args.mean, args.sd, args.lift, args.users, variance_reduction=args.variance_reduction, **kw)
        _print(out)
        return
    if not args.experiment:
        raise SystemExit("give --mean and --sd, or --experiment (with --data) to plan from logged events")
    from abtest.analysis import json_safe, readout_from_dir

    cfg = _config(args, s)
    _, e = cfg.find(args.experiment)
    e.analysis = e.analysis.model_copy(update={"target_lift": args.lift, "power": args.power, "alpha": args.alpha})
    data = Path(args.data) if args.data else s.path(s.abtest.data_dir) / args.experiment
    r = readout_from_dir(cfg, args.experiment, data, timeline=False)
    _print(json_safe({
        "experiment": args.experiment, "lift": args.lift, "alpha": args.alpha, "power": args.power, "units": r.units,
        "metrics": [
            {"metric": c.metric, "variant": c.variant, "cuped": c.cuped, "variance_reduction": c.variance_reduction,
             "mde_now": c.mde, "users_needed_per_arm": round(c.users_needed_per_arm) if math.isfinite(c.users_needed_per_arm) else None,
             "users_more_per_arm": c.users_more_per_arm}
            for c in r.comparisons
        ],
    }))


def cmd_holdout(args: argparse.Namespace, s) -> None:
    from datetime import datetime

    from abtest.analysis import json_safe
    from abtest.events import scan_events
    from abtest.holdout import NAME, analyze_holdout
    from abtest.report import write_report

    cfg = _config(args, s)
    data = Path(args.data)
    sim_path = data / "simulation.json"
    simulation = json.loads(sim_path.read_text()) if sim_path.exists() else None
    start = datetime.fromisoformat(args.start) if args.start else None
    if start is None and simulation and simulation.get("start"):
        start = datetime.fromisoformat(simulation["start"])
    exposures, outcomes = scan_events(data)
    r = analyze_holdout(cfg, exposures, outcomes, start=start, timeline=not args.no_timeline,
                        simulation={"simulated": True, "label": simulation["label"]} if simulation else None)
    html_path, json_path = write_report(r, Path(args.out) if args.out else s.path(s.abtest.reports_dir) / NAME)
    _print(json_safe({"html": str(html_path), "json": str(json_path), "valid": r.valid, "units": r.units, "summary": r.summary,
                      "metrics": [{"metric": c.metric, "rel_lift": c.rel_lift, "ci": list(c.rel_ci), "decision": c.decision}
                                  for c in r.comparisons]}))


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add this area's subcommands; commands import their modules lazily."""
    p = subparsers.add_parser("abtest", help="A/B experiments: validate config, assign, simulate, report, power, holdout",
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

    pw = sub.add_parser("power", help="power / minimum detectable effect: users per arm for a relative lift",
                        description="Users per arm to detect a relative --lift with the readout's test (Welch, two-sided), "
                                    "from a metric's mean and per-user sd, or per metric from an experiment's logged events "
                                    "(CUPED variance reduction included). --users N adds the MDE and the power at N users per arm.")
    common(pw)
    pw.add_argument("--lift", type=float, default=0.05, help="relative effect to detect (0.05 = +-5%%)")
    pw.add_argument("--alpha", type=float, default=0.05)
    pw.add_argument("--power", type=float, default=0.8)
    pw.add_argument("--mean", type=float, help="control mean of the metric (per user)")
    pw.add_argument("--sd", type=float, help="per-user standard deviation of the metric")
    pw.add_argument("--variance-reduction", type=float, default=0.0, help="CUPED variance reduction to assume (0..1)")
    pw.add_argument("--users", type=int, help="users per arm: also print the MDE and the power there")
    pw.add_argument("--experiment", help="plan from this experiment's logged events instead of --mean/--sd")
    pw.add_argument("--data", help="events folder (default: settings.abtest.data_dir/EXPERIMENT)")
    pw.set_defaults(func=cmd_power)

    h = sub.add_parser("holdout", help="readout of everything launched against the global holdout (cumulative impact)")
    common(h)
    h.add_argument("--data", required=True, help="events folder with all logged requests (holdout users included)")
    h.add_argument("--start", help="start of the readout window (ISO time; default: the simulation's start or the first request)")
    h.add_argument("--out", help="report folder (default: settings.abtest.reports_dir/global_holdout)")
    h.add_argument("--no-timeline", action="store_true")
    h.set_defaults(func=cmd_holdout)
