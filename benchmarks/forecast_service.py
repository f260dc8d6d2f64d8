"""Revision latency and throughput of the streaming PIR service (onnxruntime + numpy, no torch at run time).

Two bundles: ETTh1 (7 channels, L=96, H=96, store of 8,449 training pairs;
trained for one epoch: its graph and store sizes are the point) and Victoria
demand (1 channel, L=96, H=24; trained with the project's defaults, out-of-
sample PIR, K chosen among 10/20/50, guarded). For each:

* ``in-process``: ``RevisionProcessor.on_forecasts`` on real validated
  events (retrieval top-K over the store + ``pir.onnx`` + building the
  revised events), one forecast at a time -> latency p50/p99 per forecast;
  batches of 64 and 256 -> forecasts/s;
* ``kafka`` (Victoria and ETTh1): the replay producer publishes actuals +
  base forecasts through a real local Tansu broker, then ``ForecastService``
  consumes, matures, revises, publishes and commits -> end-to-end forecasts/s
  of the service loop (consumer poll to producer ack, JSON both ways).

and ``rolling`` (Victoria): the whole test split replayed in order through
the processor (actuals mature pairs into the store as they arrive): rolling
MSE per channel of the base forecast, PIR's revision and what was served
(the revision, or the base on channels the fallback switched back), at the
end of the replay.

Targets: p99 < 10 ms per forecast, >= 1,000 forecasts/s through the broker
(7-channel series), revised rolling MSE <= base per channel at the end.

    OMP_WAIT_POLICY=PASSIVE .venv/bin/python benchmarks/forecast_service.py     # ~3 min
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import environment, free_port, load_note, pin_threads, progress, summary_ms, table, write_json  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=1, help="onnxruntime / BLAS threads")
    ap.add_argument("--single", type=int, default=1000, help="forecasts revised one at a time")
    ap.add_argument("--kafka-rows", type=int, default=700, help="rows replayed through the broker per series")
    ap.add_argument("--keep", action="store_true")
    args = ap.parse_args()
    pin_threads(args.threads)

    import numpy as np
    from prometheus_client import CollectorRegistry

    from recast.settings import ForecastSettings, KafkaSettings, Settings, TritonSettings

    home = Path(tempfile.mkdtemp(prefix="recast-forecast-bench-"))
    specs = [("etth1", 96, 96), ("victoria", 96, 24)]
    budgets = {"etth1": "epochs=1, pir_epochs=1", "victoria": "epochs=10, pir_epochs=6, top_ks=(10, 20, 50)"}
    bundles = {}
    for name, lookback, horizon in specs:
        out = home / name
        t0 = time.perf_counter()
        # a child process trains and exports: this process never imports torch
        import subprocess

        code = ("import torch; torch.set_num_threads(2)\n"
                "from training.forecasting.export import train_bundle\n"
                f"train_bundle({name!r}, 'dlinear', {lookback}, {horizon}, {budgets[name]}, "
                f"out_dir={str(out)!r}, store_capacity=20000)\n")
        subprocess.run([sys.executable, "-c", code], check=True, cwd=str(Path(__file__).resolve().parents[1]),
                       capture_output=True)
        bundles[name] = out
        progress(f"{name}: bundle trained and exported in {time.perf_counter() - t0:.0f}s")

    from forecasting.events import ForecastV1
    from forecasting.replay import forecast_events, read_series
    from forecasting.service import ForecastBundle, RevisionProcessor

    rows, results = [], {}
    for name, lookback, horizon in specs:
        settings = Settings(home=home, forecast=ForecastSettings(bundle_dir=bundles[name], metrics_port=0,
                                                                 threads=args.threads))
        bundle = ForecastBundle(bundles[name], args.threads, 20000, load_online_store=False)
        cols, values, ts = read_series("victoria" if name == "victoria" else
                                       str(Path(__file__).resolve().parents[2] / "shared" / "data" / "ETTh1.csv"))
        start = len(values) - 3000 if name == "etth1" else 1500
        events = [e for e in forecast_events(bundle, values, ts, bundle.series_name, start,
                                             start + args.single + lookback + 10)
                  if isinstance(e, ForecastV1)][: args.single]
        proc = RevisionProcessor(settings, bundle, CollectorRegistry())
        for e in events[:20]:  # warm-up
            proc.on_forecasts([e])
        lat = []
        for e in events:
            t0 = time.perf_counter()
            proc.on_forecasts([e])
            lat.append(time.perf_counter() - t0)
        s1 = summary_ms(lat)
        thr = {}
        for bs in (64, 256):
            t0 = time.perf_counter()
            n = 0
            for i in range(0, len(events) - bs + 1, bs):
                proc.on_forecasts(events[i:i + bs])
                n += bs
            thr[bs] = n / (time.perf_counter() - t0)
        results[name] = {"single": s1, "throughput": thr, "store_pairs": len(bundle.store),
                         "channels": bundle.n_channels, "seq_len": lookback, "pred_len": horizon}
        rows.append([name, f"{bundle.n_channels}x{lookback}->{horizon}", len(bundle.store), s1["p50_ms"],
                     s1["p99_ms"], thr[64], thr[256]])
        progress(f"{name}: p50 {s1['p50_ms']:.2f} ms p99 {s1['p99_ms']:.2f} ms, {thr[256]:.0f}/s at 256")

    # rolling MSE per channel on the Victoria test split, pairs maturing as the replay goes
    vic = bundles["victoria"]
    bundle = ForecastBundle(vic, args.threads, 20000, load_online_store=False)
    settings = Settings(home=home, forecast=ForecastSettings(bundle_dir=vic, metrics_port=0, rolling_window=10**6))
    proc = RevisionProcessor(settings, bundle, CollectorRegistry())
    cols, values, ts = read_series("victoria")
    start = len(values) - int(len(values) * 0.2) - bundle.seq_len
    for e in forecast_events(bundle, values, ts, bundle.series_name, start):
        if isinstance(e, ForecastV1):
            proc.on_forecasts([e])
        else:
            proc.on_actuals([e])
    snap = proc.rolling.snapshot()
    rolling_rows = [[c, snap["n"], snap["base_mse_by_channel"][i], snap["revised_mse_by_channel"][i],
                     snap["served_mse"] if len(cols) == 1 else float("nan"), bool(proc.fallback[i]),
                     f"{100 * (snap['revised_mse_by_channel'][i] / snap['base_mse_by_channel'][i] - 1):+.2f}%"]
                    for i, c in enumerate(bundle.columns)]
    results["victoria_rolling"] = {**snap, "fallback": proc.fallback.tolist(), "guard": bundle.meta.get("guard"),
                                   "top_k": bundle.top_k, "calibration": bundle.meta.get("calibration")}
    progress(f"victoria rolling: base {snap['base_mse']:.4f} revised {snap['revised_mse']:.4f}")

    # end to end through the broker
    from streaming.broker import LocalBroker
    from forecasting.replay import replay
    from forecasting.service import ForecastService, ensure_forecast_topics

    port = free_port()
    kafka_rows = []
    for name, lookback, horizon in specs:
        settings = Settings(home=home, kafka=KafkaSettings(bootstrap_servers=f"127.0.0.1:{port}", partitions=1),
                            forecast=ForecastSettings(bundle_dir=bundles[name], metrics_port=0, partitions=1,
                                                      threads=args.threads, forecasts_topic=f"fc.{name}",
                                                      actuals_topic=f"act.{name}", revised_topic=f"rev.{name}",
                                                      consumer_group=f"bench-{name}", batch_max=512),
                            triton=TritonSettings(log_dir=Path("logs")))
        broker = LocalBroker(settings)
        if name == specs[0][0]:
            broker.start()
        ensure_forecast_topics(settings)
        series = "victoria" if name == "victoria" else str(Path(__file__).resolve().parents[2] / "shared" / "data" / "ETTh1.csv")
        sent = replay(settings, series, start=1000, limit=args.kafka_rows)
        service = ForecastService(settings, registry=CollectorRegistry())
        service.start()
        while not service.consumer.assignment():  # group join (the broker waits for the rebalance timeout)
            service.consumer.poll(timeout_ms=100)
        service.consumer.seek_to_beginning()  # records fetched by the join poll are read again, timed
        t0 = time.perf_counter()
        totals = service.run(until_caught_up=True)
        secs = time.perf_counter() - t0
        service.close(save_store=False)
        fps = totals["revised"] / secs
        results[f"{name}_kafka"] = {"sent": sent, "totals": totals, "seconds": secs, "forecasts_per_s": fps,
                                    "messages_per_s": (sent["forecasts"] + sent["actuals"]) / secs}
        kafka_rows.append([name, sent["forecasts"], sent["actuals"], secs, fps,
                           (sent["forecasts"] + sent["actuals"]) / secs, totals["matured"]])
        progress(f"{name} via Kafka: {totals['revised']} forecasts in {secs:.2f}s")
    LocalBroker(settings).stop()

    print("### revision in process (retrieval + pir.onnx + event), dlinear+pir bundles, "
          f"{args.threads} thread(s)\n")
    print(table(["bundle", "C x L -> H", "store pairs", "p50 ms (1 forecast)", "p99 ms (1 forecast)",
                 "forecasts/s (batch 64)", "forecasts/s (batch 256)"], rows))
    print("\n### end to end through the local broker (poll -> mature -> revise -> publish -> commit)\n")
    print(table(["bundle", "forecasts", "actuals", "seconds", "forecasts/s", "messages/s", "matured"], kafka_rows))
    print("\n### Victoria test split replayed in process: rolling MSE (scaled) over every matured forecast\n")
    print(table(["channel", "matured", "base MSE", "revised MSE", "served MSE", "fallback at end", "revised vs base"],
                rolling_rows, digits=4))
    print("\ntargets: p99 < 10 ms per forecast, >= 1,000 forecasts/s, revised rolling MSE <= base per channel")
    print(load_note())
    path = write_json("forecast_service", {"args": vars(args), "results": results, "env": environment(args.threads)})
    print(f"wrote {path}")
    if not args.keep:
        import shutil

        shutil.rmtree(home, ignore_errors=True)


if __name__ == "__main__":
    main()
