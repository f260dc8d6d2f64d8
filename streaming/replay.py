"""``recast stream replay``: MovieLens-100K interactions as interaction events, in timestamp order.

Each rating becomes one ``InteractionV1``: ``click`` when the rating is >= 4
(the CTR label of the offline pipeline), ``view`` otherwise (MovieLens has no
purchases or prices; none are invented). Event time is the rating's
timestamp (``--retime`` stamps events with the wall clock of sending
instead, for live demos). ``event_id`` is a UUID5 of (user, item, timestamp),
so a re-sent rating keeps its identity.

``--speed F`` replays F seconds of event time per wall-clock second
(``--speed 3600``: an hour a second); without it events go as fast as the
producer can send them. A tqdm progress bar shows the rate.
"""

from __future__ import annotations

import time
import uuid
from pathlib import Path
from typing import Iterator

from recast.settings import Settings
from streaming.events import InteractionV1, encode, key_of

_NAMESPACE = uuid.UUID("6f1c51a4-5c52-4a55-9a8b-6d0b5a1f3e01")


def movielens_events(raw_dir: Path, limit: int | None = None) -> Iterator[InteractionV1]:
    """Interactions of the raw MovieLens files sorted by timestamp (file order breaks ties)."""
    from features.movielens import load_interactions

    frame = (
        load_interactions(Path(raw_dir)).with_row_index("_row")
        .sort(["timestamp", "_row"]).collect()
    )
    if limit is not None:
        frame = frame.head(limit)
    for user, item, rating, ts in frame.select("user", "item", "rating", "timestamp").iter_rows():
        yield InteractionV1(
            event_id=str(uuid.uuid5(_NAMESPACE, f"ml100k/{user}/{item}/{ts}")),
            ts_ms=int(ts) * 1000,
            type="click" if rating >= 4 else "view",
            user=str(user),
            item=str(item),
        )


def replay(
    settings: Settings,
    events: Iterator[InteractionV1] | list[InteractionV1],
    speed: float | None = None,
    retime: bool = False,
    total: int | None = None,
    progress: bool = True,
    producer=None,
) -> dict[str, float]:
    """Send ``events`` to ``kafka.events_topic`` keyed by user; returns counts and rate."""
    from kafka import KafkaProducer
    from tqdm import tqdm

    from streaming.topics import producer_config

    own = producer is None
    producer = producer or KafkaProducer(**producer_config(settings.kafka, linger_ms=20, batch_size=256 * 1024))
    topic = settings.kafka.events_topic
    if total is None and isinstance(events, list):
        total = len(events)
    bar = tqdm(total=total, unit="ev", disable=not progress, desc=f"replay -> {topic}", mininterval=0.5)
    sent = 0
    first_ts: int | None = None
    started = time.monotonic()
    try:
        for event in events:
            if speed:
                first_ts = event.ts_ms if first_ts is None else first_ts
                due = started + (event.ts_ms - first_ts) / 1e3 / speed
                delay = due - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
            if retime:
                event = event.model_copy(update={"ts_ms": int(time.time() * 1000)})
            producer.send(topic, key=key_of(event), value=encode(event))
            sent += 1
            if sent % 500 == 0:
                bar.update(500)
        producer.flush()
        bar.update(sent % 500)
    finally:
        bar.close()
        if own:
            producer.close(timeout=10)
    elapsed = time.monotonic() - started
    return {"sent": sent, "seconds": round(elapsed, 3), "events_per_s": round(sent / elapsed, 1) if elapsed else 0.0,
            "topic": topic}  # type: ignore[dict-item]


def replay_movielens(settings: Settings, speed: float | None = None, limit: int | None = None,
                     retime: bool = False, raw_dir: Path | None = None, progress: bool = True) -> dict:
    from features.movielens import fetch_movielens

    if raw_dir is None:
        raw_dir = fetch_movielens(settings.path(settings.data.dir), settings.data.recbole_version)
    events = list(movielens_events(raw_dir, limit))
    return replay(settings, events, speed=speed, retime=retime, progress=progress)
