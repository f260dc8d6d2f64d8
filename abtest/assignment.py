"""Deterministic assignment of units (users) to experiment variants.

``bucket(unit, salt)`` is the first 8 bytes of SHA-256 over ``"salt:unit"``
modulo 10,000: the same in every process, on every machine and in every
language that has SHA-256 (Python's ``hash()`` is salted per process and is
never used). Three independent hashes decide a unit's fate:

1. the **holdout** hash (global salt): buckets below ``fraction * 10,000`` are
   held out of every experiment and served the default model;
2. one **layer** hash per layer (layer salt): the experiment whose bucket range
   contains the unit's layer bucket, within its ramped prefix, enrolls it, so
   experiments in one layer never share a unit, while layers, hashed with
   different salts, are independent (orthogonal) of each other;
3. one **variant** hash per experiment (experiment salt): contiguous bucket
   ranges proportional to the variant weights.

Ramping (raising ``traffic``) only extends the enrolled prefix of the layer
range and never touches the variant hash, so every unit enrolled earlier keeps
its variant.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime
from typing import Iterable, Sequence

import numpy as np
import polars as pl

from abtest.config import N_BUCKETS, Experiment, ExperimentsConfig, Layer


def bucket(unit_id: str | int, salt: str) -> int:
    """The unit's bucket in [0, 10,000) for this salt."""
    digest = hashlib.sha256(f"{salt}:{unit_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % N_BUCKETS


def buckets(unit_ids: Sequence[str | int] | np.ndarray | pl.Series, salt: str) -> np.ndarray:
    """``bucket`` over many units (int32 array)."""
    prefix = f"{salt}:".encode()
    sha = hashlib.sha256
    out = np.fromiter(
        (int.from_bytes(sha(prefix + str(u).encode()).digest()[:8], "big") % N_BUCKETS for u in unit_ids),
        dtype=np.int64,
        count=len(unit_ids),
    )
    return out.astype(np.int32)


@dataclass(frozen=True)
class Assignment:
    experiment: str
    layer: str
    variant: str
    model: str | None = None


def _is_active(e: Experiment, now: datetime | None) -> bool:
    if not e.enabled:
        return False
    if now is None:
        return True
    if e.start is not None and now < _naive(e.start, now):
        return False
    if e.end is not None and now >= _naive(e.end, now):
        return False
    return True


def _naive(t: datetime, like: datetime) -> datetime:
    """Compare naive and aware datetimes as UTC."""
    if (t.tzinfo is None) == (like.tzinfo is None):
        return t
    return t.replace(tzinfo=None) if like.tzinfo is None else t.replace(tzinfo=like.tzinfo)


class Assigner:
    """Assigns units to the experiments of one config."""

    def __init__(self, config: ExperimentsConfig) -> None:
        self.config = config
        self._bounds = {e.name: np.asarray(e.variant_bounds()) for _, e in config.experiments()}

    def in_holdout(self, unit_id: str | int) -> bool:
        h = self.config.holdout
        return h.n_buckets > 0 and bucket(unit_id, h.salt) < h.n_buckets

    def variant_of(self, e: Experiment, unit_id: str | int) -> str:
        vb = bucket(unit_id, e.hash_salt)
        return e.variants[int(np.searchsorted(self._bounds[e.name], vb, side="right"))].name

    def experiment_in_layer(self, layer: Layer, unit_id: str | int, now: datetime | None = None) -> Experiment | None:
        lb = bucket(unit_id, layer.hash_salt)
        for e in layer.experiments:
            if _is_active(e, now) and e.buckets[0] <= lb < e.enrolled_end:
                return e
        return None

    def assign(self, unit_id: str | int, now: datetime | None = None) -> list[Assignment]:
        """The unit's assignments, one per layer at most ([] in the holdout)."""
        if self.in_holdout(unit_id):
            return []
        out = []
        for layer in self.config.layers:
            e = self.experiment_in_layer(layer, unit_id, now)
            if e is not None:
                name = self.variant_of(e, unit_id)
                out.append(Assignment(e.name, layer.name, name, e.variant(name).model))
        return out

    def assign_experiment(
        self, experiment: str, unit_ids: Sequence[str] | pl.Series, now: datetime | None = None
    ) -> pl.DataFrame:
        """Vectorised: ``unit_id``, ``variant`` (null when not enrolled) and ``holdout`` for one experiment."""
        layer, e = self.config.find(experiment)
        ids = pl.Series("unit_id", unit_ids, dtype=pl.String) if not isinstance(unit_ids, pl.Series) else unit_ids.cast(pl.String).alias("unit_id")
        n = len(ids)
        h = self.config.holdout
        held = buckets(ids, h.salt) < h.n_buckets if h.n_buckets else np.zeros(n, dtype=bool)
        if _is_active(e, now):
            lb = buckets(ids, layer.hash_salt)
            enrolled = (lb >= e.buckets[0]) & (lb < e.enrolled_end) & ~held
            vidx = np.searchsorted(self._bounds[e.name], buckets(ids, e.hash_salt), side="right")
        else:
            enrolled = np.zeros(n, dtype=bool)
            vidx = np.zeros(n, dtype=np.int64)
        names = np.asarray([v.name for v in e.variants], dtype=object)
        variant = np.where(enrolled, names[vidx], None)
        return pl.DataFrame(
            {"unit_id": ids, "variant": pl.Series(variant.tolist(), dtype=pl.String), "holdout": held}
        )

    def assign_many(self, unit_ids: Iterable[str], now: datetime | None = None) -> pl.DataFrame:
        """Long table of (unit_id, layer, experiment, variant, model) for every enrollment."""
        rows = [
            {"unit_id": str(u), "layer": a.layer, "experiment": a.experiment, "variant": a.variant, "model": a.model}
            for u in unit_ids
            for a in self.assign(u, now)
        ]
        schema = {c: pl.String for c in ("unit_id", "layer", "experiment", "variant", "model")}
        return pl.DataFrame(rows, schema=schema)
