"""End to end: train with TorchRec (in-process group of one and a 2-process
torchrun), resume from a checkpoint, export to ONNX."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from features.spec import FeatureSpec
from training.data import load_split
from training.export import export_checkpoint, inference_model_from_checkpoint
from training.sparse import table_name, table_width
from training.trainer import TrainConfig, train

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
SMALL_DLF = {"num_layers": 2, "n_compress": 4, "n_fm": 4, "rank": 4, "block_hidden": 32, "head_hidden": 32}
TORCHRUN = Path(sys.executable).parent / "torchrun"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def lr_run(synthetic_features: Path, tmp_path_factory: pytest.TempPathFactory):
    run_dir = tmp_path_factory.mktemp("lr_run")
    result = train(TrainConfig(model="lr", epochs=2, batch_size=512, progress=False), synthetic_features, run_dir, resume=False)
    return result, run_dir


@pytest.fixture(scope="module")
def distributed_run(synthetic_features: Path, tmp_path_factory: pytest.TempPathFactory):
    run_dir = tmp_path_factory.mktemp("dlf_2proc")
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")}
    env["OMP_WAIT_POLICY"] = "PASSIVE"
    proc = subprocess.run(
        [str(TORCHRUN), "--nproc_per_node", "2", "--master_port", str(_free_port()), "-m", "training.run",
         "--features-dir", str(synthetic_features), "--run-dir", str(run_dir),
         "--config-json", json.dumps({"model": "dlf", "epochs": 1, "batch_size": 512, "progress": False,
                                      "hparams": SMALL_DLF}), "--no-resume"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=300,
    )
    return proc, run_dir


def test_train_lr(lr_run, synthetic_features: Path) -> None:
    result, run_dir = lr_run
    assert (run_dir / "best.pt").exists()
    assert (run_dir / "result.json").exists()
    assert (run_dir / "state.json").exists() and (run_dir / "last").is_dir()
    saved = json.loads((run_dir / "result.json").read_text())
    assert saved["test_auc"] == pytest.approx(result.test_auc)
    assert result.test_auc > 0.6
    assert result.val_auc > 0.6
    assert [h["epoch"] for h in result.history] == [1, 2]
    assert result.best_epoch == int(np.argmax([h["val_auc"] for h in result.history])) + 1
    assert result.val_auc == max(h["val_auc"] for h in result.history)
    assert result.examples_per_second > 0

    best = torch.load(run_dir / "best.pt", weights_only=False)
    spec = FeatureSpec.load(synthetic_features / "spec.json")
    assert best["model"] == "lr" and best["epoch"] == result.best_epoch
    assert FeatureSpec.from_json(best["spec"]) == spec
    for f in spec.sparse:  # unsharded tables, LR's width-1 weights padded to 4 columns
        assert best["state_dict"][f"ebc.embedding_bags.{table_name(f.name)}.weight"].shape == (f.vocab_size, table_width(1))


def test_resume_is_deterministic(synthetic_features: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    # dropout and Adam state make this sensitive to RNG and optimizer-state restore
    cfg = TrainConfig(model="deepfm", hparams={"hidden_units": [32, 16], "dropout": 0.3}, epochs=3, batch_size=512,
                      patience=100, progress=False, max_steps_per_epoch=4)
    straight = train(cfg, synthetic_features, tmp_path / "straight", resume=False)
    first = train(replace(cfg, epochs=1), synthetic_features, tmp_path / "resumed", resume=False)
    capsys.readouterr()
    resumed = train(cfg, synthetic_features, tmp_path / "resumed", resume=True)
    out = capsys.readouterr().out
    assert "resumed" in out and "after epoch 1" in out  # it continued rather than starting over
    assert len(first.history) == 1
    assert len(resumed.history) == len(straight.history) == 3
    assert [h["val_auc"] for h in resumed.history] == [h["val_auc"] for h in straight.history]
    assert [h["train_loss"] for h in resumed.history] == [h["train_loss"] for h in straight.history]
    assert resumed.test_auc == straight.test_auc
    # the epochs really differ from one another (training happened in each)
    assert len({h["val_auc"] for h in straight.history}) == 3


def test_two_process_torchrun(distributed_run) -> None:
    proc, run_dir = distributed_run
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    assert len(lines) == 1, proc.stdout  # rank 0 only
    summary = json.loads(lines[0])
    assert summary["val_auc"] > 0.6
    assert summary["best_epoch"] == 1
    assert (run_dir / "best.pt").exists() and (run_dir / "result.json").exists()
    assert (run_dir / "local_rank0.pt").exists() and (run_dir / "local_rank1.pt").exists()


def _check_export(checkpoint: Path, out_dir: Path, features_dir: Path) -> None:
    import onnxruntime as ort

    test = load_split(features_dir, "test")
    ids, mask = test.ids.numpy(), test.mask.numpy()
    result = export_checkpoint(checkpoint, out_dir, parity_data=(ids, mask, None))
    assert result.parity_max_abs_diff <= 1e-5
    assert result.parity_rows == len(ids)
    for name in ("model.onnx", "spec.json", "export.json"):
        assert (out_dir / name).exists(), name
    info = json.loads((out_dir / "export.json").read_text())
    best = torch.load(checkpoint, weights_only=False)
    assert info["model"] == best["model"] and info["parity_rows"] == len(ids)
    assert FeatureSpec.load(out_dir / "spec.json") == FeatureSpec.from_json(best["spec"])

    session = ort.InferenceSession(str(out_dir / "model.onnx"), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["sparse_ids", "sparse_mask"]
    model = inference_model_from_checkpoint(best)
    reps = -(-1000 // len(ids))
    big_ids, big_mask = np.tile(ids, (reps, 1))[:1000], np.tile(mask, (reps, 1))[:1000]
    for batch in (1, 1000):
        out = session.run(["probability"], {"sparse_ids": big_ids[:batch], "sparse_mask": big_mask[:batch]})[0]
        assert out.shape == (batch, 1)
        assert ((out > 0) & (out < 1)).all()
        with torch.no_grad():
            ref = model(torch.from_numpy(big_ids[:batch]), torch.from_numpy(big_mask[:batch])).numpy()
        assert np.abs(out - ref).max() <= 1e-5
    assert out.std() > 0


def test_export_lr(lr_run, synthetic_features: Path, tmp_path: Path) -> None:
    _, run_dir = lr_run
    _check_export(run_dir / "best.pt", tmp_path / "export", synthetic_features)


def test_export_dlf_trained_on_two_processes(distributed_run, synthetic_features: Path, tmp_path: Path) -> None:
    proc, run_dir = distributed_run
    assert proc.returncode == 0, proc.stderr[-3000:]
    best = torch.load(run_dir / "best.pt", weights_only=False)
    spec = FeatureSpec.from_json(best["spec"])
    for f in spec.sparse:  # the table-wise shards were gathered into whole tables
        table = best["state_dict"][f"ebc.embedding_bags.{table_name(f.name)}.weight"]
        assert table.shape == (f.vocab_size, table_width(best["embedding_dim"]))
        assert table.abs().sum() > 0
    _check_export(run_dir / "best.pt", tmp_path / "export", synthetic_features)


def test_resume_with_tuple_hparams(synthetic_features: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    cfg = TrainConfig(model="deepfm", hparams={"hidden_units": (8,)}, epochs=1, batch_size=512, progress=False,
                      max_steps_per_epoch=2)
    train(cfg, synthetic_features, tmp_path, resume=False)
    capsys.readouterr()
    result = train(replace(cfg, epochs=2), synthetic_features, tmp_path, resume=True)
    assert "after epoch 1" in capsys.readouterr().out
    assert [h["epoch"] for h in result.history] == [1, 2]


def test_official_recipe_dense_tables_adam_l2_decay_and_selection(synthetic_features: Path, tmp_path: Path) -> None:
    """embedding_update=dense: tables are trained by Adam with the whole-table L2 penalty, the full model is
    clipped, LR drops x0.1 after every epoch without improvement, selection is on AUC - logloss."""
    from training.recipes import OFFICIAL_FUXICTR

    recipe = {**OFFICIAL_FUXICTR, "batch_size": 256, "embedding_dim": 8, "embedding_l2": 1e-3}
    cfg = TrainConfig(model="dlf", hparams={**SMALL_DLF, "variant": "att_self_gate"}, epochs=4, patience=100,
                      progress=False, max_steps_per_epoch=6, **recipe)
    result = train(cfg, synthetic_features, tmp_path / "official", resume=False)
    metric = [h["val_auc"] - h["val_logloss"] for h in result.history]
    assert result.best_epoch == int(np.argmax(metric)) + 1
    lrs = [h["lr"] for h in result.history]
    for i in range(1, len(lrs)):
        improved = metric[i] > max(metric[:i]) + 1e-6
        assert lrs[i] == pytest.approx(lrs[i - 1] if improved else lrs[i - 1] * 0.1)
    best = torch.load(tmp_path / "official" / "best.pt", weights_only=False)
    table = best["state_dict"][f"ebc.embedding_bags.{table_name('user_id')}.weight"]
    assert table.std() < 0.05  # N(0, 1e-4) init, moved by Adam (not TorchRec's uniform init)
    assert (table != 0).all()
    _check_export(tmp_path / "official" / "best.pt", tmp_path / "export", synthetic_features)  # attention exports too


def test_fused_embedding_l2_shrinks_the_tables(synthetic_features: Path, tmp_path: Path) -> None:
    norms = {}
    for l2 in (0.0, 1.0):
        cfg = TrainConfig(model="lr", epochs=1, batch_size=256, max_steps_per_epoch=20, embedding_l2=l2, progress=False)
        train(cfg, synthetic_features, tmp_path / str(l2), resume=False)
        best = torch.load(tmp_path / str(l2) / "best.pt", weights_only=False)
        norms[l2] = best["state_dict"][f"ebc.embedding_bags.{table_name('item_id')}.weight"].norm().item()
    assert norms[1.0] < 0.9 * norms[0.0], norms


def test_recipe_switches_that_cannot_work_are_refused(synthetic_features: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="embedding_update=dense"):
        train(TrainConfig(model="lr", grad_clip_scope="full", progress=False), synthetic_features, tmp_path / "a")
    with pytest.raises(ValueError, match="CUDA"):
        train(TrainConfig(model="lr", embedding_optimizer="adam", progress=False), synthetic_features, tmp_path / "b")
