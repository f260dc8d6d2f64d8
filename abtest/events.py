"""Exposure and outcome event tables, and the sinks that receive them.

Exposure: one row per (served request, experiment it was exposed to); a request
outside every experiment (or before one starts) is logged once with null
experiment/variant, so the same log gives the pre-period covariates for CUPED.
``n_items`` is the number of items shown (impressions).

Outcome: one row per click or purchase, with the request it is attributed to;
``value`` is the order value (GMV) of a purchase, 0 for a click.

Sinks receive batches of rows (polars frames with these schemas). The
in-process ones are here; a Kafka sink adapts ``streaming/``'s exposure
producer when one is present (see ``kafka_sink``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol, Sequence

import polars as pl

TS = pl.Datetime("us")

EXPOSURE_SCHEMA: dict[str, pl.DataType] = {
    "request_id": pl.String,
    "ts": TS,
    "unit_id": pl.String,
    "layer": pl.String,
    "experiment": pl.String,
    "variant": pl.String,
    "model": pl.String,
    "n_items": pl.Int32,
}

OUTCOME_SCHEMA: dict[str, pl.DataType] = {
    "request_id": pl.String,
    "ts": TS,
    "unit_id": pl.String,
    "item_id": pl.String,
    "event": pl.String,
    "value": pl.Float64,
}

CLICK, PURCHASE = "click", "purchase"


def empty_exposures() -> pl.DataFrame:
    return pl.DataFrame(schema=EXPOSURE_SCHEMA)


def empty_outcomes() -> pl.DataFrame:
    return pl.DataFrame(schema=OUTCOME_SCHEMA)


def exposures_frame(rows: Sequence[dict[str, Any]]) -> pl.DataFrame:
    return pl.DataFrame(list(rows), schema=EXPOSURE_SCHEMA)


def outcomes_frame(rows: Sequence[dict[str, Any]]) -> pl.DataFrame:
    return pl.DataFrame(list(rows), schema=OUTCOME_SCHEMA)


class EventSink(Protocol):
    """Where the simulator (or the gateway) writes what happened."""

    def write_exposures(self, frame: pl.DataFrame) -> None: ...

    def write_outcomes(self, frame: pl.DataFrame) -> None: ...

    def close(self) -> None: ...


class MemorySink:
    """Keeps every batch; ``exposures()`` / ``outcomes()`` concatenate them."""

    def __init__(self) -> None:
        self._exp: list[pl.DataFrame] = []
        self._out: list[pl.DataFrame] = []

    def write_exposures(self, frame: pl.DataFrame) -> None:
        self._exp.append(frame.select(list(EXPOSURE_SCHEMA)).cast(EXPOSURE_SCHEMA))

    def write_outcomes(self, frame: pl.DataFrame) -> None:
        self._out.append(frame.select(list(OUTCOME_SCHEMA)).cast(OUTCOME_SCHEMA))

    def exposures(self) -> pl.DataFrame:
        return pl.concat(self._exp) if self._exp else empty_exposures()

    def outcomes(self) -> pl.DataFrame:
        return pl.concat(self._out) if self._out else empty_outcomes()

    def close(self) -> None:
        pass


class ParquetSink:
    """Writes ``exposures/part-NNNNN.parquet`` and ``outcomes/part-NNNNN.parquet`` under a directory."""

    def __init__(self, directory: str | Path) -> None:
        self.dir = Path(directory)
        for sub in ("exposures", "outcomes"):
            (self.dir / sub).mkdir(parents=True, exist_ok=True)
            for old in (self.dir / sub).glob("part-*.parquet"):
                old.unlink()
        self._parts = {"exposures": 0, "outcomes": 0}

    def _write(self, kind: str, frame: pl.DataFrame, schema: dict[str, pl.DataType]) -> None:
        if frame.height == 0:
            return
        path = self.dir / kind / f"part-{self._parts[kind]:05d}.parquet"
        frame.select(list(schema)).cast(schema).write_parquet(path)
        self._parts[kind] += 1

    def write_exposures(self, frame: pl.DataFrame) -> None:
        self._write("exposures", frame, EXPOSURE_SCHEMA)

    def write_outcomes(self, frame: pl.DataFrame) -> None:
        self._write("outcomes", frame, OUTCOME_SCHEMA)

    def close(self) -> None:
        pass


def scan_events(directory: str | Path) -> tuple[pl.LazyFrame, pl.LazyFrame]:
    """Lazy exposures and outcomes written by ``ParquetSink`` (or single files ``exposures.parquet``)."""
    d = Path(directory)

    def one(kind: str, schema: dict[str, pl.DataType]) -> pl.LazyFrame:
        if (d / kind).is_dir() and any((d / kind).glob("*.parquet")):
            return pl.scan_parquet(d / kind / "*.parquet")
        if (d / f"{kind}.parquet").exists():
            return pl.scan_parquet(d / f"{kind}.parquet")
        raise FileNotFoundError(f"no {kind} under {d} (run `recast abtest simulate` or point --data at logged events)")

    return one("exposures", EXPOSURE_SCHEMA), one("outcomes", OUTCOME_SCHEMA)


class FanoutSink:
    """Writes every batch to several sinks (e.g. parquet for the report and Kafka for the stream)."""

    def __init__(self, *sinks: EventSink) -> None:
        self.sinks = sinks

    def write_exposures(self, frame: pl.DataFrame) -> None:
        for s in self.sinks:
            s.write_exposures(frame)

    def write_outcomes(self, frame: pl.DataFrame) -> None:
        for s in self.sinks:
            s.write_outcomes(frame)

    def close(self) -> None:
        for s in self.sinks:
            s.close()
