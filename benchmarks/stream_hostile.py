"""The hostile-stream bar: 10,000 hostile records among valid events, through the real broker and processor.

Starts its own stack in a temporary home (a Tansu broker on a free port, a
Feast repository with a SQLite online store; never the default ports or
``data/``), generates ``--hostile`` records of every dead-letter reason
(streaming/hostile.py: invalid UTF-8, nesting deeper than the recursion limit,
strings of up to 3 MiB, wrong types, enum and bound edges, ``"v": true``, other
kinds, tombstones) and interleaves them with ``--valid`` events, then sends the
stream in five equal chunks, one per codec (none, gzip, snappy, lz4, zstd),
and runs the real processor until it has caught up. Half-way, the processor
is stopped and a new one continues from the state store (a restart).

It checks, and prints side by side per codec:

* the processor never crashed (both runs return);
* every valid event applied: the online features equal a from-scratch recomputation;
* every hostile record in the dead-letter topic exactly once, with the reason it was built for.

    .venv/bin/python benchmarks/stream_hostile.py                  # 10,000 hostile + 10,000 valid
    .venv/bin/python benchmarks/stream_hostile.py --hostile 2000 --valid 2000
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

from common import ROOT, environment, progress, table, write_json  # noqa: E402  (sets OMP vars)

sys.path.insert(0, str(ROOT))

from prometheus_client import CollectorRegistry  # noqa: E402

from streaming.harness import StreamStack  # noqa: E402
from streaming.hostile import hostile_records, interleave, valid_events  # noqa: E402
from streaming.processor import StreamProcessor  # noqa: E402

CODECS = (None, "gzip", "snappy", "lz4", "zstd")
LOAD_AT_START = os.getloadavg()[0]


CRASHES: list[str] = []


def process(s: StreamStack, max_events: int | None = None) -> tuple[dict, float]:
    """One processor run; an exception is a crash (counted), after which a new instance continues."""
    started = time.perf_counter()
    for _attempt in range(3):
        proc = StreamProcessor(s.settings, registry=CollectorRegistry(), batch_max_events=2000,
                               batch_max_wait_ms=100).start()
        try:
            totals = proc.run(until_caught_up=max_events is None, max_events=max_events, stall_timeout_s=120)
        except Exception as exc:  # noqa: BLE001 - the bar counts them
            CRASHES.append(repr(exc)[:300])
            progress(f"the processor crashed: {exc!r}")
            proc.close(flush=False)
            continue
        proc.close()
        return totals, time.perf_counter() - started
    raise RuntimeError(f"the processor crashed 3 times: {CRASHES}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--hostile", type=int, default=10_000)
    ap.add_argument("--valid", type=int, default=10_000)
    ap.add_argument("--large-every", type=int, default=200, help="one record of 0.1-3 MiB in N hostile ones")
    ap.add_argument("--seed", type=int, default=11)
    args = ap.parse_args()

    home = Path(tempfile.mkdtemp(prefix="recast-hostile-"))
    try:
        with StreamStack(home) as stack:
            s = stack.scope("hostile")
            valid = valid_events(args.valid, "hv", seed=args.seed)
            hostile = list(hostile_records(args.hostile, seed=args.seed, large_every=args.large_every))
            stream = interleave(valid, hostile, seed=args.seed)
            chunk = -(-len(stream) // len(CODECS))
            codec_at, reason_at = {}, {}
            progress(f"sending {len(stream):,} records ({len(hostile):,} hostile) in {len(CODECS)} codecs")
            send_started = time.perf_counter()
            for k, codec in enumerate(CODECS):
                part = stream[k * chunk:(k + 1) * chunk]
                for (_key, _value, reason), at in zip(part, s.send_raw(part, codec)):
                    codec_at[at] = codec or "none"
                    if reason is not None:
                        reason_at[at] = reason
            send_s = time.perf_counter() - send_started

            progress("processing: a first run stopped half-way, then a restart to the end")
            first, first_s = process(s, max_events=len(stream) // 2)
            second, second_s = process(s)
            mismatches = s.mismatches(valid)
            letters = Counter()
            for h, _value in s.dead_letters(timeout_s=120):
                letters[(int(h["source_partition"]), int(h["source_offset"]), h["reason"])] += 1
    finally:
        shutil.rmtree(home, ignore_errors=True)

    rows, results = [], []
    for codec in ("none", "gzip", "snappy", "lz4", "zstd"):
        mine = {at for at, c in codec_at.items() if c == codec}
        want = {at: r for at, r in reason_at.items() if at in mine}
        got = Counter({(p, o, r): n for (p, o, r), n in letters.items() if (p, o) in mine})
        row = {"codec": codec, "records": len(mine), "hostile": len(want),
               "in_dlq_once": sum(1 for (p, o, r), n in got.items() if n == 1 and want.get((p, o)) == r),
               "duplicated": sum(1 for n in got.values() if n > 1),
               "wrong_or_missing": len(want) - sum(1 for (p, o, r) in got if want.get((p, o)) == r)}
        results.append(row)
        rows.append(list(row.values()))
    total_records = first["records"] + second["records"]
    summary = {"valid": len(valid), "processed": first["processed"] + second["processed"],
               "hostile": len(hostile), "dead_lettered": first["dead_lettered"] + second["dead_lettered"],
               "dlq_records": sum(letters.values()), "online_mismatches": len(mismatches), "crashes": len(CRASHES),
               "send_s": round(send_s, 2), "process_s": round(first_s + second_s, 2),
               "records_per_s": round(total_records / (first_s + second_s), 1)}
    ok = (summary["processed"] == len(valid) and not mismatches and not CRASHES and all(
        r["in_dlq_once"] == r["hostile"] and not r["duplicated"] for r in results)
        and summary["dlq_records"] == len(hostile))
    summary["bar_met"] = ok
    path = write_json("stream_hostile", {"environment": environment(), "args": vars(args), "per_codec": results,
                                         "summary": summary, "reasons": Counter(reason_at.values())})
    print(table(["codec", "records", "hostile", "in DLQ once, right reason", "duplicated", "wrong or missing"], rows))
    print()
    print(table(["valid", "applied", "hostile", "dead-lettered", "DLQ records", "online != recomputed",
                 "crashes", "send s", "process s", "records/s"],
                [[summary[k] for k in ("valid", "processed", "hostile", "dead_lettered", "dlq_records",
                                       "online_mismatches", "crashes", "send_s", "process_s", "records_per_s")]]))
    print(f"\nbar met: {ok}   reasons: {dict(sorted(Counter(reason_at.values()).items()))}")
    print(f"host: {os.cpu_count()} CPUs shared with other work; 1-min load average {LOAD_AT_START:.2f} at start, "
          f"{os.getloadavg()[0]:.2f} at end")
    print(f"wrote {path}")
    if not ok:
        sys.exit(1)


if __name__ == "__main__":
    main()
