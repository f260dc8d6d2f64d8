"""PIR's global-revision memory: a bounded store of matured (input window, target) pairs.

Keys are instance-normalised input windows scaled to unit length, so a dot
product is the cosine similarity (of z-normalised windows, i.e. their
Pearson correlation); targets are stored normalised by the statistics of
*their own* input window and the revision graph de-normalises them with the
query's (forecasting/contract.py). The store is a bounded ring buffer
(oldest pairs leave first) so an online service can grow it for ever, and
every query can be restricted to pairs that matured no later than a given
time (``not_after``): nothing a forecast is revised with can come from its
own future.

The top-K search runs here, outside the ONNX graph: the graph takes the K
similarities, the K normalised targets and a validity mask per channel.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from forecasting.contract import EPS, normalised_targets, unit_keys


@dataclass
class Retrieved:
    """Top-K of one query batch: ``sims`` [B, C, K], ``targets`` [B, C, K, H] (normalised), ``mask`` [B, C, K]."""

    sims: np.ndarray
    targets: np.ndarray
    mask: np.ndarray
    index: np.ndarray
    """Store slots of the hits [B, C, K] (-1 where masked)."""


class RetrievalStore:
    """Bounded store of matured (input window, target) pairs, channel-major for one matrix product per query batch.

    Every pair carries its series (an integer id from :attr:`series_ids`): a
    query names its series and only that series' pairs serve it unless the
    caller passes ``series=None`` (a store shared across series, a setting of
    the service).
    """

    def __init__(self, n_channels: int, lookback: int, horizon: int, capacity: int) -> None:
        if capacity < 1:
            raise ValueError("capacity must be >= 1")
        self.n_channels, self.lookback, self.horizon, self.capacity = n_channels, lookback, horizon, capacity
        self.keys = np.zeros((n_channels, capacity, lookback), dtype=np.float32)
        self.targets = np.zeros((n_channels, capacity, horizon), dtype=np.float32)
        self.matured_at = np.zeros(capacity, dtype=np.int64)
        """Time (ms, or a row index offline) of the last target step: when the pair became known."""
        self.series = np.zeros(capacity, dtype=np.int32)
        self.series_ids: dict[str, int] = {}
        self.size = 0
        self.next = 0
        self.added = 0
        """Pairs ever added (the ring keeps the last ``capacity``)."""

    def __len__(self) -> int:
        return self.size

    def series_id(self, name: str) -> int:
        return self.series_ids.setdefault(name, len(self.series_ids))

    def add(self, windows: np.ndarray, targets: np.ndarray, matured_at: np.ndarray | int, series: str = "") -> None:
        """Add pairs ``windows`` [N, L, C], ``targets`` [N, H, C] of ``series`` that matured at ``matured_at`` [N]."""
        windows = np.asarray(windows, dtype=np.float32)
        targets = np.asarray(targets, dtype=np.float32)
        if windows.ndim == 2:
            windows, targets = windows[None], targets[None]
        n = len(windows)
        if windows.shape[1:] != (self.lookback, self.n_channels) or targets.shape[1:] != (self.horizon, self.n_channels):
            raise ValueError(f"expected windows [N, {self.lookback}, {self.n_channels}] and targets "
                             f"[N, {self.horizon}, {self.n_channels}], got {windows.shape} and {targets.shape}")
        at = np.broadcast_to(np.asarray(matured_at, dtype=np.int64), (n,))
        self.added += n
        if n > self.capacity:  # only the newest fit
            windows, targets, at, n = windows[-self.capacity:], targets[-self.capacity:], at[-self.capacity:], self.capacity
        slots = (self.next + np.arange(n)) % self.capacity
        self.keys[:, slots] = unit_keys(windows)
        self.targets[:, slots] = normalised_targets(windows, targets)
        self.matured_at[slots] = at
        self.series[slots] = self.series_id(series)
        self.next = int((self.next + n) % self.capacity)
        self.size = min(self.capacity, self.size + n)

    def search(self, windows: np.ndarray, k: int, not_after: np.ndarray | None = None,
               exclude_near: np.ndarray | None = None, exclude_radius: int = 0,
               series: str | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` store slots per channel: (``sims`` [B, C, k] best first, ``index`` [B, C, k], -1 where none).

        One batched matrix product ``[C, B, L] @ [C, L, m]`` and an ``argpartition``
        (a BLAS top-K, exact). ``not_after`` [B]: only pairs with ``matured_at <=
        not_after[b]`` (causality). ``exclude_near`` [B] with ``exclude_radius``:
        drop pairs with ``|matured_at - exclude_near[b]| < exclude_radius``.
        ``series``: only that series' pairs (None: every pair).
        """
        q = unit_keys(np.asarray(windows, dtype=np.float32))  # [C, B, L]
        c_, b_, _ = q.shape
        m = self.size
        sims_out = np.full((b_, c_, k), -1.0, dtype=np.float32)
        idx_out = np.full((b_, c_, k), -1, dtype=np.int64)
        if m == 0:
            return sims_out, idx_out
        at = self.matured_at[:m]
        invalid = None  # [B, m] or [1, m]; built only when some pair is filtered (rarely, online: fast path)

        def drop(mask: np.ndarray) -> None:
            nonlocal invalid
            if mask.any():
                invalid = mask if invalid is None else (invalid | mask)

        if not_after is not None:
            na = np.asarray(not_after, dtype=np.int64)
            if at.max() > na.min():
                drop(at[None, :] > na[:, None])
        if exclude_near is not None and exclude_radius > 0:
            drop(np.abs(at[None, :] - np.asarray(exclude_near, dtype=np.int64)[:, None]) < exclude_radius)
        if series is not None:
            drop((self.series[:m] != self.series_ids.get(series, -1))[None, :])
        sims = np.matmul(q, self.keys[:, :m].transpose(0, 2, 1))  # [C, B, m]
        if invalid is not None:
            sims[:, np.broadcast_to(invalid, (b_, m))] = -np.inf
        take = min(k, m)
        if take < m:
            top = np.argpartition(sims, m - take, axis=-1)[..., m - take:]  # the largest, unordered
        else:
            top = np.broadcast_to(np.arange(m), sims.shape).copy()
        top_s = np.take_along_axis(sims, top, axis=-1)
        order = np.argsort(-top_s, axis=-1, kind="stable")
        top = np.take_along_axis(top, order, axis=-1)
        top_s = np.take_along_axis(top_s, order, axis=-1)
        ok = np.isfinite(top_s)
        sims_out[..., :take] = np.where(ok, top_s, -1.0).transpose(1, 0, 2)
        idx_out[..., :take] = np.where(ok, top, -1).transpose(1, 0, 2)
        return sims_out, idx_out

    def gather(self, sims: np.ndarray, index: np.ndarray) -> Retrieved:
        """The :class:`Retrieved` of a :meth:`search` (targets gathered per batch: memory stays bounded)."""
        mask = (index >= 0).astype(np.float32)
        ch = np.arange(self.n_channels)[None, :, None]
        targets = self.targets[ch, np.maximum(index, 0)] * mask[..., None]
        return Retrieved(np.where(mask > 0, sims, -1.0).astype(np.float32), targets.astype(np.float32), mask, index)

    def query(self, windows: np.ndarray, k: int, not_after: np.ndarray | None = None,
              exclude_near: np.ndarray | None = None, exclude_radius: int = 0,
              series: str | None = None) -> Retrieved:
        """:meth:`search` + :meth:`gather`: sims, normalised targets [B, C, k, H] and mask of the top-``k``."""
        return self.gather(*self.search(windows, k, not_after, exclude_near, exclude_radius, series))

    # ------------------------------------------------------------------ persistence
    def save(self, path: Path, **meta: str) -> Path:
        """``meta`` (e.g. the bundle's version) is stored beside the pairs, read back by :meth:`read_meta`."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        order = (self.next - self.size + np.arange(self.size)) % self.capacity  # oldest first
        names = sorted(self.series_ids, key=self.series_ids.get)
        np.savez_compressed(path, keys=self.keys[:, order], targets=self.targets[:, order],
                            matured_at=self.matured_at[order], series=self.series[order],
                            series_names=np.asarray(names, dtype=str), capacity=self.capacity, added=self.added,
                            **{f"meta_{k}": np.asarray(v) for k, v in meta.items()})
        return path

    @staticmethod
    def read_meta(path: Path) -> dict[str, str]:
        with np.load(Path(path)) as f:
            return {k[len("meta_"):]: str(f[k]) for k in f.files if k.startswith("meta_")}

    @classmethod
    def load(cls, path: Path, capacity: int | None = None) -> "RetrievalStore":
        with np.load(Path(path)) as f:
            keys, targets, at = f["keys"], f["targets"], f["matured_at"]
            series = f["series"] if "series" in f.files else np.zeros(len(at), dtype=np.int32)
            names = [str(n) for n in f["series_names"]] if "series_names" in f.files else [""]
            cap = int(capacity or f["capacity"])
            added = int(f["added"])
        store = cls(keys.shape[0], keys.shape[2], targets.shape[2], cap)
        store.series_ids = {n: i for i, n in enumerate(names)}
        n = min(len(at), cap)
        if n:
            store.keys[:, :n] = keys[:, -n:]
            store.targets[:, :n] = targets[:, -n:]
            store.matured_at[:n] = at[-n:]
            store.series[:n] = series[-n:]
        store.size, store.next, store.added = n, n % cap, added
        return store
