"""Hostile records for the interaction topic, each with the dead-letter reason it must get.

What producers in the wild send by mistake or on purpose: bytes that are not
JSON, nesting deeper than any parser's recursion limit, strings of megabytes,
fields of the wrong type, every edge of the enums and bounds, a version that
is ``true`` or ``1.0``, events of another kind. :func:`hostile_records` yields
``(key, value, reason)``; the reliability tests and benchmarks/stream_hostile.py
interleave them with valid events and check that every one reaches the
dead-letter topic exactly once with that reason while the valid events are
applied exactly as a from-scratch recomputation says.
"""

from __future__ import annotations

import json
import random
from typing import Callable, Iterator

from streaming.events import MAX_MESSAGE_BYTES, InteractionV1, encode, key_of

_VALID = {"kind": "interaction", "v": 1, "event_id": "e", "ts_ms": 1_600_000_000_000, "type": "click",
          "user": "u", "item": "i"}


def _with(**fields) -> bytes:
    return json.dumps({**_VALID, **fields}).encode()


def _without(field: str) -> bytes:
    return json.dumps({k: v for k, v in _VALID.items() if k != field}).encode()


def _nested(depth: int, opener: bytes = b"[", closer: bytes = b"]") -> bytes:
    return opener * depth + closer * depth


_CASES: list[tuple[str, Callable[[random.Random], bytes]]] = [
    ("not_json", lambda r: bytes(r.randrange(128, 256) for _ in range(r.randint(1, 64)))),  # invalid UTF-8
    ("not_json", lambda r: b"{" + r.choice([b"truncated", b'"kind": ', b'"a": 1,'])),
    ("not_json", lambda r: _VALID["kind"].encode()),
    ("not_json", lambda r: b'{"kind": "interaction", "v": 1, "ts_ms": ' + b"9" * r.randint(4400, 6000) + b"}"),
    ("not_an_object", lambda r: r.choice([b"NaN", b"-Infinity"])),
    ("too_deep", lambda r: _nested(r.randint(1200, 8000))),
    ("too_deep", lambda r: b'{"kind": "interaction", "v": 1, "user": ' + _nested(r.randint(1200, 5000)) + b"}"),
    ("too_deep", lambda r: b'{"a": ' * 3000 + b"1" + b"}" * 3000),
    ("not_an_object", lambda r: r.choice([b"[]", b"1", b'"interaction"', b"null", b"true", b"[{}]"])),
    ("missing_envelope", lambda r: _without(r.choice(["kind", "v"]))),
    ("missing_envelope", lambda r: _with(v=None)),
    ("unknown_kind", lambda r: _with(kind=r.choice(["rating", "Interaction", "", "interaction "]))),
    ("unknown_kind", lambda r: _with(kind=["interaction"])),
    ("unsupported_version", lambda r: _with(v=r.choice([True, 1.0, 0, 2, -1, "1", [1], {"v": 1}, 2**70]))),
    ("unexpected_kind", lambda r: json.dumps({"kind": "outcome", "v": 1, "event_id": "o", "ts_ms": 5,
                                               "request_id": "r", "user": "u", "item": "i",
                                               "type": "click"}).encode()),
    ("schema_violation", lambda r: _with(type=r.choice(["Click", "like", "", "CLICK", None, 1]))),
    ("schema_violation", lambda r: _with(ts_ms=r.choice([0, -1, 2**53, "1600000000000", 1.5, True, None]))),
    ("schema_violation", lambda r: _with(user=r.choice(["", "x" * 129, 7, None, ["u"]]))),
    ("schema_violation", lambda r: _with(item="i" * r.randint(129, 4000))),
    ("schema_violation", lambda r: _without(r.choice(["event_id", "ts_ms", "type", "user", "item"]))),
    ("schema_violation", lambda r: _with(type="purchase")),  # no price
    ("schema_violation", lambda r: _with(type="purchase", price=r.choice([0, -3.5, float("nan"), float("inf")]),
                                         currency="EUR")),
    ("schema_violation", lambda r: _with(type="purchase", price=9.5, currency=r.choice(["eur", "EURO", "", 1]))),
    ("schema_violation", lambda r: _with(price=1.0, currency="EUR")),  # a click with a price
    ("schema_violation", lambda r: _with(extra=r.random())),
]
"""(reason, builder) pairs; every builder's output gets exactly that reason from streaming.events.decode."""

_LARGE: list[tuple[str, Callable[[random.Random], bytes]]] = [
    ("schema_violation", lambda r: _with(item="i" * r.randint(100_000, 900_000))),  # huge, under the size limit
    ("too_large", lambda r: _with(item="x" * (MAX_MESSAGE_BYTES + r.randint(1, 2 << 20)))),
]
"""Records of 0.1-3 MiB: one in ``large_every`` (producers need ``max_request_size`` > 3 MiB)."""

REASONS = sorted({reason for reason, _ in _CASES + _LARGE} | {"empty"})


def hostile_records(n: int, seed: int = 0, large_every: int = 200) -> Iterator[tuple[bytes | None, bytes | None, str]]:
    """``n`` hostile ``(key, value, reason)`` records; about one in ``large_every`` is over 1 MiB."""
    rng = random.Random(seed)
    for k in range(n):
        key = rng.choice([None, b"", f"h{k}".encode(), bytes(rng.randrange(256) for _ in range(8))])
        if k % 97 == 13:  # a tombstone (no value) needs a key
            yield key or b"k", rng.choice([None, b""]), "empty"
            continue
        reason, build = rng.choice(_LARGE if k % large_every == large_every // 2 else _CASES)
        yield key, build(rng), reason


def valid_events(n: int, prefix: str, seed: int = 0, users: int = 200, items: int = 120) -> list[InteractionV1]:
    """Valid interactions with ids of their own (``prefix``), event times increasing with noise."""
    rng = random.Random(seed)
    t0, out = 1_600_000_000_000, []
    for k in range(n):
        kind = rng.choice(("view", "view", "click", "click", "purchase"))
        out.append(InteractionV1(
            event_id=f"{prefix}-{k}", ts_ms=t0 + k * 30_000 + rng.randint(-300_000, 300_000), type=kind,
            user=f"{prefix}-u{rng.randrange(users)}", item=f"{prefix}-i{rng.randrange(items)}",
            **({"price": round(rng.uniform(1, 50), 2), "currency": "EUR"} if kind == "purchase" else {}),
        ))
    return out


def interleave(valid: list[InteractionV1], hostile: list[tuple[bytes | None, bytes | None, str]],
               seed: int = 0) -> list[tuple[bytes | None, bytes | None, str | None]]:
    """One stream of ``(key, value, reason)`` (reason None: valid): the valid events in order, the
    hostile records at random places."""
    rng = random.Random(seed)
    slots = sorted(rng.randrange(len(valid) + 1) for _ in hostile)
    out: list[tuple[bytes | None, bytes | None, str | None]] = []
    h = 0
    for k, e in enumerate(valid):
        while h < len(hostile) and slots[h] == k:
            out.append(hostile[h])
            h += 1
        out.append((key_of(e), encode(e), None))
    out.extend(hostile[h:])
    return out
