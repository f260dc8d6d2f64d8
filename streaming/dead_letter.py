"""Dead-letter records: bounded in size, fully described by headers, written once per source offset.

A record that cannot be decoded goes to ``kafka.dead_letter_topic`` with its
original key and value and these headers:

| header | value |
|---|---|
| ``reason`` | the decoder's reason code (streaming/events.py) |
| ``detail`` | what exactly was wrong (at most 1,000 bytes) |
| ``source_topic``, ``source_partition``, ``source_offset`` | where the record came from |
| ``size``, ``sha256`` | length and SHA-256 (hex) of the original value |
| ``truncated`` | ``true`` when the value is only its first ``stream.dead_letter_excerpt_bytes`` bytes |

A value longer than the excerpt bound (a 5 MiB record, say) is sent as its
first bytes only, so the dead-letter write can never fail on size: the
headers still identify the original (``sha256``) and where to re-read it
(``source_*``). Keys longer than ``MAX_KEY_BYTES`` are cut the same way
(``key_size``, ``key_sha256``). Should the broker still refuse a record as
too large (its own ``message.max.bytes`` set lower), it is sent once more
without key and value, headers only.

Idempotence: the processor records, per source partition, the next offset
whose dead letter has not been acknowledged yet (``StateStore.dead_letter_marks``)
right after the acknowledgement, and never sends a record below that mark again,
so retries of a failed write phase and restarts do not duplicate dead letters.
Only a crash between the acknowledgement and that record (one SQLite
commit) can repeat the records of one batch; readers dedupe on
``source_partition``/``source_offset``.
"""

from __future__ import annotations

import hashlib
import logging
from typing import Any, Sequence

log = logging.getLogger("recast.stream")

MAX_KEY_BYTES = 1024
MAX_DETAIL_BYTES = 1000
HEADROOM_BYTES = 8192
"""Room left in a producer request for the key, the headers and the record framing."""


def excerpt_limit(excerpt_bytes: int, max_request_bytes: int) -> int:
    """The value bound actually used: the setting, capped so one record always fits one request."""
    return max(0, min(excerpt_bytes, max_request_bytes - HEADROOM_BYTES))


def dead_letter_record(value: bytes | None, key: bytes | None, reason: str, detail: str, source_topic: str,
                       partition: int, offset: int, excerpt_bytes: int) -> tuple[bytes | None, bytes, list]:
    """``(key, value, headers)`` of the dead letter of one record (see the module docstring)."""
    value = value or b""
    truncated = len(value) > excerpt_bytes
    headers = [
        ("reason", reason.encode()),
        ("detail", detail.encode("utf-8", "replace")[:MAX_DETAIL_BYTES]),
        ("source_topic", source_topic.encode()),
        ("source_partition", str(partition).encode()),
        ("source_offset", str(offset).encode()),
        ("size", str(len(value)).encode()),
        ("sha256", hashlib.sha256(value).hexdigest().encode()),
        ("truncated", b"true" if truncated else b"false"),
    ]
    if key is not None and len(key) > MAX_KEY_BYTES:
        headers += [("key_size", str(len(key)).encode()), ("key_sha256", hashlib.sha256(key).hexdigest().encode())]
        key = key[:MAX_KEY_BYTES]
    return key, value[:excerpt_bytes], headers


def send_dead_letters(producer, topic: str, letters: Sequence[tuple[int, int, bytes | None, bytes, list]],
                      timeout_s: float = 30.0) -> tuple[dict[int, int], Exception | None]:
    """Send ``(partition, offset, key, value, headers)`` letters and wait for the acknowledgements.

    Returns the next unacknowledged source offset per partition (every letter of
    a partition below it is on the topic) and the first error, if any: the caller
    records the marks, then raises the error (the batch is retried).
    """
    from kafka.errors import MessageSizeTooLargeError

    futures: list = []
    for _, _, key, value, headers in letters:
        try:
            futures.append(producer.send(topic, key=key, value=value, headers=headers))
        except MessageSizeTooLargeError:
            futures.append(_headers_only(producer, topic, headers))
        except Exception as exc:  # noqa: BLE001 - no metadata for the topic, producer closed, ...
            futures.append(exc)
    try:
        producer.flush(timeout=timeout_s)
    except Exception:  # noqa: BLE001 - a timeout shows again in the futures below
        pass
    marks: dict[int, int] = {}
    failed: set[int] = set()
    first_error: Exception | None = None
    for (partition, offset, _key, _value, headers), future in zip(letters, futures):
        if partition in failed:
            continue
        try:
            if isinstance(future, Exception):
                raise future
            try:
                future.get(timeout=timeout_s)
            except MessageSizeTooLargeError:  # the broker's own limit is lower than the producer's
                _headers_only(producer, topic, headers).get(timeout=timeout_s)
        except Exception as exc:  # noqa: BLE001 - returned to the caller, which fails the batch
            failed.add(partition)
            first_error = first_error or exc
            continue
        marks[partition] = offset + 1
    return marks, first_error


def _headers_only(producer, topic: str, headers: list) -> Any:
    log.warning("a dead letter was refused as too large: sending its headers only")
    headers = [(k, v) for k, v in headers if k != "truncated"] + [("truncated", b"true")]
    return producer.send(topic, key=None, value=b"", headers=headers)
