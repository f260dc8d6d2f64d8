"""`recast stream ...` subcommands (registered by recast/cli.py).

    recast stream topics                      # create the topics (idempotent) on kafka.bootstrap_servers
    recast stream replay [--speed F]          # MovieLens-100K ratings -> interaction events, timestamp order
    recast stream process [--until-caught-up] # the stream feature processor (a consumer-group member)
    recast stream labels [--window S]         # exposures x outcomes -> labelled examples (parquet)
    recast stream status                      # broker, topics, the processor group's watermarks, lag, log resets
    recast stream reset                       # forget the processor state (after a memory broker restart)
    recast stream schemas                     # JSON Schema of every event version

`recast stack up` starts the local broker (and creates the topics) with the
rest of the stack; point kafka.bootstrap_servers at a real cluster and set
kafka.local_broker: false to use one. kafka.local_storage: s3rver makes the
local broker durable (streaming/broker.py).
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path
from typing import Any


def _print(obj: Any) -> None:
    print(json.dumps(obj, indent=2, default=str))


def cmd_topics(args: argparse.Namespace, s) -> None:
    from streaming.topics import ensure_topics

    _print({"bootstrap": s.kafka.bootstrap_servers, "topics": ensure_topics(s)})


def cmd_replay(args: argparse.Namespace, s) -> None:
    from streaming.replay import replay_movielens
    from streaming.topics import ensure_topics

    ensure_topics(s)
    _print(replay_movielens(s, speed=args.speed, limit=args.limit, retime=args.retime,
                            raw_dir=Path(args.raw_dir) if args.raw_dir else None, progress=not args.no_progress))


def cmd_process(args: argparse.Namespace, s) -> None:
    from streaming.processor import run_processor
    from streaming.topics import ensure_topics

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    for noisy in ("kafka", "feast"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    ensure_topics(s)
    if args.on_log_reset:
        s.stream.on_log_reset = args.on_log_reset
    _print(run_processor(s, group=args.group, metrics_port=args.metrics_port,
                         batch_max_events=args.batch_max_events, batch_max_wait_ms=args.batch_max_wait_ms,
                         until_caught_up=args.until_caught_up, idle_exit_s=args.idle_exit,
                         max_events=args.max_events))


def cmd_labels(args: argparse.Namespace, s) -> None:
    from streaming.labels import build_labels

    _print(build_labels(s, window_s=args.window, out=args.out))


def cmd_status(args: argparse.Namespace, s) -> None:
    from streaming.status import stream_status

    _print(stream_status(s, args.group))


def cmd_reset(args: argparse.Namespace, s) -> None:
    from features.feast_repo import stream_offline_dirs
    from streaming.state import state_path

    group = args.group or s.stream.consumer_group
    # The group's offline parquet parts were recorded in the state being deleted: without it the
    # processor would remove them as parts of uncommitted batches, so they go with the state.
    parts = [p for folder in stream_offline_dirs(s) if folder.exists() for p in folder.iterdir()
             if p.name.lstrip(".").startswith(f"{group}-")]
    for p in parts:
        p.unlink(missing_ok=True)
    note = "the online store keeps its values until the processor pushes new ones"
    if s.stream.state_store == "redis":
        from streaming.state import open_state

        store = open_state(s, group)
        try:
            removed = store.clear()
        finally:
            store.close()
        _print({"group": group, "removed": f"{removed} keys under {store.path}", "offline_parts": len(parts),
                "note": note})
        return
    path = state_path(s, group)
    removed = [str(p) for p in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm"))
               if p.exists()]
    for p in removed:
        Path(p).unlink()
    _print({"group": group, "removed": removed, "offline_parts": len(parts), "note": note})


def cmd_schemas(args: argparse.Namespace, s) -> None:
    from streaming.events import parse_json_schema

    _print(parse_json_schema())


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add this area's subcommands; commands import their modules lazily."""
    p = subparsers.add_parser("stream", help="Kafka feature stream: topics, replay, processor, labels",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="stream_command", required=True, metavar="ACTION")

    t = sub.add_parser("topics", help="create the topics with their partitions (idempotent)")
    t.set_defaults(func=cmd_topics)

    r = sub.add_parser("replay", help="send the MovieLens-100K ratings as interaction events in timestamp order")
    r.add_argument("--speed", type=float, default=None,
                   help="event-time seconds per wall-clock second (3600: an hour a second); default: as fast as possible")
    r.add_argument("--limit", type=int, help="only the first N events")
    r.add_argument("--retime", action="store_true", help="stamp events with the wall clock of sending")
    r.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    r.add_argument("--raw-dir", help="a folder of ml-100k.{inter,user,item} files (default: the fetched MovieLens-100K)")
    r.set_defaults(func=cmd_replay)

    pr = sub.add_parser("process", help="run the stream feature processor (Ctrl-C/SIGTERM stop after the batch)")
    pr.add_argument("--group", help="consumer group (default stream.consumer_group)")
    pr.add_argument("--metrics-port", type=int, help="Prometheus port (default stream.metrics_port; 0: none)")
    pr.add_argument("--batch-max-events", type=int)
    pr.add_argument("--batch-max-wait-ms", type=int)
    pr.add_argument("--until-caught-up", action="store_true", help="exit once every assigned partition has lag 0")
    pr.add_argument("--idle-exit", type=float, metavar="SECONDS", help="exit after this long without records")
    pr.add_argument("--max-events", type=int, help="exit after this many records")
    pr.add_argument("--on-log-reset", choices=("fail", "recompute"),
                    help="a partition log restarted behind the applied watermark (a broker that lost its data): "
                         "fail (exit non-zero) or recompute its features from the log as it is "
                         "(default stream.on_log_reset)")
    pr.set_defaults(func=cmd_process)

    lb = sub.add_parser("labels", help="join exposures with outcomes inside the attribution window (polars)")
    lb.add_argument("--window", type=float, metavar="SECONDS", help="default stream.attribution_window_s")
    lb.add_argument("--out", help="parquet path (default stream.labels_dir/labelled_examples.parquet)")
    lb.set_defaults(func=cmd_labels)

    st = sub.add_parser("status", help="broker, topics, processor watermarks and lag")
    st.add_argument("--group")
    st.set_defaults(func=cmd_status)

    rs = sub.add_parser("reset", help="delete the processor's state store and its offline parts "
                                      "(after a local broker restart)")
    rs.add_argument("--group")
    rs.set_defaults(func=cmd_reset)

    sc = sub.add_parser("schemas", help="print the JSON Schema of every event version")
    sc.set_defaults(func=cmd_schemas)
