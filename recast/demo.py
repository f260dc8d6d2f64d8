"""``recast demo``: the main job end to end on local defaults.

fetch MovieLens-100K -> polars features + Feast -> train with TorchRec ->
ONNX export (parity-checked) -> local tritonserver + gateway -> score a
sample of real users (and one unknown user) over HTTP -> print the results.
"""

from __future__ import annotations

import contextlib
import io
import json
import time

import httpx

from recast import stack, workflow
from recast.settings import Settings


def _step(title: str) -> float:
    print(f"\n== {title}", flush=True)
    return time.perf_counter()


def _done(started: float, info: dict) -> None:
    skipped = " (up to date, skipped)" if info.get("skipped") else ""
    print(f"   done in {time.perf_counter() - started:.1f}s{skipped}", flush=True)


def _cli(settings: Settings, *argv: str) -> dict:
    """Run a `recast` subcommand in-process and return the JSON it prints."""
    from recast.cli import build_parser

    args = build_parser().parse_args(list(argv))
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        args.func(args, settings)
    text = out.getvalue()
    return json.loads(text[text.index("{"):]) if "{" in text else {}


def _print_readout(report: dict) -> None:
    print(f"   units {report.get('units')}; SRM p = {report.get('srm_p_value', float('nan')):.3g}; "
          f"{'valid' if report.get('valid') else 'INVALID (SRM)'}")
    for v in report.get("verdicts", []):
        print(f"   VERDICT {v['headline']}")
    for row in report.get("metrics", []):
        lift, ci, mde = row.get("rel_lift"), row.get("ci") or [None, None], row.get("mde")
        shown = "n/a" if lift is None else f"{lift:+.2%}"
        interval = "" if None in ci else f" CI [{ci[0]:+.2%}, {ci[1]:+.2%}]"
        detectable = "" if mde is None else f" (detectable: \u00b1{mde:.1%})"
        role = " (guardrail)" if row.get("role") == "guardrail" else ""
        print(f"   {row['metric']:>14} {row['variant']}{role}: lift {shown}{interval}{detectable} -> {row['decision']}")
    print(f"   report: {report.get('html')}")


def _abtest_demo(settings: Settings, url: str) -> None:
    """A direct-mode experiment large enough to detect the injected lifts (~70k users per arm, 14 days,
    CUPED over a 7-day pre-period), then a small run driven through the real gateway (the serving path:
    routing, exposure logging, Kafka), whose readout honestly says it has too few users."""
    exp = "dlf_vs_dmoe"
    data = settings.path(settings.abtest.data_dir)
    reports = settings.path(settings.abtest.reports_dir)
    sim = _cli(settings, "abtest", "simulate", "--mode", "direct", "--units", "340000", "--days", "14", "--pre-days", "7",
               "--out", str(data / f"{exp}_direct"))
    print(f"   direct: {sim.get('requests', 0):,} requests in {sim.get('seconds', 0)}s, injected lift "
          f"{sim.get('true_relative_lift', {})}")
    _print_readout(_cli(settings, "abtest", "report", exp, "--data", str(data / f"{exp}_direct"),
                        "--out", str(reports / f"{exp}_direct")))
    sim = _cli(settings, "abtest", "simulate", "--mode", "driven", "--gateway", url, "--gateway-routes",
               "--units", "400", "--days", "4", "--pre-days", "1", "--max-requests", "1500", "--kafka")
    print(f"   driven through the gateway: {sim.get('requests', 0):,} requests (a small run: the real serving path)")
    _print_readout(_cli(settings, "abtest", "report", sim.get("experiment", exp)))


def run_demo(settings: Settings, models: list[str] | None = None, epochs: int | None = None, keep_running: bool = True) -> None:
    models = models or ["dlf", "dmoe"]
    t = _step("1/9 features: MovieLens-100K -> parquet offline store -> Feast online store")
    info = workflow.build_features(settings)
    print(f"   {info['features_dir']}: {info['meta']}")
    _done(t, info)

    t = _step(f"2/9 train {', '.join(models)} with TorchRec (DistributedModelParallel, fused embedding optimizer)")
    overrides = {"epochs": epochs} if epochs else None
    results = {}
    for model in models:
        results[model] = result = workflow.train_model(settings, model, overrides)
        corr = f", expert correlation {result['test_expert_correlation']:.4f}" if "test_expert_correlation" in result else ""
        print(f"   {model}: best epoch {result['best_epoch']}: val AUC {result['val_auc']:.4f}; "
              f"test AUC {result['test_auc']:.4f}, logloss {result['test_logloss']:.4f}{corr}")
    _done(t, {"skipped": all(r.get("skipped") for r in results.values())})

    t = _step("3/9 export: ONNX + parity check + Triton model repositories")
    for model in models:
        exported = workflow.export_model(settings, model)
        print(f"   {model} v{exported['version']}: max |ONNX - PyTorch| = {exported['parity_max_abs_diff']:.2e} "
              f"on {exported['parity_rows']} rows; TensorRT: {exported['tensorrt']}")
    _done(t, {})

    t = _step("4/9 stack: Kafka-protocol broker + tritonserver + scoring gateway")
    status = stack.stack_up(settings, models)
    print(f"   triton {status['triton'].get('url', '')}  gateway {status['gateway']['url']}  (docs: {status['gateway']['url']}/docs)")
    _done(t, {})

    t = _step("5/9 score sample users through the gateway")
    url = status["gateway"]["url"]
    with httpx.Client(timeout=10) as client:
        for body in workflow.sample_requests(settings):
            for model in models:
                r = client.post(f"{url}/v1/score", json=body | {"model": model, "top_k": 5})
                if r.status_code != 200:
                    print(f"   user {body['user_id']}: HTTP {r.status_code} {r.text}")
                    continue
                out = r.json()
                top = ", ".join(f"{i['item_id']}:{i['score']:.3f}" for i in out["items"])
                flag = " [cold start]" if out["cold_start"] else ""
                print(f"   user {out['user_id']:>16}{flag} {out['model']:>5} v{out['model_version']}: "
                      f"{len(body['item_ids'])} candidates -> top5 {top}  ({out['timings_ms']['total']:.1f} ms)")
    _done(t, {})

    t = _step("6/9 stream: MovieLens events -> Kafka -> stream feature processor -> Feast online store")
    status = _cli(settings, "stream", "status")
    in_topic = sum(p.get("high_watermark", 0) for p in status.get("partitions", []))
    if not in_topic and status.get("state", {}).get("users"):
        # The local broker came back empty (memory storage, restarted since the last demo): the
        # state's offsets point into a log that no longer exists and the processor would stop at
        # the log reset. Its events are gone, so the stream starts over from a fresh replay.
        _cli(settings, "stream", "reset")
        print("   the broker restarted empty: the processor's state from its previous log was reset")
        status = _cli(settings, "stream", "status")
    if in_topic or status.get("state", {}).get("users"):
        # replaying the same events again would count them twice (offsets are new)
        print(f"   already streamed ({in_topic:,} events in the topic, state holds "
              f"{status.get('state', {}).get('users', 0)} users); `recast stream reset` starts over")
        sent = {}
    else:
        sent = _cli(settings, "stream", "replay", "--limit", "20000", "--no-progress")
    processed = _cli(settings, "stream", "process", "--until-caught-up", "--metrics-port", "0")
    print(f"   replayed {sent.get('sent', 0):,} events ({sent.get('events_per_s', 0):,.0f}/s); processor: "
          f"{processed.get('processed', 0):,} processed, {processed.get('dead_lettered', 0)} dead-lettered, "
          f"{processed.get('duplicate_skipped', 0)} duplicates skipped, {processed.get('batches', 0)} micro-batches")
    _done(t, {})

    t = _step("7/9 A/B: SIMULATED marketplace: a full-size experiment (direct mode), then a driven run through the gateway")
    _abtest_demo(settings, url)
    _done(t, {})

    t = _step("8/9 forecast: DLinear + PIR on Victoria electricity demand, revised on the stream")
    bundle = settings.path(settings.forecast.bundle_dir)
    if not (bundle / "forecast.json").exists():
        trained = _cli(settings, "forecast", "train", "--quiet")
        test = trained.get("test", {})
        print(f"   trained {trained.get('backbone', 'dlinear')} + PIR ({trained.get('calibration')} calibration, "
              f"K={trained.get('top_k')}, guard kept {trained.get('guard_kept', 0):.0%} of channel x horizon blocks); "
              f"test MSE {test.get('base', {}).get('mse', float('nan')):.4f} -> "
              f"{test.get('pir', {}).get('mse', float('nan')):.4f}; ONNX parity {trained.get('parity', {})}")
    else:
        print(f"   bundle {bundle} exists (delete it to retrain)")
    _cli(settings, "forecast", "topics")
    marker = bundle / "demo_replay.json"
    broker_pid = status.get("broker", {}).get("pid") if isinstance(status.get("broker"), dict) else None
    if not marker.exists() or json.loads(marker.read_text()).get("broker_pid") != broker_pid:
        replayed = _cli(settings, "forecast", "replay", "--limit", "600")
        marker.write_text(json.dumps({"broker_pid": broker_pid, **replayed}))
        print(f"   published {replayed.get('actuals', 0)} actuals and {replayed.get('forecasts', 0)} base forecasts")
    served = _cli(settings, "forecast", "serve", "--until-caught-up", "--metrics-port", "0")
    rolling = served.get("rolling", {})
    if rolling.get("n"):
        print(f"   revised {served.get('revised', 0)} forecasts; matured pairs {served.get('matured', 0)} "
              f"(store {served.get('store_pairs', 0)}); rolling MSE base {rolling['base_mse']:.4f} -> "
              f"revised {rolling['revised_mse']:.4f} ({rolling['improvement']:+.1%} better), served "
              f"{rolling['served_mse']:.4f}")
    else:
        print(f"   revision service: {served}")
    _done(t, {})

    t = _step("9/9 loop: labels -> retrain from the last checkpoint -> candidate -> guarded rollout (SIMULATED)")
    from recast.loop import demo_cycle

    for line in demo_cycle(settings):
        print(f"   {line}")
    _done(t, {})
    if keep_running:
        print(f"\nThe stack keeps running: try `recast score 196 242 302 377` or open {url}/docs; "
              "`recast stack down` stops it.")
    else:
        stack.stack_down(settings)
