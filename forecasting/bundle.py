"""The forecast bundle loaded for inference: ``forecast.json`` + ``pir.onnx`` (+ ``base.onnx``) + the store.

The model side of the revision service (onnxruntime + numpy, no torch), apart from
the Kafka loop so the replay producer and the benchmarks can load it on its own.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from forecasting.contract import span_offsets, time_features
from forecasting.store import RetrievalStore, Retrieved

ONLINE_STORE = "store.online.npz"


class ForecastBundle:
    """``forecast.json`` + ``pir.onnx`` (+ ``base.onnx``) + the store, loaded for inference."""

    def __init__(self, path: Path, threads: int = 1, store_capacity: int | None = None,
                 load_online_store: bool = True, shared_store: bool = False) -> None:
        import onnxruntime as ort

        self.path = Path(path)
        meta_file = self.path / "forecast.json"
        if not meta_file.exists():
            raise FileNotFoundError(f"{meta_file} missing: run `recast forecast train` (or export) first")
        self.meta: dict[str, Any] = json.loads(meta_file.read_text())
        m = self.meta
        self.columns: list[str] = m["columns"]
        self.seq_len, self.pred_len, self.n_channels = m["seq_len"], m["pred_len"], m["n_channels"]
        self.top_k, self.step_ms = m["top_k"], m["step_ms"]
        self.mean = np.asarray(m["scaler"]["mean"], dtype=np.float32)
        self.std = np.asarray(m["scaler"]["std"], dtype=np.float32)
        self.version: str = m.get("version", "")
        self.series_name: str = m.get("series", "")
        self.shared_store = shared_store
        """False: a forecast only retrieves pairs of its own series (the training pairs belong to the bundle's)."""
        self.delta_p90 = np.asarray(m.get("delta_p90", [np.inf] * self.n_channels), dtype=np.float32)
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.pir = ort.InferenceSession(str(self.path / "pir.onnx"), opts, providers=["CPUExecutionProvider"])
        # The exporter drops graph inputs the revision never reads (the calendar marks when the
        # guard or the K/parts choice left only the global revision): feed only what the graph declares.
        self.pir_inputs = frozenset(i.name for i in self.pir.get_inputs())
        base = self.path / "base.onnx"
        self.base = ort.InferenceSession(str(base), opts, providers=["CPUExecutionProvider"]) if base.exists() else None
        online = self.path / ONLINE_STORE
        src = self.path / "store.npz"
        if load_online_store and online.exists():
            if RetrievalStore.read_meta(online).get("bundle_version") == self.version:
                src = online
            else:  # the online store of another (older) bundle: its pairs were scaled/keyed for that one
                online.rename(online.with_suffix(".stale.npz"))
        self.store = RetrievalStore.load(src, store_capacity)
        self.store_source = src.name

    def save_online_store(self) -> Path:
        """The grown store, tagged with this bundle's version (a retrained bundle will not load it)."""
        return self.store.save(self.path / ONLINE_STORE, bundle_version=self.version)

    def scale(self, v: np.ndarray) -> np.ndarray:
        return ((v - self.mean) / self.std).astype(np.float32)

    def unscale(self, v: np.ndarray) -> np.ndarray:
        return (v * self.std + self.mean).astype(np.float32)

    def marks(self, origin_ms: np.ndarray, step_ms: np.ndarray) -> np.ndarray:
        """Calendar features of the L input steps and H horizon steps of each forecast: [B, L+H, F]."""
        ts = origin_ms[:, None] + span_offsets(self.seq_len, self.pred_len)[None, :] * step_ms[:, None]
        return time_features(ts)

    def base_forecast(self, windows: np.ndarray) -> np.ndarray:
        """The exported backbone on raw-unit windows [B, L, C] -> [B, H, C] raw units (replay producer)."""
        if self.base is None:
            raise RuntimeError(f"{self.path} has no base.onnx")
        out = self.base.run(["forecast"], {"x": self.scale(windows)})[0]
        return self.unscale(out)

    def retrieve(self, x: np.ndarray, origin_ms: np.ndarray, series: list[str] | None = None) -> Retrieved:
        """Top-K among pairs matured by each origin, of each forecast's own series unless the store is shared."""
        if self.shared_store or series is None:
            return self.store.query(x, self.top_k, not_after=origin_ms)
        names = np.asarray(series)
        sims = np.empty((len(x), self.n_channels, self.top_k), dtype=np.float32)
        index = np.empty((len(x), self.n_channels, self.top_k), dtype=np.int64)
        for name in np.unique(names):
            rows = np.flatnonzero(names == name)
            sims[rows], index[rows] = self.store.search(x[rows], self.top_k, not_after=origin_ms[rows],
                                                        series=str(name))
        return self.store.gather(sims, index)

    def revise(self, inputs: np.ndarray, bases: np.ndarray, origin_ms: np.ndarray, step_ms: np.ndarray,
               series: list[str] | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Raw-unit inputs [B, L, C] and base forecasts [B, H, C] -> (revised raw [B, H, C], δ scaled [B, C])."""
        x, b = self.scale(inputs), self.scale(bases)
        r = self.retrieve(x, origin_ms, series)
        feeds = {"x": x, "base": b, "marks": self.marks(origin_ms, step_ms), "sims": r.sims,
                 "targets": r.targets, "mask": r.mask}
        revised, delta = self.pir.run(["revised", "delta"], {k: v for k, v in feeds.items() if k in self.pir_inputs})
        return self.unscale(revised), delta
