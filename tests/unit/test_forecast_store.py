"""The global retrieval store and the maturity of (input, target) pairs: bounded, causal, no leakage."""

from __future__ import annotations

import numpy as np

from forecasting.store import RetrievalStore
from forecasting.service import MaturityTracker, Pending

L, H, C = 16, 4, 2
STEP = 3_600_000


def windows(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, L, C)).astype(np.float32), rng.normal(size=(n, H, C)).astype(np.float32)


def test_cosine_of_instance_normalised_windows() -> None:
    x, y = windows(20)
    store = RetrievalStore(C, L, H, 100)
    store.add(x, y, np.arange(20))
    r = store.query(x[7:8] * 3.0 + 5.0, k=3)  # scale and offset do not matter
    assert (r.index[0, :, 0] == 7).all()
    assert np.allclose(r.sims[0, :, 0], 1.0, atol=1e-5)
    assert (np.diff(r.sims[0], axis=-1) <= 1e-7).all()  # sorted, best first
    # targets come back normalised by their own input window's statistics
    mean, std = x[7].mean(0), np.sqrt(x[7].var(0) + 1e-5)
    assert np.allclose(r.targets[0, :, 0], ((y[7] - mean) / std).T, atol=1e-5)


def test_not_after_and_exclusion_filters() -> None:
    x, y = windows(10)
    store = RetrievalStore(C, L, H, 100)
    store.add(x, y, np.arange(10) * 10)
    r = store.query(x[9:10], k=10, not_after=np.array([45]))
    valid = r.index[0][r.mask[0] > 0]
    assert set(valid.tolist()) <= {0, 1, 2, 3, 4} and r.mask[0].sum() == 5 * C
    r = store.query(x[5:6], k=10, exclude_near=np.array([50]), exclude_radius=15)
    assert not np.isin(r.index[0], [4, 5, 6]).any()


def test_store_is_a_bounded_ring_and_round_trips(tmp_path) -> None:
    x, y = windows(30)
    store = RetrievalStore(C, L, H, 8)
    store.add(x[:20], y[:20], np.arange(20))
    store.add(x[20:], y[20:], np.arange(20, 30))
    assert len(store) == 8 and store.added == 30
    assert sorted(store.matured_at.tolist()) == list(range(22, 30))  # the oldest left first
    loaded = RetrievalStore.load(store.save(tmp_path / "s.npz"))
    assert sorted(loaded.matured_at[:len(loaded)].tolist()) == list(range(22, 30))
    assert np.allclose(store.query(x[25:26], 3).sims, loaded.query(x[25:26], 3).sims)


def test_empty_store_returns_masked_slots() -> None:
    r = RetrievalStore(C, L, H, 4).query(windows(2)[0], k=3)
    assert r.mask.sum() == 0 and r.sims.shape == (2, C, 3) and r.targets.shape == (2, C, 3, H)


def pending(fid: str, origin: int, x: np.ndarray) -> Pending:
    return Pending(fid, "s", origin, STEP, x, np.zeros((H, C), np.float32), np.zeros((H, C), np.float32),
                   np.zeros(C, np.float32), np.full((H, C), np.nan, np.float32))


def test_a_pair_matures_only_when_the_whole_horizon_is_observed() -> None:
    store = RetrievalStore(C, L, H, 100)
    tracker = MaturityTracker(store, C)
    x, _ = windows(1)
    origin = 1_000 * STEP
    assert tracker.add_forecast(pending("f1", origin, x[0])) == []
    truth = np.arange(H * C, dtype=np.float32).reshape(H, C)
    for j in range(H - 1):
        assert tracker.add_actual("s", origin + (j + 1) * STEP, truth[j]) == []
        assert len(store) == 0  # partial horizons never enter the store
    assert tracker.add_actual("other", origin + H * STEP, truth[-1]) == []  # another series
    tracker.add_actual("s", origin, truth[0] * 0 + 99)  # the origin itself is input, not target
    done = tracker.add_actual("s", origin + H * STEP, truth[-1])
    assert len(done) == 1 and len(store) == 1 and not tracker.pending
    assert store.matured_at[0] == origin + H * STEP
    mean, std = x[0].mean(0), np.sqrt(x[0].var(0) + 1e-5)
    assert np.allclose(store.targets[:, 0].T, (truth - mean) / std, atol=1e-5)  # exactly the observed target


def test_out_of_order_actuals_and_redelivery() -> None:
    store = RetrievalStore(C, L, H, 100)
    tracker = MaturityTracker(store, C)
    x, _ = windows(1)
    origin = 500 * STEP
    for j in range(H):  # all actuals arrive before the forecast
        tracker.add_actual("s", origin + (j + 1) * STEP, np.ones(C, np.float32) * j)
    assert len(tracker.add_forecast(pending("f", origin, x[0]))) == 1 and len(store) == 1
    assert tracker.add_forecast(pending("f", origin, x[0])) == [] and len(store) == 1  # redelivered: once only


def test_revision_never_sees_pairs_that_matured_after_its_origin() -> None:
    store = RetrievalStore(C, L, H, 100)
    tracker = MaturityTracker(store, C)
    x, _ = windows(1)
    origin = 100 * STEP
    tracker.add_forecast(pending("f", origin, x[0]))
    for j in range(H):
        tracker.add_actual("s", origin + (j + 1) * STEP, np.ones(C, np.float32))
    assert len(store) == 1
    # a forecast issued at the same origin (or before the pair matured) cannot retrieve it
    assert store.query(x, 1, not_after=np.array([origin + (H - 1) * STEP])).mask.sum() == 0
    assert store.query(x, 1, not_after=np.array([origin + H * STEP])).mask.sum() == C


def test_pending_is_bounded() -> None:
    tracker = MaturityTracker(RetrievalStore(C, L, H, 10), C, max_pending=3)
    x, _ = windows(1)
    for i in range(5):
        tracker.add_forecast(pending(f"f{i}", (10 + i) * STEP, x[0]))
    assert len(tracker.pending) == 3 and tracker.dropped == 2
