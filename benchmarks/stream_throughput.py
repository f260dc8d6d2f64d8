"""Events/s of the stream processor into the Feast online store, by user key space and online store.

Starts its own stack in a temporary home (a Tansu broker on a free port, a Feast
repository over generated MovieLens-shaped features, and -- for ``redis`` -- a
real ``redis-server`` on a free loopback port; never the default ports or
``data/feast_repo``), produces synthetic interaction events whose users are drawn
uniformly from a key space of N users (so a 5,000-event batch touches ~5,000
distinct users once N >> 5,000), then runs the real stream processor (Kafka
consume -> validate -> state store -> Feast online write -> parquet part ->
offset commit) until it has caught up; one row per (key space, online store),
side by side:

* events/s from the first record polled to the last offset committed (the
  consumer-group join excluded), wall clock: sensitive to the load of the host;
* CPU ms per batch (the processor process's user+system time over the run, per
  batch): what one batch costs, much less sensitive to other work on the host;
* online write ms per batch and rows per write, from the processor's own
  Prometheus histograms.

``--scale-out`` adds one vs two processor instances of one group (forked processes,
the state in ``--state-store``); on a host with fewer free cores than instances the
ratio measures the host, not the processor.

``--movielens`` runs the earlier comparison instead: MovieLens-100K in timestamp
order, per-event vs micro-batched, ``FeatureStore.push`` vs the sink's direct write.

    .venv/bin/python benchmarks/stream_throughput.py                       # 1k..1M users, sqlite and redis
    .venv/bin/python benchmarks/stream_throughput.py --users 1000000 --online-store redis --events 200000
    .venv/bin/python benchmarks/stream_throughput.py --online-store redis --state-store redis --scale-out
    .venv/bin/python benchmarks/stream_throughput.py --movielens
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

from common import ROOT, environment, progress, ratio, table, write_json  # noqa: E402  (sets OMP vars)

sys.path.insert(0, str(ROOT))

from prometheus_client import CollectorRegistry  # noqa: E402

from streaming.events import InteractionV1  # noqa: E402
from streaming.harness import StreamStack  # noqa: E402
from streaming.processor import StreamProcessor  # noqa: E402
from streaming.replay import movielens_events  # noqa: E402
from streaming.sink import FeastSink  # noqa: E402

RAW = ROOT / "data" / "ml-100k"
LOAD_AT_START = os.getloadavg()[0]
SAMPLE = {"n_users": 943, "n_items": 1682, "n_interactions": 100_000}


def synthetic_events(n: int, users: int, items: int = 1682, seed: int = 0) -> list[InteractionV1]:
    """``n`` events, users uniform over ``users`` ids, items uniform over ``items``, 10 ms apart."""
    rng = random.Random(seed)
    base = 1_700_000_000_000
    return [InteractionV1(event_id=f"s{seed}-{i}", ts_ms=base + 10 * i, type="click" if rng.random() < 0.3 else "view",
                          user=f"u{rng.randrange(users)}", item=str(1 + rng.randrange(items))) for i in range(n)]


def run_mode(stack: StreamStack, name: str, events, batch: int, wait_ms: int, offline: bool,
             resolve_once: bool = True, profile: Path | None = None) -> dict:
    s = stack.scope(name)
    # a batch slower than max_poll_interval_ms (the tests' short 3 s on a loaded host) gets the consumer
    # evicted and the batch redelivered: the benchmark measures the processor, not rejoins
    s.settings.kafka.max_poll_interval_ms = max(s.settings.kafka.max_poll_interval_ms, 15_000)
    progress(f"{name}: producing {len(events):,} events")
    s.send(events)
    registry = CollectorRegistry()
    proc = StreamProcessor(s.settings, registry=registry, batch_max_events=batch, batch_max_wait_ms=wait_ms,
                           write_offline=offline, sink=FeastSink(s.settings, resolve_once=resolve_once)).start()
    profiler = None
    try:
        while not proc.pending and proc.totals["records"] == 0:  # join the group, get the first records
            proc.poll_once(200)
        if profile is not None:
            import cProfile

            profiler = cProfile.Profile()
            profiler.enable()
        cpu, started = time.process_time(), time.perf_counter()
        totals = proc.run(until_caught_up=True)
        elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
    finally:
        if profiler is not None:
            profiler.disable()
            profiler.dump_stats(str(profile))
        proc.close()
    v = registry.get_sample_value
    pushes = v("recast_stream_push_seconds_count", {"view": "user"}) + v("recast_stream_push_seconds_count", {"view": "item"})
    push_s = v("recast_stream_push_seconds_sum", {"view": "user"}) + v("recast_stream_push_seconds_sum", {"view": "item"})
    rows = v("recast_stream_batch_rows_sum", {"view": "user"}) + v("recast_stream_batch_rows_sum", {"view": "item"})
    user_rows = v("recast_stream_batch_rows_sum", {"view": "user"})
    write_s = v("recast_stream_batch_seconds_sum")  # write phases: they lock only their own partitions
    merge_s = v("recast_stream_merge_seconds_sum")  # merge phases: the group's one merge lock is held through them
    assert totals["processed"] == len(events), totals
    batches = totals["batches"]
    out = {
        "mode": name, "events": totals["processed"], "seconds": elapsed, "events_per_s": totals["processed"] / elapsed,
        "batches": batches, "events_per_batch": totals["processed"] / batches,
        "user_rows_per_batch": user_rows / batches, "cpu_ms_per_batch": 1e3 * cpu / batches,
        "cpu_us_per_event": 1e6 * cpu / totals["processed"],
        "pushes": int(pushes), "rows_per_push": rows / pushes, "push_ms_mean": 1e3 * push_s / pushes,
        "push_ms_per_batch": 1e3 * push_s / batches, "push_share": push_s / elapsed, "offline_parquet": offline,
        "write_phase_share": write_s / elapsed, "merge_phase_share": merge_s / elapsed,
        "push_path": "resolved once" if resolve_once else "FeatureStore.push", "load_1m": os.getloadavg()[0],
    }
    progress(f"{name}: {out['events_per_s']:,.0f} events/s, {out['cpu_ms_per_batch']:.0f} CPU ms/batch "
             f"(load {out['load_1m']:.2f})")
    return out


CLOCK_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def host_cpu() -> tuple[int, int]:
    """(busy, total) jiffies of every CPU of the host since boot (/proc/stat; (0, 0) where there is none)."""
    try:
        fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    except (OSError, ValueError):
        return 0, 0
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    return sum(fields[:8]) - idle, sum(fields[:8])


def scale_out(stack: StreamStack, users: int, n_events: int, batch: int, wait_ms: int, repeat: int = 0) -> list[dict]:
    """One vs two forked instances of the group on the shared state, the same events; events/s from
    the first committed batch to the last watermark (joins excluded)."""
    out = []
    for n in (1, 2):
        s = stack.scope(f"scale{n}-{users}-{repeat}")
        s.settings.kafka.max_poll_interval_ms = max(s.settings.kafka.max_poll_interval_ms, 15_000)
        events = synthetic_events(n_events, users, seed=users + n + 10 * repeat)
        progress(f"scale-out, {n} instance(s): producing {len(events):,} events")
        ends = s.send(events)
        total = sum(ends.values())
        procs = [s.fork_processor(f"scale{n}-{k}.log", metrics_port=0, batch_max_events=batch,
                                  batch_max_wait_ms=wait_ms) for k in range(n)]
        try:
            while (first := sum(s.watermarks().values())) == 0:
                time.sleep(0.01)
            started, busy0 = time.perf_counter(), host_cpu()
            s.wait_watermarks(ends, timeout_s=1800)
            elapsed, busy1 = time.perf_counter() - started, host_cpu()
        finally:
            for p in procs:
                p.terminate()
            for p in procs:
                p.join(timeout=60)
        r = {"instances": n, "events": total - first, "events_per_s": (total - first) / elapsed,
             "host_cpu_busy": (busy1[0] - busy0[0]) / max(1, busy1[1] - busy0[1]),
             "host_cpu_us_per_event": 1e6 * (busy1[0] - busy0[0]) / CLOCK_TICKS / (total - first),
             "load_1m": os.getloadavg()[0]}
        progress(f"scale-out, {n} instance(s): {r['events_per_s']:,.0f} events/s (load {r['load_1m']:.2f})")
        out.append(r)
    return out


def read_latency(stack: StreamStack, events, n: int = 300) -> dict:
    """The gateway's online reads (features/online.py, static + streaming features) after the last row:
    one user per request, and 100 candidate items per request; ms median and p99."""
    from features.online import OnlineFeatureReader

    reader = OnlineFeatureReader(stack.settings, stream=True, item_cache_ttl_s=0)
    rng = random.Random(1)
    users = [rng.choice(events).user for _ in range(n)]
    items = [str(1 + rng.randrange(1682)) for _ in range(100)]
    timings: dict[str, list[float]] = {"user": [], "items100": []}
    for user in users:
        t = time.perf_counter()
        reader.user_features(user)
        timings["user"].append(1e3 * (time.perf_counter() - t))
    for _ in range(n // 3):
        t = time.perf_counter()
        reader.item_features(items)
        timings["items100"].append(1e3 * (time.perf_counter() - t))
    out = {}
    for name, ms in timings.items():
        ms.sort()
        out[f"{name}_ms_p50"], out[f"{name}_ms_p99"] = ms[len(ms) // 2], ms[min(len(ms) - 1, int(0.99 * len(ms)))]
    out["load_1m"] = os.getloadavg()[0]
    return out


def median_row(rows: list[dict]) -> dict:
    """The median of every numeric field over the repeats of one row (the others from the first)."""
    out = dict(rows[0])
    for k, v in rows[0].items():
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            out[k] = statistics.median(r[k] for r in rows)
    out["repeats"] = len(rows)
    return out


def key_space_curve(args) -> None:
    results, scaled, reads = [], [], []
    for store in args.online_store:
        home = Path(tempfile.mkdtemp(prefix=f"recast-stream-bench-{store}-"))
        progress(f"{store}: stack in {home}")
        try:
            with StreamStack(home, sample=SAMPLE, online_store=store, state_store=args.state_store) as stack:
                if args.scale_out and store == "redis":
                    runs = [scale_out(stack, max(args.users), args.events, args.batch, args.wait_ms, k)
                            for k in range(args.repeats)]
                    scaled = [median_row([run[n] for run in runs]) for n in range(2)]
                for users in args.users:
                    events = synthetic_events(args.events, users, seed=users)
                    rows = []
                    for k in range(args.repeats):
                        prof = (Path(args.profile) / f"{store}-{users}-{k}.prof") if args.profile else None
                        rows.append(run_mode(stack, f"{store}-{users}-{k}", events, args.batch, args.wait_ms,
                                             not args.no_parquet, profile=prof))
                    results.append({**median_row(rows), "online_store": store, "key_space": users,
                                    "distinct_users": len({e.user for e in events}), "runs": rows})
                reads.append({"online_store": store, **read_latency(stack, events)})
        finally:
            if not args.keep:
                shutil.rmtree(home, ignore_errors=True)
    path = write_json("stream_throughput_users", {"environment": environment(), "args": vars(args), "results": results,
                                                  "scale_out": scaled, "reads": reads})
    rows = [[r["online_store"], r["key_space"], r["distinct_users"], r["events_per_s"], r["cpu_ms_per_batch"],
             r["cpu_us_per_event"], r["user_rows_per_batch"], r["rows_per_push"], r["push_ms_per_batch"],
             r["push_ms_mean"], 100 * r["write_phase_share"], 100 * r["merge_phase_share"], r["load_1m"]]
            for r in results]
    print()
    print(f"Stream processor, synthetic events ({args.events:,} per row), users uniform over the key space; "
          f"medians of {args.repeats} runs")
    print(table(["online store", "key space", "distinct users", "events/s", "CPU ms/batch", "CPU us/event",
                 "user rows/batch", "rows/write", "write ms/batch", "write ms (mean)", "% in write phase",
                 "% in merge phase", "load 1m"],
                rows, digits=1))
    print(f"\nbatch <= {args.batch} events or {args.wait_ms} ms; 4 partitions; one processor instance; parquet "
          f"{'off' if args.no_parquet else 'on'}; state store {args.state_store}. CPU = the processor process only "
          "(not the broker or Redis). % in write phase: the share of the wall time inside write phases, which lock "
          "only their own partitions. % in merge phase: inside merge phases, which hold the group's one merge lock "
          "(streaming/merge_phase.py); an instance finding it taken does not wait, so it bounds a group only once "
          "the merges of all instances fill it (about 1 / share instances, fewer rows per merge as they coalesce).")
    print("\nGateway online reads (features/online.py: one user; 100 candidate items), ms, after the rows above:")
    print(table(["online store", "user p50", "user p99", "100 items p50", "100 items p99", "load 1m"],
                [[r["online_store"], r["user_ms_p50"], r["user_ms_p99"], r["items100_ms_p50"], r["items100_ms_p99"],
                  r["load_1m"]] for r in reads], digits=2))
    if scaled:
        print(f"\nScale-out: instances of one group on the {args.state_store} state store, Redis online store, "
              f"{max(args.users):,} users (forked processes on this host), medians of {args.repeats}")
        print(table(["instances", "events", "events/s", "x one instance", "host CPU busy %", "host CPU us/event",
                     "load 1m"],
                    [[int(r["instances"]), int(r["events"]), r["events_per_s"],
                      ratio(r["events_per_s"], scaled[0]["events_per_s"]), 100 * r["host_cpu_busy"],
                      r["host_cpu_us_per_event"], r["load_1m"]] for r in scaled], digits=2))
        print(f"host CPU: all {os.cpu_count()} CPUs of the host (processors, broker, Redis, anything else) during "
              "the timed window. Busy near 100%: the host's cores bound the ratio, not the processors; CPU us/event "
              "that stays flat from one instance to two: nothing but cores stands between them and 2x.")
    print(f"host: {os.cpu_count()} CPUs shared with other work; 1-min load average {LOAD_AT_START:.2f} at start, "
          f"{os.getloadavg()[0]:.2f} at end")
    print(f"raw numbers: {path}")


def movielens(args) -> None:
    home = Path(tempfile.mkdtemp(prefix="recast-stream-bench-"))
    raw = RAW if (RAW / "ml-100k.inter").exists() else None
    progress(f"stack in {home} ({'MovieLens-100K' if raw else 'generated sample: run `recast features build` for ML-100K'})")
    try:
        with StreamStack(home, raw_dir=raw, sample=SAMPLE) as stack:
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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--users", type=int, nargs="+", default=[1_000, 10_000, 100_000, 1_000_000],
                    help="user key-space sizes, one row each")
    ap.add_argument("--online-store", nargs="+", choices=["sqlite", "redis"], default=["sqlite", "redis"])
    ap.add_argument("--events", type=int, default=None,
                    help="events per row (default 100,000; --movielens: all of ML-100K)")
    ap.add_argument("--no-parquet", action="store_true", help="skip the offline parquet parts")
    ap.add_argument("--state-store", choices=["sqlite", "redis"], default="sqlite",
                    help="processor state: the host's SQLite file or Redis (shared across hosts)")
    ap.add_argument("--scale-out", action="store_true",
                    help="also one vs two instances (forked) at the largest key space, with the redis online store")
    ap.add_argument("--profile", default=None, help="folder for a cProfile dump per run")
    ap.add_argument("--repeats", type=int, default=3, help="runs per row (and per scale-out size); medians shown")
    ap.add_argument("--movielens", action="store_true", help="the per-event vs micro-batched comparison on ML-100K")
    ap.add_argument("--per-event", type=int, default=400, help="--movielens: events for the per-event baseline")
    ap.add_argument("--batch", type=int, default=5000)
    ap.add_argument("--wait-ms", type=int, default=200)
    ap.add_argument("--keep", action="store_true", help="keep the temporary home")
    args = ap.parse_args()
    if args.movielens:
        movielens(args)
    else:
        args.events = args.events or 100_000
        if args.profile:
            Path(args.profile).mkdir(parents=True, exist_ok=True)
        key_space_curve(args)


if __name__ == "__main__":
    main()
