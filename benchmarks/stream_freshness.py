"""Freshness: event time -> the feature visible in the Feast online store, p50/p99 at a steady rate.

Starts its own stack in a temporary home (Tansu broker on a free port, Feast
repository with a SQLite online store over the MovieLens-100K features), runs
the stream processor as a separate process (``recast stream process`` code,
forked so it does not pay the Feast import again), and offers interaction
events at a steady ``--rate``: the MovieLens-100K interactions in timestamp
order, re-stamped with the wall clock at send (``recast stream replay
--retime``). Every ``--probe-ms`` an extra *probe* event is sent: the first
event of a fresh user. A reader thread polls the online store for the
outstanding probe users; a probe's freshness is the time from its event time
to the moment its ``last_event_ms`` is readable. Runs once per processor
batch window (``--waits``), per online store (``--online-store``: SQLite, or a
real ``redis-server`` on a free loopback port) and ``--repeats`` times, side by
side with the medians of the repeats and the load average of each run.

``--users N`` offers synthetic events over a key space of N users (uniform, so a
batch touches ~one row per event) instead of MovieLens-100K's 943 users.

    .venv/bin/python benchmarks/stream_freshness.py --rate 1000 --duration 20
    .venv/bin/python benchmarks/stream_freshness.py --rate 5000 --users 100000 --online-store sqlite redis --repeats 3
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

from common import ROOT, environment, percentile, progress, table, write_json  # noqa: E402  (sets OMP vars)

sys.path.insert(0, str(ROOT))

from features.feast_repo import ITEM_STREAM_VIEW, USER_STREAM_VIEW, open_store, repo_dir  # noqa: E402
from streaming.events import InteractionV1, encode, key_of  # noqa: E402
from streaming.harness import StreamStack, release_online_store  # noqa: E402

RAW = ROOT / "data" / "ml-100k"
LOAD_AT_START = os.getloadavg()[0]


class ProbeReader(threading.Thread):
    """Polls the online store for outstanding probe keys of one view until their ``feature`` (an event
    time) reaches the probe's; records event time -> visible in ms."""

    def __init__(self, stack: StreamStack, view: str = USER_STREAM_VIEW, key: str = "user",
                 feature: str = "last_event_ms") -> None:
        super().__init__(daemon=True)
        self.store = open_store(repo_dir(stack.settings))
        self.view, self.key, self.feature = view, key, feature
        self.outstanding: dict[str, int] = {}
        self.seen: dict[str, float] = {}
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.reads = 0

    def add(self, user: str, ts_ms: int) -> None:
        with self.lock:
            self.outstanding[user] = ts_ms

    def run(self) -> None:
        ref = f"{self.view}:{self.feature}"
        while not self.stop.is_set():
            with self.lock:
                users = list(self.outstanding)
            if not users:
                time.sleep(0.002)
                continue
            values = self.store.get_online_features(features=[ref], entity_rows={self.key: users}).to_dict()
            now = time.time() * 1000
            self.reads += 1
            with self.lock:
                for user, value in zip(values[self.key], values[self.feature]):
                    if value is not None and value >= self.outstanding.get(user, 1 << 62):
                        self.seen[user] = now - self.outstanding.pop(user)
            time.sleep(0.002)


def synthetic_events(n: int, users: int, items: list[str], seed: int) -> list[InteractionV1]:
    """``n`` events with users uniform over ``users`` ids (re-stamped at send)."""
    rng = random.Random(seed)
    return [InteractionV1(event_id=f"s{seed}-{i}", ts_ms=1, type="click" if rng.random() < 0.3 else "view",
                          user=f"u{rng.randrange(users)}", item=rng.choice(items)) for i in range(n)]


def run(stack: StreamStack, name: str, wait_ms: int, rate: float, duration: float, probe_ms: float,
        events: list[InteractionV1], items: list[str], merge_interval_ms: int | None = None) -> dict:
    s = stack.scope(name)
    if merge_interval_ms is not None:
        s.settings.stream.merge_interval_ms = merge_interval_ms
    # a batch slower than the tests' short max_poll_interval_ms on a loaded host would be redelivered
    s.settings.kafka.max_poll_interval_ms = max(s.settings.kafka.max_poll_interval_ms, 15_000)
    proc = s.fork_processor(f"processor-{name}.log", batch_max_events=5000, batch_max_wait_ms=wait_ms)
    producer = s.producer
    topic = s.settings.kafka.events_topic
    reader = ProbeReader(s)
    item_reader = ProbeReader(s, ITEM_STREAM_VIEW, "item", "item_last_event_ms")  # rows of the merge phase
    rng = random.Random(wait_ms)
    try:
        # warm up: the group join, the first push (registry cache) -- not measured
        warm = [InteractionV1(event_id=f"w{k}", ts_ms=int(time.time() * 1000), type="click", user=f"warm{k}",
                              item=items[0]) for k in range(20)]
        s.send(warm)
        deadline = time.monotonic() + 90
        while sum(s.watermarks().values()) < len(warm):
            if time.monotonic() > deadline or not proc.is_alive():
                raise RuntimeError(f"processor did not start; see {s.home / f'processor-{name}.log'}")
            time.sleep(0.1)
        reader.start()
        item_reader.start()
        progress(f"{name}: {rate:.0f} events/s for {duration:.0f}s, a probe every {probe_ms:.0f} ms")
        started = time.monotonic()
        sent = probes = 0
        next_probe = started
        tick = 0.005
        while (now := time.monotonic()) - started < duration:
            due = int((now - started) * rate) - sent
            for _ in range(max(0, due)):
                e = events[sent % len(events)].model_copy(update={"ts_ms": int(time.time() * 1000)})
                producer.send(topic, key=key_of(e), value=encode(e))
                sent += 1
            if now >= next_probe:
                ts = int(time.time() * 1000)
                user, next_probe = f"probe-{name}-{probes}", next_probe + probe_ms / 1e3
                item = f"probe-item-{name}-{probes}"  # a fresh item too: its row is visible once merged
                probe = InteractionV1(event_id=f"probe-{name}-{probes}", ts_ms=ts, type="click", user=user,
                                      item=item)
                reader.add(user, ts)
                item_reader.add(item, ts)
                producer.send(topic, key=key_of(probe), value=encode(probe))
                probes += 1
            time.sleep(tick)
        producer.flush()
        offered = (sent + probes) / (time.monotonic() - started)
        deadline = time.monotonic() + 10
        while (reader.outstanding or item_reader.outstanding) and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        for r in (reader, item_reader):
            r.stop.set()
            if r.is_alive():
                r.join(timeout=10)
            release_online_store(r.store)  # the next run forks a processor: no open SQLite connection in this one
        if proc.is_alive():
            proc.terminate()
        proc.join(timeout=30)
    ms, item_ms = list(reader.seen.values()), list(item_reader.seen.values())
    out = {"run": name, "wait_ms": wait_ms, "offered_rate": offered, "events": sent, "probes": probes,
           "visible": len(ms), "p50_ms": percentile(ms, 50), "p90_ms": percentile(ms, 90),
           "p99_ms": percentile(ms, 99), "max_ms": max(ms) if ms else float("nan"), "reads": reader.reads,
           "items_visible": len(item_ms), "item_p50_ms": percentile(item_ms, 50),
           "item_p99_ms": percentile(item_ms, 99), "load_1m": os.getloadavg()[0]}
    progress(f"{name}: p50 {out['p50_ms']:.0f} ms, p99 {out['p99_ms']:.0f} ms, {len(ms)}/{probes} visible; "
             f"items p50 {out['item_p50_ms']:.0f} ms, p99 {out['item_p99_ms']:.0f} ms (load {out['load_1m']:.2f})")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rate", type=float, default=1000.0, help="events/s offered")
    ap.add_argument("--duration", type=float, default=20.0, help="seconds per run")
    ap.add_argument("--probe-ms", type=float, default=50.0)
    ap.add_argument("--waits", type=int, nargs="+", default=[200, 50], help="processor batch_max_wait_ms values")
    ap.add_argument("--users", type=int, default=0,
                    help="synthetic events over this many users (0: MovieLens-100K in timestamp order)")
    ap.add_argument("--online-store", nargs="+", choices=["sqlite", "redis"], default=["sqlite"])
    ap.add_argument("--state-store", choices=["sqlite", "redis"], default="sqlite")
    ap.add_argument("--repeats", type=int, default=1, help="runs per (online store, wait); medians shown")
    ap.add_argument("--merge-interval-ms", type=int, default=None,
                    help="stream.merge_interval_ms of the processor (default: the setting's, 500)")
    ap.add_argument("--keep", action="store_true", help="keep the temporary home (processor logs)")
    args = ap.parse_args()

    results = []
    for store in args.online_store:
        home = Path(tempfile.mkdtemp(prefix=f"recast-stream-fresh-{store}-"))
        raw = RAW if (RAW / "ml-100k.inter").exists() and not args.users else None
        progress(f"{store}: stack in {home}")
        try:
            with StreamStack(home, raw_dir=raw, sample={"n_users": 943, "n_items": 1682, "n_interactions": 20_000},
                             online_store=store, state_store=args.state_store) as stack:
                from streaming.replay import movielens_events

                events = list(movielens_events(stack.raw_dir))
                items = sorted({e.item for e in events})
                if args.users:
                    events = synthetic_events(int(args.rate * args.duration), args.users, items, seed=args.users)
                for w in args.waits:
                    for k in range(args.repeats):
                        r = run(stack, f"{store}-{w}-{k}", w, args.rate, args.duration, args.probe_ms, events, items,
                                args.merge_interval_ms)
                        results.append({**r, "online_store": store})
        finally:
            if not args.keep:
                shutil.rmtree(home, ignore_errors=True)
    source = f"synthetic, {args.users:,} users uniform" if args.users else "MovieLens-100K in timestamp order"
    print()
    print(f"Freshness: event time -> visible in the Feast online store, steady offered rate ({source})")
    print(table(["run", "online store", "batch wait ms", "offered events/s", "probes", "visible", "p50 ms", "p90 ms",
                 "p99 ms", "max ms", "items visible", "item p50 ms", "item p99 ms", "load 1m"],
                [[r["run"], r["online_store"], r["wait_ms"], r["offered_rate"], r["probes"], r["visible"], r["p50_ms"],
                  r["p90_ms"], r["p99_ms"], r["max_ms"], r["items_visible"], r["item_p50_ms"], r["item_p99_ms"],
                  r["load_1m"]] for r in results], digits=1))
    medians = []
    if args.repeats > 1:
        for store in args.online_store:
            for w in args.waits:
                rs = [r for r in results if r["online_store"] == store and r["wait_ms"] == w]
                medians.append([store, w, *(statistics.median(r[k] for r in rs) for k in
                                            ("offered_rate", "p50_ms", "p99_ms", "max_ms", "item_p50_ms",
                                             "item_p99_ms", "load_1m"))])
        print(f"\nMedians of {args.repeats}:")
        print(table(["online store", "batch wait ms", "offered events/s", "p50 ms", "p99 ms", "max ms", "item p50 ms",
                     "item p99 ms", "load 1m"], medians, digits=1))
    print(f"\none processor process (batch <= 5000 events or the wait), 4 partitions, state store {args.state_store}, "
          f"merge interval {'default' if args.merge_interval_ms is None else args.merge_interval_ms} ms; "
          "events re-stamped at send, plus the probes (a fresh user and a fresh item each: p50/p99 are the user's "
          "row, item p50/p99 the item's, written by the merge phase, stream.merge_interval_ms apart at most); "
          "producer and probe readers in this process")
    path = write_json("stream_freshness", {"environment": environment(), "args": vars(args), "results": results})
    print(f"host: {os.cpu_count()} CPUs shared with other work; 1-min load average {LOAD_AT_START:.2f} at start, "
          f"{os.getloadavg()[0]:.2f} at end")
    print(f"raw numbers: {path}")


if __name__ == "__main__":
    main()
