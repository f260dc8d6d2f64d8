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
    """Bounded store of matured (input window, target) pairs, channel-major for fast per-channel search."""

    def __init__(self, n_channels: int, lookback: int, horizon: int, capacity: int) -> None:
        if capacity < 1:
            raise ValueError("capacity must be >= 1")
        self.n_channels, self.lookback, self.horizon, self.capacity = n_channels, lookback, horizon, capacity
        self.keys = np.zeros((n_channels, capacity, lookback), dtype=np.float32)
        self.targets = np.zeros((n_channels, capacity, horizon), dtype=np.float32)
        self.matured_at = np.zeros(capacity, dtype=np.int64)
        """Time (ms, or a row index offline) of the last target step: when the pair became known."""
        self.size = 0
        self.next = 0
        self.added = 0
        """Pairs ever added (the ring keeps the last ``capacity``)."""

    def __len__(self) -> int:
        return self.size

    def add(self, windows: np.ndarray, targets: np.ndarray, matured_at: np.ndarray | int) -> None:
        """Add pairs ``windows`` [N, L, C], ``targets`` [N, H, C] that matured at ``matured_at`` [N]."""
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
        keys = unit_keys(windows)
        tn = normalised_targets(windows, targets)
        slots = (self.next + np.arange(n)) % self.capacity
        self.keys[:, slots] = keys
        self.targets[:, slots] = tn
        self.matured_at[slots] = at
        self.next = int((self.next + n) % self.capacity)
        self.size = min(self.capacity, self.size + n)

    def query(self, windows: np.ndarray, k: int, not_after: np.ndarray | None = None,
              exclude_near: np.ndarray | None = None, exclude_radius: int = 0) -> Retrieved:
        """Top-``k`` pairs per channel by cosine similarity of instance-normalised windows.

        ``not_after`` [B]: only pairs with ``matured_at <= not_after[b]`` (causality online).
        ``exclude_near`` [B] with ``exclude_radius``: drop pairs with
        ``|matured_at - exclude_near[b]| < exclude_radius`` (offline training: a query
        must not retrieve itself or windows overlapping it).
        Slots beyond the store's size or filtered out come back with ``mask`` 0.
        """
        q = unit_keys(np.asarray(windows, dtype=np.float32))  # [C, B, L]
        c_, b_, _ = q.shape
        m = self.size
        kk = k
        sims_out = np.full((b_, c_, kk), -1.0, dtype=np.float32)
        tgt_out = np.zeros((b_, c_, kk, self.horizon), dtype=np.float32)
        mask_out = np.zeros((b_, c_, kk), dtype=np.float32)
        idx_out = np.full((b_, c_, kk), -1, dtype=np.int64)
        if m == 0:
            return Retrieved(sims_out, tgt_out, mask_out, idx_out)
        invalid = None
        at = self.matured_at[:m]
        if not_after is not None:
            invalid = at[None, :] > np.asarray(not_after, dtype=np.int64)[:, None]
        if exclude_near is not None and exclude_radius > 0:
            near = np.abs(at[None, :] - np.asarray(exclude_near, dtype=np.int64)[:, None]) < exclude_radius
            invalid = near if invalid is None else (invalid | near)
        take = min(kk, m)
        for c in range(c_):
            sims = q[c] @ self.keys[c, :m].T  # [B, m]
            if invalid is not None:
                sims = np.where(invalid, -np.inf, sims)
            if take < m:
                top = np.argpartition(-sims, take - 1, axis=1)[:, :take]
            else:
                top = np.broadcast_to(np.arange(m), (b_, m)).copy()
            top_s = np.take_along_axis(sims, top, axis=1)
            order = np.argsort(-top_s, axis=1, kind="stable")
            top = np.take_along_axis(top, order, axis=1)
            top_s = np.take_along_axis(top_s, order, axis=1)
            ok = np.isfinite(top_s)
            sims_out[:, c, :take] = np.where(ok, top_s, -1.0)
            mask_out[:, c, :take] = ok
            tgt_out[:, c, :take] = self.targets[c, top] * ok[..., None]
            idx_out[:, c, :take] = np.where(ok, top, -1)
        return Retrieved(sims_out, tgt_out, mask_out, idx_out)

    # ------------------------------------------------------------------ persistence
    def save(self, path: Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        order = (self.next - self.size + np.arange(self.size)) % self.capacity  # oldest first
        np.savez_compressed(path, keys=self.keys[:, order], targets=self.targets[:, order],
                            matured_at=self.matured_at[order], capacity=self.capacity, added=self.added)
        return path

    @classmethod
    def load(cls, path: Path, capacity: int | None = None) -> "RetrievalStore":
        with np.load(Path(path)) as f:
            keys, targets, at = f["keys"], f["targets"], f["matured_at"]
            cap = int(capacity or f["capacity"])
            added = int(f["added"])
        store = cls(keys.shape[0], keys.shape[2], targets.shape[2], cap)
        n = min(len(at), cap)
        store.keys[:, :n] = keys[:, -n:] if n else keys[:, :0]
        store.targets[:, :n] = targets[:, -n:] if n else targets[:, :0]
        store.matured_at[:n] = at[-n:] if n else at[:0]
        store.size, store.next, store.added = n, n % cap, added
        return store
