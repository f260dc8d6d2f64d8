"""Export a trained backbone and its PIR layer to ONNX, check parity, write the service bundle.

Graphs (dynamic batch):

* ``base.onnx``: ``x`` [B, L, C] -> ``forecast`` [B, H, C] (the backbone, so
  the replay producer can issue base forecasts without torch);
* ``pir.onnx``: ``x`` [B, L, C], ``base`` [B, H, C], ``marks`` [B, L+H, F],
  ``sims`` [B, C, K], ``targets`` [B, C, K, H], ``mask`` [B, C, K] ->
  ``revised`` [B, H, C], ``delta`` [B, C].

The top-K search is not in the graph: the retrieval store stays numpy
(``store.npz``, forecasting/store.py) so the online service can grow it
with matured pairs. Both graphs are checked against PyTorch on real windows
(max |ONNX Runtime - PyTorch| <= 1e-5, else the export fails).

Bundle (``forecast.json`` says what is inside)::

    <dir>/base.onnx  pir.onnx  store.npz  forecast.json
"""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from forecasting.store import RetrievalStore
from training.forecasting.data import Prepared
from training.forecasting.pir import PIR
from training.forecasting.train import PIRArrays

PIR_INPUTS = ["x", "base", "marks", "sims", "targets", "mask"]
PIR_OUTPUTS = ["revised", "delta"]
BUNDLE_FORMAT = 2


def _session(path: Path):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def export_backbone(model: nn.Module, path: Path, seq_len: int, n_channels: int, opset: int = 17) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    model.eval()
    example = torch.zeros(2, seq_len, n_channels)
    torch.onnx.export(model, (example,), str(path), input_names=["x"], output_names=["forecast"],
                      dynamic_axes={"x": {0: "batch"}, "forecast": {0: "batch"}}, opset_version=opset, dynamo=False)
    return path


def export_pir(pir: PIR, path: Path, opset: int = 17) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    pir.eval()
    c = pir.config
    b = 2
    example = (torch.zeros(b, c.seq_len, c.n_channels), torch.zeros(b, c.pred_len, c.n_channels),
               torch.zeros(b, c.seq_len + c.pred_len, c.n_exo), torch.zeros(b, c.n_channels, c.top_k),
               torch.zeros(b, c.n_channels, c.top_k, c.pred_len), torch.ones(b, c.n_channels, c.top_k))
    axes = {n: {0: "batch"} for n in PIR_INPUTS + PIR_OUTPUTS}
    torch.onnx.export(pir, example, str(path), input_names=PIR_INPUTS, output_names=PIR_OUTPUTS,
                      dynamic_axes=axes, opset_version=opset, dynamo=False)
    return path


@torch.no_grad()
def backbone_parity(model: nn.Module, path: Path, x: np.ndarray) -> float:
    onnx_out = _session(path).run(["forecast"], {"x": x.astype(np.float32)})[0]
    torch_out = model(torch.from_numpy(x.astype(np.float32))).numpy()
    return float(np.max(np.abs(onnx_out - torch_out)))


@torch.no_grad()
def pir_parity(pir: PIR, path: Path, arr: PIRArrays, rows: int = 256) -> tuple[float, np.ndarray]:
    """max |ONNX Runtime - PyTorch| over both outputs, and the ONNX δ of those rows."""
    sl = slice(0, min(rows, len(arr)))
    feeds = dict(zip(PIR_INPUTS, (a.astype(np.float32) for a in arr.arrays(sl)[:6])))
    session = _session(path)
    declared = {i.name for i in session.get_inputs()}  # unused inputs (e.g. marks) are pruned by the exporter
    onnx_rev, onnx_delta = session.run(PIR_OUTPUTS, {k: v for k, v in feeds.items() if k in declared})
    rev, delta = pir(*(torch.from_numpy(v) for v in feeds.values()))
    return float(max(np.max(np.abs(onnx_rev - rev.numpy())), np.max(np.abs(onnx_delta - delta.numpy())))), onnx_delta


def store_in_ms(store: RetrievalStore, prep: Prepared, capacity: int | None = None) -> RetrievalStore:
    """The training store with ``matured_at`` as epoch ms (offline it holds row indices), optionally re-bounded."""
    out = RetrievalStore(store.n_channels, store.lookback, store.horizon, capacity or max(store.capacity, 1))
    n = store.size
    order = (store.next - n + np.arange(n)) % store.capacity
    keep = order[-out.capacity:]
    m = len(keep)
    out.keys[:, :m] = store.keys[:, keep]
    out.targets[:, :m] = store.targets[:, keep]
    out.matured_at[:m] = prep.series.ts_ms[store.matured_at[keep]]
    out.series[:m] = store.series[keep]
    out.series_ids = dict(store.series_ids)
    out.size, out.next, out.added = m, m % out.capacity, m
    return out


def write_bundle(out_dir: Path, backbone_name: str, backbone: nn.Module, pir: PIR, prep: Prepared,
                 store: RetrievalStore, parity_arrays: PIRArrays, tolerance: float = 1e-5,
                 store_capacity: int | None = None, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """Export both graphs, check parity (raises above ``tolerance``), save the store and ``forecast.json``."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    c = pir.config
    base_path = export_backbone(backbone, out_dir / "base.onnx", c.seq_len, c.n_channels)
    pir_path = export_pir(pir, out_dir / "pir.onnx")
    rows = min(1024, len(parity_arrays))
    base_diff = backbone_parity(backbone, base_path, parity_arrays.x[:rows])
    pir_diff, delta = pir_parity(pir, pir_path, parity_arrays, rows)
    if not (base_diff <= tolerance and pir_diff <= tolerance):
        raise RuntimeError(f"ONNX parity failed: backbone {base_diff:.3g}, PIR {pir_diff:.3g} > {tolerance:g}")
    online = store_in_ms(store, prep, store_capacity)
    version = f"{backbone_name}-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}-{uuid.uuid4().hex[:8]}"
    online.save(out_dir / "store.npz", bundle_version=version)
    stale = out_dir / "store.online.npz"
    if stale.exists():  # a retrain starts a fresh online store (the service also refuses a foreign one)
        stale.unlink()
    meta = {
        "format": BUNDLE_FORMAT,
        "version": version,
        "series": prep.series.name,
        "columns": prep.series.columns,
        "seq_len": c.seq_len,
        "pred_len": c.pred_len,
        "n_channels": c.n_channels,
        "top_k": c.top_k,
        "n_exo": c.n_exo,
        "step_ms": prep.series.step_ms,
        "scaler": {"mean": prep.scaler.mean.tolist(), "std": prep.scaler.std.tolist()},
        "backbone": {"name": backbone_name, "config": asdict(backbone.config)},
        "pir": asdict(c),
        "store": {"pairs": online.size, "capacity": online.capacity},
        # 90th percentile of δ per channel on validation windows (never test): the default warning threshold
        "delta_p90": np.quantile(delta, 0.9, axis=0).astype(float).tolist(),
        "guard": {"keep_steps": pir.keep.numpy().astype(int).tolist()},
        "parity": {"backbone_max_abs_diff": base_diff, "pir_max_abs_diff": pir_diff, "rows": rows,
                   "tolerance": tolerance},
        "exported_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        **(extra or {}),
    }
    (out_dir / "forecast.json").write_text(json.dumps(meta, indent=2))
    return meta


# ---------------------------------------------------------------------------- train + export (the CLI's path)
def save_checkpoint(path: Path, run, backbone_name: str, series: str, prep: Prepared) -> Path:
    """Weights and configs of a :class:`training.forecasting.pipeline.PIRRun` (``recast forecast export`` input)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"backbone": backbone_name, "backbone_config": asdict(run.backbone.config),
                "backbone_state": run.backbone.state_dict(), "pir_config": asdict(run.pir.config),
                "pir_state": run.pir.state_dict(), "series": series, "seq_len": prep.seq_len,
                "pred_len": prep.pred_len, "summary": run.summary()}, path)
    return path


def export_checkpoint(checkpoint: Path, out_dir: Path, store_capacity: int | None = None) -> dict[str, Any]:
    """checkpoint.pt -> bundle: rebuild the data, the models and the training store, export, check parity.

    Parity and the δ warning thresholds use the validation windows: the test
    split is never looked at to configure the service.
    """
    from training.forecasting.data import load_named, prepare
    from training.forecasting.pir import PIRConfig
    from training.forecasting.train import build_backbone, pir_arrays, predict, training_store

    ck = torch.load(checkpoint, weights_only=False)
    prep = prepare(load_named(ck["series"]), ck["seq_len"], ck["pred_len"])
    cfg = {k: v for k, v in ck["backbone_config"].items() if k not in ("seq_len", "pred_len", "n_channels")}
    backbone = build_backbone(ck["backbone"], prep, **cfg)
    backbone.load_state_dict(ck["backbone_state"])
    backbone.eval()
    pir = PIR(PIRConfig(**ck["pir_config"]))
    pir.load_state_dict(ck["pir_state"])
    pir.eval()
    store = training_store(prep)
    val = prep.windows("val")
    arrays = pir_arrays(val, predict(backbone, val), store, pir.config.top_k)
    summary = ck["summary"]
    return write_bundle(out_dir, ck["backbone"], backbone, pir, prep, store, arrays, store_capacity=store_capacity,
                        extra={"source": ck["series"], "test": summary["test"],
                               "calibration": summary.get("calibration"),
                               "guard_decisions": summary.get("guard"), "k_scores": summary.get("k_scores")})


def train_bundle(series: str, backbone: str, seq_len: int, pred_len: int, epochs: int, pir_epochs: int,
                 out_dir: Path, seed: int = 2021, store_capacity: int | None = None, threads: int = 1,
                 log=None, calibration: str = "holdout", top_ks: tuple[int, ...] | None = None,
                 pir_config: dict[str, Any] | None = None, parts: tuple[str, ...] = ("full",)) -> dict[str, Any]:
    """Train backbone + PIR on ``series`` (its split), guard it, save ``checkpoint.pt`` in ``out_dir``, export."""
    import dataclasses

    from training.forecasting.data import load_named, prepare
    from training.forecasting.pipeline import fit_pipeline
    from training.forecasting.train import default_fit, default_pir_fit

    torch.set_num_threads(threads)
    prep = prepare(load_named(series), seq_len, pred_len)
    bfit = dataclasses.replace(default_fit(backbone), epochs=epochs, seed=seed)
    pfit = dataclasses.replace(default_pir_fit(), epochs=pir_epochs, seed=seed)
    run = fit_pipeline(prep, backbone, bfit, pir_config=pir_config, pir_fit=pfit, calibration=calibration,
                       top_ks=top_ks, parts=parts, log=log)
    out_dir = Path(out_dir)
    save_checkpoint(out_dir / "checkpoint.pt", run, backbone, series, prep)
    meta = export_checkpoint(out_dir / "checkpoint.pt", out_dir, store_capacity)
    return {"bundle": str(out_dir), "version": meta["version"], "test": run.test, "store_pairs": meta["store"]["pairs"],
            "parity": meta["parity"], "backbone_epochs": run.backbone_fit.epochs_run,
            "pir_epochs": run.pir_fit.epochs_run, "calibration": run.calibration.scheme,
            "guard_kept": run.guard.kept_fraction, "top_k": run.pir.config.top_k, "series": prep.series.name,
            "backbone": backbone}
