"""Typed, versioned event schemas of the feature stream, validated on both ends.

Every message on a recast topic is one JSON object with an envelope of
``kind`` (what it is) and ``v`` (its schema version), then the fields of that
version::

    {"kind": "interaction", "v": 1, "event_id": "...", "ts_ms": 874965758000,
     "type": "click", "user": "196", "item": "242"}

Producers build the pydantic model (validated at construction) and send
:func:`encode`; consumers call :func:`decode`, which raises
:class:`InvalidEvent` with a machine-readable ``reason`` for anything that is
not a valid event of a registered ``(kind, v)``. Versions are immutable: a
change of fields is a new version registered beside the old one, and
consumers accept every registered version. Unknown fields are rejected
(``extra="forbid"``) so producer bugs surface in the dead-letter topic
instead of being silently ignored.

Times are event times in epoch milliseconds (``ts_ms``): ints are unambiguous
and cheap to validate, and windows are computed on them (streaming/features.py).
"""

from __future__ import annotations

import json
import math
from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, model_validator

Id = Annotated[str, Field(min_length=1, max_length=128)]
TsMs = Annotated[int, Field(gt=0, lt=2**53)]
"""Event time, epoch milliseconds."""
Currency = Annotated[str, Field(pattern=r"^[A-Z]{3}$")]
"""ISO 4217 code, e.g. EUR."""

INTERACTION_TYPES = ("view", "click", "purchase")


def _integer_version(v: Any) -> Any:
    """JSON ``true`` and ``1.0`` equal 1 in Python: a version must be an integer on the wire too."""
    if type(v) is not int:
        raise ValueError(f"the version must be an integer, not {type(v).__name__}")
    return v


V1 = Annotated[Literal[1], BeforeValidator(_integer_version)]


class InvalidEvent(ValueError):
    """A message that is not a valid event; ``reason`` is a short code for the DLQ."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


class _Event(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    event_id: Id
    ts_ms: TsMs


def _check_price(type_: str, price: float | None, currency: str | None) -> None:
    if type_ == "purchase":
        if price is None or currency is None:
            raise ValueError("a purchase needs price and currency")
        if not math.isfinite(price) or price <= 0:
            raise ValueError("price must be a positive finite number")
    elif price is not None or currency is not None:
        raise ValueError(f"a {type_} carries no price or currency")


class InteractionV1(_Event):
    """A user did something with an item: view, click or purchase (with price)."""

    kind: Literal["interaction"] = "interaction"
    v: V1 = 1
    type: Literal["view", "click", "purchase"]
    user: Id
    item: Id
    price: float | None = None
    currency: Currency | None = None
    request_id: Id | None = None
    """The scoring request that showed the item, when known."""

    @model_validator(mode="after")
    def _price(self) -> "InteractionV1":
        _check_price(self.type, self.price, self.currency)
        return self


class ShownItem(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    item: Id
    position: Annotated[int, Field(ge=1)]
    """1-based rank in the response."""
    score: float


FeatureValue = Union[int, list[int]]


class LoggedFeatures(BaseModel):
    """The model-ready feature ids a request was scored with (sampled requests only): the training-serving
    consistency check (recast/consistency.py) compares them with what the training-set builder produces."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    user: dict[Annotated[str, Field(max_length=128)], FeatureValue] = Field(max_length=64)
    items: dict[Annotated[str, Field(max_length=128)], list[FeatureValue]] = Field(max_length=64)
    """Per feature, one value per shown item, in ``items`` order."""


class ExposureV1(_Event):
    """The gateway showed ``items`` to ``user`` in answer to ``request_id``."""

    kind: Literal["exposure"] = "exposure"
    v: V1 = 1
    request_id: Id
    user: Id
    items: list[ShownItem] = Field(min_length=1)
    model: Id
    model_version: Annotated[str, Field(max_length=64)]
    experiment: Id | None = None
    variant: Id | None = None
    cold_start: bool = False
    features: LoggedFeatures | None = None

    @model_validator(mode="after")
    def _positions(self) -> "ExposureV1":
        positions = [i.position for i in self.items]
        if len(set(positions)) != len(positions):
            raise ValueError("item positions must be distinct")
        if self.features is not None and any(len(v) != len(self.items) for v in self.features.items.values()):
            raise ValueError("logged item features need one value per shown item")
        return self


class OutcomeV1(_Event):
    """A click or purchase attributed to the scoring request that showed the item."""

    kind: Literal["outcome"] = "outcome"
    v: V1 = 1
    request_id: Id
    user: Id
    item: Id
    type: Literal["click", "purchase"]
    price: float | None = None
    currency: Currency | None = None

    @model_validator(mode="after")
    def _price(self) -> "OutcomeV1":
        _check_price(self.type, self.price, self.currency)
        return self


Event = Union[InteractionV1, ExposureV1, OutcomeV1]

REGISTRY: dict[tuple[str, int], type[_Event]] = {
    ("interaction", 1): InteractionV1,
    ("exposure", 1): ExposureV1,
    ("outcome", 1): OutcomeV1,
}
"""Every (kind, version) a consumer accepts. Add new versions here; never edit old ones."""

MAX_MESSAGE_BYTES = 1 << 20


def encode(event: _Event) -> bytes:
    """JSON bytes of a (validated) event."""
    return event.model_dump_json(exclude_none=True).encode()


def key_of(event: _Event) -> bytes:
    """Partitioning key: the user, so one user's events stay in order on one partition."""
    return getattr(event, "user").encode()


def decode_envelope(
    raw: bytes | None,
    registry: dict[tuple[str, int], type[BaseModel]],
    expect: str | tuple[str, ...] | None = None,
    max_bytes: int = MAX_MESSAGE_BYTES,
    error: type[InvalidEvent] = None,  # type: ignore[assignment]
) -> BaseModel:
    """Validate one ``{"kind", "v", ...}`` message against a (kind, version) registry.

    Shared by every event family (these events, the forecast events) so they
    give the same reason codes: ``empty``, ``too_large``, ``not_json``,
    ``too_deep`` (nesting beyond the parser's recursion limit), ``not_an_object``,
    ``missing_envelope``, ``unknown_kind``, ``unsupported_version``,
    ``unexpected_kind`` (valid, but not what this consumer reads: ``expect``),
    ``schema_violation`` (fields missing, wrong types, rules broken), and
    ``undecodable`` for any other failure. It raises nothing but ``error``
    (an :class:`InvalidEvent`), whatever the bytes: a consumer that catches it
    can never be stopped by a message.
    """
    error = error or InvalidEvent
    try:
        return _decode_envelope(raw, registry, expect, max_bytes, error)
    except InvalidEvent:
        raise
    except RecursionError:
        raise error("too_deep", "nested deeper than the decoder's recursion limit") from None
    except Exception as exc:  # noqa: BLE001 - whatever a hostile message provokes is a reason, never a crash
        raise error("undecodable", f"{type(exc).__name__}: {_text(exc, 200)}") from None


def _text(value: Any, limit: int) -> str:
    """A bounded description of a value of unknown shape (str() of a deep structure recurses)."""
    if isinstance(value, str):
        return value[:limit]
    if isinstance(value, (int, float, bool)) or value is None:
        return str(value)[:limit]
    if isinstance(value, BaseException):
        try:
            return str(value)[:limit]
        except Exception:  # noqa: BLE001
            return type(value).__name__
    return f"<{type(value).__name__}>"


def _decode_envelope(raw, registry, expect, max_bytes, error) -> BaseModel:
    if not raw:
        raise error("empty", "the message has no value")
    if len(raw) > max_bytes:
        raise error("too_large", f"{len(raw)} bytes > {max_bytes}")
    expected = (expect,) if isinstance(expect, str) else expect
    if expected is not None and len(expected) == 1:
        # fast path (~3x): validate the bytes directly; anything invalid takes the path below for its reason
        for (kind, _v), model in registry.items():
            if kind != expected[0]:
                continue
            try:
                event = model.model_validate_json(raw)
            except Exception:  # noqa: BLE001 - ValidationError, or anything else: the slow path names it
                continue
            if {"kind", "v"} <= event.model_fields_set:  # the envelope was on the wire, not defaulted
                return event
    try:
        obj = json.loads(raw)
    except RecursionError:
        raise
    except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError, an int of more than 4300 digits
        raise error("not_json", _text(exc, 200)) from None
    if not isinstance(obj, dict):
        raise error("not_an_object", f"JSON {type(obj).__name__}, expected an object")
    kind, version = obj.get("kind"), obj.get("v")
    if kind is None or version is None:
        raise error("missing_envelope", "fields 'kind' and 'v' are required")
    if not isinstance(kind, str) or not any(k == kind for k, _ in registry):
        raise error("unknown_kind", f"kind {_text(kind, 64)!r}")
    model = registry.get((kind, version)) if type(version) is int else None
    if model is None:
        known = sorted(v for k, v in registry if k == kind)
        raise error("unsupported_version", f"{kind} v{_text(version, 16)} (known: {known})")
    if expected is not None and kind not in expected:
        raise error("unexpected_kind", f"{kind} on a topic that carries {expect}")
    try:
        return model.model_validate(obj)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(_text(p, 64) for p in e.get('loc', ())) or '(event)'}: {_text(e.get('msg', ''), 200)}"
            for e in exc.errors(include_input=False)[:5]
        )
        raise error("schema_violation", problems[:500]) from None


def decode(raw: bytes | None, expect: str | tuple[str, ...] | None = None) -> Event:
    """Validate one message; raises :class:`InvalidEvent` (reason codes: :func:`decode_envelope`)."""
    return decode_envelope(raw, REGISTRY, expect)  # type: ignore[return-value]


def parse_json_schema() -> dict[str, Any]:
    """JSON Schemas of every registered version (documentation, other-language producers)."""
    return {f"{k}.v{v}": m.model_json_schema() for (k, v), m in REGISTRY.items()}
