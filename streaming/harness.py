"""A throwaway streaming stack for tests and benchmarks: a real broker and a real Feast repo.

:class:`StreamStack` makes a temporary home with MovieLens-shaped features
(the real ML-100K files when given, else a generated sample), applies and
materializes the Feast repository (a SQLite online store, or with
``online_store="redis"`` a real redis-server on a free loopback port; the
streaming push sources), starts a Tansu broker on a free port and creates the topics.
It never touches the default ports or ``data/`` of the checkout. Failing to
start any part raises: callers must not silently skip. Processor children it
started are killed when the stack closes, so a failed test leaves none behind.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Iterable, Sequence

from recast.settings import (
    DataSettings,
    FeastSettings,
    KafkaSettings,
    Settings,
    StreamSettings,
    TritonSettings,
)
from streaming.events import InteractionV1, encode, key_of

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def stack_settings(home: Path, port: int, partitions: int = 4, **stream: Any) -> Settings:
    return Settings(
        home=home,
        data=DataSettings(dir=Path("raw"), features_dir=Path("features")),
        feast=FeastSettings(repo_dir=Path("feast_repo"), project="recast_stream",
                            online_store_path=Path("feast_repo/online.db"),
                            registry_path=Path("feast_repo/registry.db")),
        kafka=KafkaSettings(bootstrap_servers=f"127.0.0.1:{port}", partitions=partitions),
        stream=StreamSettings(**{"metrics_port": 0, "state_dir": Path("state"), "offline_dir": Path("features/stream"),
                                 "labels_dir": Path("labels"), **stream}),
        triton=TritonSettings(log_dir=Path("logs")),
    )


class StreamStack:
    def __init__(self, home: Path, raw_dir: Path | None = None, partitions: int = 4,
                 sample: dict[str, int] | None = None, online_store: str = "sqlite", **stream: Any) -> None:
        self.home = Path(home)
        self.raw_dir = raw_dir
        self.sample = sample or {"n_users": 60, "n_items": 50, "n_interactions": 1500}
        self.settings = stack_settings(self.home, free_port(), partitions, **stream)
        self.settings.feast.online_store = online_store  # type: ignore[assignment]
        self.redis = None
        self.broker = None
        self._producer = None
        self.children: list = []
        """Processes started by spawn_processor/fork_processor (shared with the scopes), reaped on exit."""

    # ------------------------------------------------------------------ lifecycle
    def __enter__(self) -> "StreamStack":
        from features.feast_repo import ensure_feature_store
        from features.movielens import generate_movielens_sample
        from features.pipeline import build_features
        from streaming.broker import LocalBroker
        from streaming.topics import ensure_topics

        self.home.mkdir(parents=True, exist_ok=True)
        raw = self.raw_dir or generate_movielens_sample(self.home / "raw", seed=0, **self.sample)
        self.raw_dir = Path(raw)
        build_features(self.settings, raw_dir=self.raw_dir)
        if "redis" in (self.settings.feast.online_store, self.settings.stream.state_store):
            self._start_redis()
        try:
            release_online_store(ensure_feature_store(self.settings))  # children are forked from here
            for attempt in range(3):  # the free port may be taken between free_port() and the broker's bind
                self.broker = LocalBroker(self.settings)
                try:
                    self.broker.start()
                    break
                except RuntimeError:
                    if attempt == 2:
                        raise
                    self.settings.kafka.bootstrap_servers = f"127.0.0.1:{free_port()}"
            ensure_topics(self.settings)
        except BaseException:
            if self.broker is not None:
                self.broker.stop()
            if self.redis is not None:
                self.redis.stop()
            raise
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._producer is not None:
            self._producer.close(timeout=2)
        if self._scoped:
            return
        for child in self.children:
            _reap(child)
        if self.broker is not None:
            self.broker.stop()
        if self.redis is not None:
            self.redis.stop()

    def _start_redis(self) -> None:
        """A real redis-server on a free loopback port (streaming/redis_server.py): the online store and/or
        the processor state."""
        from streaming.redis_server import RedisServer

        for attempt in range(3):
            port = free_port()
            self.redis = RedisServer(self.home / "redis", port)
            try:
                self.redis.start()
                break
            except RuntimeError:
                if attempt == 2:
                    raise
        self.settings.feast.redis_address = self.redis.address

    _scoped = False

    def scope(self, name: str) -> "StreamStack":
        """The same broker, home and Feast repo with topics and a consumer group of its own.

        Tests sharing one stack stay independent on Kafka; they share the online
        store, so they use entity ids of their own where values are compared.
        """
        from streaming.topics import ensure_topics

        k = self.settings.kafka
        scoped = object.__new__(StreamStack)
        scoped.__dict__.update(self.__dict__)
        scoped._producer = None
        scoped._scoped = True
        scoped.settings = self.settings.model_copy(update={
            "kafka": k.model_copy(update={
                "events_topic": f"{k.events_topic}.{name}", "exposures_topic": f"{k.exposures_topic}.{name}",
                "outcomes_topic": f"{k.outcomes_topic}.{name}", "dead_letter_topic": f"{k.dead_letter_topic}.{name}",
            }),
            "stream": self.settings.stream.model_copy(update={"consumer_group": f"recast-{name}"}),
        })
        ensure_topics(scoped.settings)
        return scoped

    def config_file(self) -> Path:
        """These settings as a file for child processes (``RECAST_CONFIG``)."""
        path = self.home / f"recast-{self.settings.stream.consumer_group}.json"
        path.write_text(json.dumps(self.settings.model_dump(mode="json")))
        return path

    def child_env(self, **extra: str) -> dict[str, str]:
        # feast sets PROMETHEUS_MULTIPROC(ESS)_DIR in the importing process; a child must not inherit them
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("RECAST_", "PROMETHEUS_MULTIPROC"))}
        env.update({"RECAST_CONFIG": str(self.config_file()), "OMP_WAIT_POLICY": "PASSIVE",
                    "PYTHONPATH": os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)})
        env.update(extra)
        return env

    def spawn_processor(self, log_name: str, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen:
        """``recast stream process ARGS`` as a child process (stdout+stderr to ``home/log_name``)."""
        log = open(self.home / log_name, "ab")
        cmd = [sys.executable, "-m", "recast.cli", "stream", "process", *args]
        child = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=self.child_env(**(env or {})),
                                 cwd=str(self.home))
        self.children.append(child)
        return child

    def fork_processor(self, log_name: str, env: dict[str, str] | None = None, **run: Any):
        """``run_processor(settings, **run)`` in a forked child process (a real process that can be
        SIGKILLed) without paying the Feast import again; stdout/stderr go to ``home/log_name``."""
        import multiprocessing

        ctx = multiprocessing.get_context("fork")
        proc = ctx.Process(target=_forked_processor, args=(self.settings, str(self.home / log_name), env or {}, run),
                           daemon=False)
        proc.start()
        self.children.append(proc)
        return proc

    # ------------------------------------------------------------------ kafka
    @property
    def producer(self):
        if self._producer is None:
            from kafka import KafkaProducer

            from streaming.topics import producer_config

            self._producer = KafkaProducer(**producer_config(self.settings.kafka, linger_ms=10))
        return self._producer

    def send(self, events: Iterable[InteractionV1 | tuple[bytes | None, bytes]], topic: str | None = None) -> dict[int, int]:
        """Produce events (or raw (key, value) pairs); returns the next offset per partition written to."""
        topic = topic or self.settings.kafka.events_topic
        futures = []
        for e in events:
            if isinstance(e, tuple):
                futures.append(self.producer.send(topic, key=e[0], value=e[1]))
            else:
                futures.append(self.producer.send(topic, key=key_of(e), value=encode(e)))
        self.producer.flush(timeout=60)
        ends: dict[int, int] = {}
        for f in futures:
            md = f.get(timeout=30)
            ends[md.partition] = max(ends.get(md.partition, 0), md.offset + 1)
        return ends

    def send_raw(self, records: Sequence[tuple], compression: str | None = None,
                 topic: str | None = None) -> list[tuple[int, int]]:
        """Produce ``(key, value, ...)`` records with a producer of their own that compresses its batches
        with ``compression`` (gzip, snappy, lz4, zstd) and takes records up to 8 MiB; returns the
        ``(partition, offset)`` of each."""
        from kafka import KafkaProducer

        from streaming.topics import producer_config

        producer = KafkaProducer(**producer_config(self.settings.kafka, compression_type=compression, linger_ms=20,
                                                   batch_size=256 * 1024, max_request_size=8 << 20))
        try:
            futures = [producer.send(topic or self.settings.kafka.events_topic, key=r[0], value=r[1])
                       for r in records]
            producer.flush(timeout=120)
            return [(md.partition, md.offset) for md in (f.get(timeout=60) for f in futures)]
        finally:
            producer.close(timeout=5)

    def dead_letters(self, timeout_s: float = 60.0) -> list[tuple[dict[str, str], bytes]]:
        """Every record of the dead-letter topic as (headers, value)."""
        return [({k: v.decode() for k, v in r.headers}, r.value)
                for r in self.read_all(self.settings.kafka.dead_letter_topic, timeout_s)]

    def read_all(self, topic: str, timeout_s: float = 20.0) -> list:
        """Every record of ``topic`` from the beginning to its high watermark."""
        from kafka import KafkaConsumer, TopicPartition

        from streaming.topics import consumer_config

        consumer = KafkaConsumer(**consumer_config(self.settings.kafka, None))
        try:
            parts = consumer.partitions_for_topic(topic) or set()
            tps = [TopicPartition(topic, p) for p in sorted(parts)]
            consumer.assign(tps)
            consumer.seek_to_beginning(*tps)
            out = []
            deadline = time.monotonic() + timeout_s
            while time.monotonic() < deadline:
                for records in consumer.poll(timeout_ms=200).values():
                    out.extend(records)
                if all((hw := consumer.highwater(tp)) is not None and consumer.position(tp) >= hw for tp in tps):
                    return out
            raise TimeoutError(f"could not read {topic} to its end in {timeout_s}s")
        finally:
            consumer.close(autocommit=False)

    # ------------------------------------------------------------------ state
    def watermarks(self, group: str | None = None) -> dict[int, int]:
        from streaming.state import open_state, state_path

        group = group or self.settings.stream.consumer_group
        if self.settings.stream.state_store == "sqlite" and not state_path(self.settings, group).exists():
            return {}
        store = open_state(self.settings, group)
        try:
            return store.watermarks(self.settings.kafka.events_topic)
        finally:
            store.close()

    def wait_watermarks(self, ends: dict[int, int], group: str | None = None, timeout_s: float = 60.0,
                        procs: Sequence[subprocess.Popen] = ()) -> dict[int, int]:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            marks = self.watermarks(group)
            if all(marks.get(p, 0) >= o for p, o in ends.items()):
                return marks
            for p in procs:
                if p.poll() is not None:
                    raise RuntimeError(f"processor exited with {p.returncode}")
            time.sleep(0.2)
        raise TimeoutError(f"watermarks {self.watermarks(group)} did not reach {ends} in {timeout_s}s")

    # ------------------------------------------------------------------ features
    def item_vocab(self) -> dict[str, int]:
        from streaming.processor import load_item_vocab

        return load_item_vocab(self.settings)

    def online(self, kind: str, keys: Sequence[str]) -> dict[str, list]:
        """Stream feature values from the Feast online store (``kind`` user or item)."""
        from features.feast_repo import (
            ITEM_KEY,
            ITEM_STREAM_FEATURES,
            ITEM_STREAM_VIEW,
            USER_KEY,
            USER_STREAM_FEATURES,
            USER_STREAM_VIEW,
            open_store,
            repo_dir,
        )

        view, key, names = ((USER_STREAM_VIEW, USER_KEY, USER_STREAM_FEATURES) if kind == "user"
                            else (ITEM_STREAM_VIEW, ITEM_KEY, ITEM_STREAM_FEATURES))
        store = open_store(repo_dir(self.settings))
        try:
            out = store.get_online_features(features=[f"{view}:{n}" for n in names],
                                            entity_rows={key: list(keys)}).to_dict()
        finally:
            release_online_store(store)
        return {n: out[n] for n in (key, *names)}

    def mismatches(self, events: Sequence[InteractionV1]) -> list[str]:
        """Differences between the online store and a from-scratch recomputation over ``events``."""
        from streaming.features import recompute

        users, items = recompute(events, self.settings.stream.last_n_items, self.item_vocab())
        problems = []
        for kind, expected, key in (("user", users, "user"), ("item", items, "item")):
            got = self.online(kind, expected[key].to_list())
            for name in expected.columns:
                if name == key:
                    continue
                want = expected[name].to_list()
                have = got[name]
                for k, w, h in zip(expected[key].to_list(), want, have):
                    if w != h:
                        problems.append(f"{kind} {k} {name}: online {h!r} != recomputed {w!r}")
        return problems


def release_online_store(store) -> None:
    """Close the SQLite connection Feast keeps open in ``store``'s online store (one per store object).

    Left to the garbage collector (the store sits in reference cycles), it stays open, and a
    processor forked meanwhile (:meth:`StreamStack.fork_processor`) inherits it with SQLite's
    per-process lock bookkeeping of the WAL file, but not the locks themselves: the child's own
    connection then writes without the locks it believes it holds, and another process's
    connection can reset the WAL under it (its rows vanish). Readers in a process that forks
    processors release their store when done.
    """
    online = getattr(store._get_provider(), "online_store", None)
    conn = getattr(online, "_conn", None)
    if conn is not None:
        conn.close()
        online._conn = None


def _reap(child) -> None:
    """Kill a processor child that is still running and wait for it (a Popen or a multiprocessing.Process)."""
    if isinstance(child, subprocess.Popen):
        if child.poll() is None:
            child.kill()
            child.wait(timeout=10)
    elif child.is_alive():
        child.kill()
        child.join(timeout=10)


def _forked_processor(settings: Settings, log_path: str, env: dict[str, str], run: dict[str, Any]) -> None:
    import logging

    fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    # the parent's sys.stdout/stderr may be objects of its own (pytest's capture): write to the fds
    sys.stdout = open(1, "w", buffering=1, closefd=False)
    sys.stderr = open(2, "w", buffering=1, closefd=False)
    os.environ.update(env)
    logging.basicConfig(level=logging.INFO, force=True,
                        format="%(asctime)s %(process)d %(name)s %(levelname)s %(message)s")
    for noisy in ("kafka", "feast"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    from streaming.processor import run_processor

    totals = run_processor(settings, **run)
    print(json.dumps(totals), flush=True)
