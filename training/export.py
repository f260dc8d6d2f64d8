"""Export a trained CTR model: ONNX graph with a dynamic batch, parity check,
optional TensorRT plan, and the Triton model repositories.

The exported graph is ``InferenceModel`` (training/sparse.py): the trained
EBC tables copied into ``nn.Embedding`` and pooled by gather * mask, the
interaction head reused as is. Inputs ``sparse_ids`` [B, S] int64,
``sparse_mask`` [B, S] float32 (``dense`` [B, D] when the spec has dense
features); output ``probability`` [B, 1].
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from features.spec import FeatureSpec
from training.models import build_head, make_config
from training.sparse import InferenceModel, PaddedEmbedding, table_name

EBC_PREFIX = "ebc.embedding_bags."
HEAD_PREFIX = "head."


def inference_model_from_checkpoint(best: dict[str, Any]) -> InferenceModel:
    spec = FeatureSpec.from_json(best["spec"])
    state = best["state_dict"]
    tables = {table_name(f.name): state[f"{EBC_PREFIX}{table_name(f.name)}.weight"] for f in spec.sparse}
    head = build_head(best["model"], len(spec.sparse), best["embedding_dim"], len(spec.dense), make_config(best["model"], best["hparams"]))
    head.load_state_dict({k[len(HEAD_PREFIX):]: v for k, v in state.items() if k.startswith(HEAD_PREFIX)})
    model = InferenceModel(PaddedEmbedding.from_state(spec, tables), head, len(spec.dense))
    return model.eval()


@dataclass
class ExportResult:
    onnx_path: Path
    parity_max_abs_diff: float
    parity_rows: int
    tensorrt_plan: Path | None
    tensorrt_note: str


def export_onnx(model: InferenceModel, spec: FeatureSpec, path: Path, opset: int = 17) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    batch = 4
    ids = torch.zeros((batch, spec.total_slots), dtype=torch.int64)
    mask = torch.ones((batch, spec.total_slots), dtype=torch.float32)
    args: tuple = (ids, mask)
    names = ["sparse_ids", "sparse_mask"]
    if spec.dense:
        args = args + (torch.zeros((batch, len(spec.dense))),)
        names.append("dense")
    torch.onnx.export(
        model,
        args,
        str(path),
        input_names=names,
        output_names=["probability"],
        dynamic_axes={n: {0: "batch"} for n in names + ["probability"]},
        opset_version=opset,
        dynamo=False,
    )
    return path


def check_parity(model: InferenceModel, onnx_path: Path, ids: np.ndarray, mask: np.ndarray, dense: np.ndarray | None) -> float:
    """max |ONNX Runtime - PyTorch| over the given rows."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    feeds = {"sparse_ids": ids, "sparse_mask": mask}
    if dense is not None and dense.shape[1]:
        feeds["dense"] = dense
    onnx_out = session.run(["probability"], feeds)[0]
    with torch.no_grad():
        torch_out = model(
            torch.from_numpy(ids), torch.from_numpy(mask), torch.from_numpy(dense) if dense is not None and dense.shape[1] else None
        ).numpy()
    return float(np.max(np.abs(onnx_out - torch_out)))


def build_tensorrt_plan(onnx_path: Path, plan_path: Path, max_batch: int) -> tuple[Path | None, str]:
    """A TensorRT engine when a GPU and the tensorrt package exist; otherwise a reason."""
    if not torch.cuda.is_available():
        return None, "skipped: no CUDA GPU on this machine"
    try:
        import tensorrt as trt  # type: ignore[import-not-found]
    except ImportError:
        return None, "skipped: the tensorrt package is not installed"
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(0)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(onnx_path.read_bytes()):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        return None, f"failed: TensorRT could not parse the ONNX graph: {errors}"
    config = builder.create_builder_config()
    profile = builder.create_optimization_profile()
    for i in range(network.num_inputs):
        tensor = network.get_input(i)
        width = tensor.shape[1]
        profile.set_shape(tensor.name, (1, width), (max(1, max_batch // 4), width), (max_batch, width))
    config.add_optimization_profile(profile)
    engine = builder.build_serialized_network(network, config)
    if engine is None:
        return None, "failed: TensorRT returned no engine"
    plan_path.write_bytes(bytes(engine))
    return plan_path, "built"


def export_checkpoint(
    checkpoint: Path,
    out_dir: Path,
    parity_data: tuple[np.ndarray, np.ndarray, np.ndarray | None],
    max_batch: int = 1024,
    tolerance: float = 1e-5,
) -> ExportResult:
    """best.pt -> out_dir/{model.onnx, spec.json, export.json}; raises if parity fails."""
    best = torch.load(checkpoint, weights_only=False)
    spec = FeatureSpec.from_json(best["spec"])
    model = inference_model_from_checkpoint(best)
    out_dir.mkdir(parents=True, exist_ok=True)
    onnx_path = export_onnx(model, spec, out_dir / "model.onnx")
    ids, mask, dense = parity_data
    diff = check_parity(model, onnx_path, ids, mask, dense)
    if not diff <= tolerance:
        raise RuntimeError(f"ONNX parity failed: max |ONNX - PyTorch| = {diff:.3g} > {tolerance:g} on {len(ids)} rows")
    plan, note = build_tensorrt_plan(onnx_path, out_dir / "model.plan", max_batch)
    spec.save(out_dir / "spec.json")
    info = {
        "model": best["model"],
        "hparams": best["hparams"],
        "embedding_dim": best["embedding_dim"],
        "val_auc": best.get("val_auc"),
        "epoch": best.get("epoch"),
        "parity_max_abs_diff": diff,
        "parity_rows": int(len(ids)),
        "tensorrt": note,
        "exported_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    (out_dir / "export.json").write_text(json.dumps(info, indent=2))
    return ExportResult(onnx_path, diff, int(len(ids)), plan, note)


def copy_into(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(src, dst)
