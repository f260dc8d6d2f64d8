"""Event schemas of the forecast-revision stream (same envelope rules as streaming/events.py).

| topic (default)              | key    | carries            |
|------------------------------|--------|--------------------|
| ``recast.forecasts``         | series | ForecastV1         |
| ``recast.actuals``           | series | ActualV1           |
| ``recast.forecasts.revised`` | series | RevisedForecastV1  |

Values are in the series' original units; rows are time steps, columns the
channels in the order of the bundle's ``columns``. ``ts_ms`` of a forecast is
the time of the *last input step* (the forecast origin): the input window
covers ``ts_ms - (L-1)*step_ms .. ts_ms`` and the horizon ``ts_ms + step_ms ..
ts_ms + H*step_ms``. Keep the forecasts and actuals topics at the same
partition count so one series' forecasts and actuals go to one consumer.
"""

from __future__ import annotations

from typing import Annotated, Literal, Union

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from streaming.events import V1, InvalidEvent, decode_envelope

Id = Annotated[str, Field(min_length=1, max_length=128)]
TsMs = Annotated[int, Field(gt=0, lt=2**53)]
Row = Annotated[list[float], Field(min_length=1, max_length=1024)]
MAX_MESSAGE_BYTES = 4 << 20


class InvalidForecastEvent(InvalidEvent):
    """A message on a forecast topic that is not a valid forecast event."""


def _finite_rows(rows: list[list[float]], name: str) -> None:
    width = len(rows[0])
    if any(len(r) != width for r in rows):
        raise ValueError(f"{name}: rows of different widths")
    if not np.isfinite(np.asarray(rows, dtype=np.float64)).all():
        raise ValueError(f"{name}: non-finite value")


class _Event(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    series: Id
    ts_ms: TsMs


class ForecastV1(_Event):
    """A base forecast with the input window it was made from."""

    kind: Literal["forecast"] = "forecast"
    v: V1 = 1
    forecast_id: Id
    step_ms: Annotated[int, Field(gt=0)]
    input: Annotated[list[Row], Field(min_length=1, max_length=4096)]
    """[L][C] input window, oldest first; the last row is at ``ts_ms``."""
    base: Annotated[list[Row], Field(min_length=1, max_length=4096)]
    """[H][C] base forecast for ``ts_ms + step_ms`` .. ``ts_ms + H*step_ms``."""
    model: Id | None = None

    @model_validator(mode="after")
    def _shapes(self) -> "ForecastV1":
        _finite_rows(self.input, "input")
        _finite_rows(self.base, "base")
        if len(self.input[0]) != len(self.base[0]):
            raise ValueError("input and base have different channel counts")
        return self


class ActualV1(_Event):
    """The observed values of every channel at ``ts_ms``."""

    kind: Literal["actual"] = "actual"
    v: V1 = 1
    values: Row

    @model_validator(mode="after")
    def _finite(self) -> "ActualV1":
        _finite_rows([self.values], "values")
        return self


class RevisedForecastV1(_Event):
    """PIR's revision of one base forecast, with the estimated error δ and a warning flag."""

    kind: Literal["revised_forecast"] = "revised_forecast"
    v: V1 = 1
    forecast_id: Id
    step_ms: int
    base: list[list[float]]
    revised: list[list[float]]
    delta: list[float]
    """Estimated MSE of the base forecast per channel, on the scaled values the model was trained on."""
    delta_units: list[float]
    """The same in squared original units (δ · std²)."""
    warning: bool
    """Some channel's δ is above its threshold: the base forecast is likely to be badly off."""
    warning_channels: list[str] = []
    base_channels: list[str] = []
    """Channels served the base forecast (their live rolling revised MSE is worse: forecast.fallback)."""
    store_pairs: int
    revision_ms: float
    model: str | None = None


REGISTRY: dict[tuple[str, int], type[_Event]] = {
    ("forecast", 1): ForecastV1,
    ("actual", 1): ActualV1,
    ("revised_forecast", 1): RevisedForecastV1,
}

ForecastEvent = Union[ForecastV1, ActualV1, RevisedForecastV1]


def encode(event: _Event) -> bytes:
    return event.model_dump_json(exclude_none=True).encode()


def key_of(event: _Event) -> bytes:
    return event.series.encode()


def decode(raw: bytes | None, expect: tuple[str, ...] | None = None) -> ForecastEvent:
    """Validate one message; raises :class:`InvalidForecastEvent` with a reason code
    (the same codes as the interaction events: ``streaming.events.decode_envelope``)."""
    return decode_envelope(raw, REGISTRY, expect, MAX_MESSAGE_BYTES, InvalidForecastEvent)  # type: ignore[return-value]
