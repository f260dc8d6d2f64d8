"""Events/s into the Feast online store: micro-batched vs per-event push, one run side by side.

Starts its own stack in a temporary home (a Tansu broker on a free port, a
Feast repository with a SQLite online store over the MovieLens-100K features;
never the default ports or ``data/feast_repo``), replays MovieLens-100K
interactions (timestamp order) into an events topic, then runs the real stream
processor (Kafka consume -> validate -> state store -> Feast push -> parquet
part -> offset commit) until it has caught up, in these modes:

* ``per-event``: ``batch_max_events=1``: one push per view per event (the
  baseline the micro-batches are measured against; a sample of the events,
  since it runs at tens of events/s);
* ``micro-batched``: up to ``--batch`` events or ``--wait-ms`` per batch, all events;
* ``micro-batched, no parquet``: the same without the offline-store writes;

each push path twice: ``FeatureStore.push`` as is (it looks the push source's
feature views up in the registry on every call), and the sink's default, which
resolves them once and ingests through the provider (streaming/sink.py).

Events/s counts from the first record polled to the last offset committed
(the consumer-group join is excluded). Push latency and rows per push come
from the processor's own Prometheus histograms.

    .venv/bin/python benchmarks/stream_throughput.py            # full ML-100K micro-batched, 400 per-event
    .venv/bin/python benchmarks/stream_throughput.py --events 20000 --per-event 200
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

from common import ROOT, environment, progress, ratio, table, write_json  # noqa: E402  (sets OMP vars)

sys.path.insert(0, str(ROOT))

from prometheus_client import CollectorRegistry  # noqa: E402

from streaming.harness import StreamStack  # noqa: E402
from streaming.processor import StreamProcessor  # noqa: E402
from streaming.sink import FeastSink  # noqa: E402
from streaming.replay import movielens_events  # noqa: E402

RAW = ROOT / "data" / "ml-100k"
LOAD_AT_START = os.getloadavg()[0]


def run_mode(stack: StreamStack, name: str, events, batch: int, wait_ms: int, offline: bool,
             resolve_once: bool = True) -> dict:
    s = stack.scope(name)
    progress(f"{name}: producing {len(events):,} events")
    s.send(events)
    registry = CollectorRegistry()
    proc = StreamProcessor(s.settings, registry=registry, batch_max_events=batch, batch_max_wait_ms=wait_ms,
                           write_offline=offline, sink=FeastSink(s.settings, resolve_once=resolve_once)).start()
    try:
        while not proc.pending and proc.totals["records"] == 0:  # join the group, get the first records
            proc.poll_once(200)
        started = time.perf_counter()
        totals = proc.run(until_caught_up=True)
        elapsed = time.perf_counter() - started
    finally:
        proc.close()
    v = registry.get_sample_value
    pushes = v("recast_stream_push_seconds_count", {"view": "user"}) + v("recast_stream_push_seconds_count", {"view": "item"})
    push_s = v("recast_stream_push_seconds_sum", {"view": "user"}) + v("recast_stream_push_seconds_sum", {"view": "item"})
    rows = v("recast_stream_batch_rows_sum", {"view": "user"}) + v("recast_stream_batch_rows_sum", {"view": "item"})
    assert totals["processed"] == len(events), totals
    out = {
        "mode": name, "events": totals["processed"], "seconds": elapsed, "events_per_s": totals["processed"] / elapsed,
        "batches": totals["batches"], "events_per_batch": totals["processed"] / totals["batches"],
        "pushes": int(pushes), "rows_per_push": rows / pushes, "push_ms_mean": 1e3 * push_s / pushes,
        "push_share": push_s / elapsed, "offline_parquet": offline,
        "push_path": "resolved once" if resolve_once else "FeatureStore.push",
    }
    progress(f"{name}: {out['events_per_s']:,.0f} events/s")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--events", type=int, default=None, help="micro-batched events (default: all of ML-100K)")
    ap.add_argument("--per-event", type=int, default=400, help="events for the per-event baseline")
    ap.add_argument("--batch", type=int, default=5000)
    ap.add_argument("--wait-ms", type=int, default=200)
    ap.add_argument("--keep", action="store_true", help="keep the temporary home")
    args = ap.parse_args()

    home = Path(tempfile.mkdtemp(prefix="recast-stream-bench-"))
    raw = RAW if (RAW / "ml-100k.inter").exists() else None
    progress(f"stack in {home} ({'MovieLens-100K' if raw else 'generated sample: run `recast features build` for ML-100K'})")
    try:
        with StreamStack(home, raw_dir=raw, sample={"n_users": 943, "n_items": 1682, "n_interactions": 100_000}) as stack:
            events = list(movielens_events(stack.raw_dir, args.events))
            per_event = events[: args.per_event]
            results = [
                run_mode(stack, "per-event-store-push", per_event, 1, 0, True, resolve_once=False),
                run_mode(stack, "per-event", per_event, 1, 0, True),
                run_mode(stack, "micro-batched-store-push", events, args.batch, args.wait_ms, True,
                         resolve_once=False),
                run_mode(stack, "micro-batched", events, args.batch, args.wait_ms, True),
                run_mode(stack, "micro-batched-no-parquet", events, args.batch, args.wait_ms, False),
            ]
    finally:
        if not args.keep:
            shutil.rmtree(home, ignore_errors=True)

    path = write_json("stream_throughput", {"environment": environment(), "args": vars(args), "results": results})
    base = {r["push_path"]: r["events_per_s"] for r in results if r["mode"].startswith("per-event")}
    rows = [[r["mode"], r["push_path"], r["events"], r["events_per_s"], ratio(r["events_per_s"], base[r["push_path"]]),
             r["events_per_batch"], r["rows_per_push"], r["push_ms_mean"], 100 * r["push_share"]] for r in results]
    print()
    print("Stream processor into the Feast online store (SQLite), MovieLens-100K in timestamp order")
    print(table(["mode", "push path", "events", "events/s", "x per-event (same path)", "events/batch", "rows/push",
                 "push ms (mean)", "% time in push"], rows, digits=1))
    print(f"\nbatch <= {args.batch} events or {args.wait_ms} ms; 4 partitions; one processor instance; "
          "per-event and micro-batched run the same code with batch_max_events=1 vs the batch.")
    print(f"host: {os.cpu_count()} CPUs shared with other work; 1-min load average {LOAD_AT_START:.2f} at start, "
          f"{os.getloadavg()[0]:.2f} at end")
    print(f"raw numbers: {path}")


if __name__ == "__main__":
    main()
