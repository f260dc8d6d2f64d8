"""Turn the exported Triton repository (onnxruntime_onnx) into a TensorRT one.

Runs in the Triton pod's init container (the NVIDIA TensorRT image, on the
serving GPU: engines are specific to the GPU model and TensorRT version).
For every model directory of ``--source`` that ``recast export`` wrote
(``config.pbtxt`` + ``<version>/model.onnx``):

* each version's ``model.onnx`` is built into ``model.plan`` with ``trtexec``,
  one optimisation profile from batch 1 to the model's ``max_batch_size``;
* ``config.pbtxt`` is copied with ``platform: "tensorrt_plan"``,
  ``backend: "tensorrt"`` and GPU instances; inputs, outputs, batching and the
  version policy stay as exported, so clients see the same contract;
* ``spec.json`` / ``metadata.json`` and extra version files are copied.

Standard library only (the TensorRT image has python3 but not recast).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

ONNX_FILE = "model.onnx"
PLAN_FILE = "model.plan"
CONFIG_FILE = "config.pbtxt"

_REPLACEMENTS = (
    (re.compile(r'^(\s*)platform:\s*"onnxruntime_onnx"\s*$', re.M), r'\1platform: "tensorrt_plan"'),
    (re.compile(r'^(\s*)backend:\s*"onnxruntime"\s*$', re.M), r'\1backend: "tensorrt"'),
    (re.compile(r"\bKIND_CPU\b"), "KIND_GPU"),
)


def tensorrt_config(text: str) -> str:
    """The exported config.pbtxt rewritten for the tensorrt_plan platform."""
    if 'platform: "onnxruntime_onnx"' not in text:
        raise ValueError('config.pbtxt is not an onnxruntime_onnx model (no platform: "onnxruntime_onnx")')
    for pattern, repl in _REPLACEMENTS:
        text = pattern.sub(repl, text)
    return text


def max_batch_size(text: str) -> int:
    m = re.search(r"^\s*max_batch_size:\s*(\d+)\s*$", text, re.M)
    if not m or int(m.group(1)) < 1:
        raise ValueError("config.pbtxt has no max_batch_size >= 1 (dynamic batch dimension required)")
    return int(m.group(1))


def input_dims(text: str) -> dict[str, list[int]]:
    """Input name -> dims without the batch dimension, from the ``input [ ... ]`` block."""
    m = re.search(r"^input \[\n(.*?)^\]", text, re.M | re.S)
    if not m:
        raise ValueError("config.pbtxt has no input [ ... ] block")
    dims: dict[str, list[int]] = {}
    for block in re.findall(r"\{(.*?)\}", m.group(1), re.S):
        name = re.search(r'name:\s*"([^"]+)"', block)
        shape = re.search(r"dims:\s*\[([^\]]*)\]", block)
        if not name or not shape:
            raise ValueError(f"input without name or dims in config.pbtxt: {block.strip()!r}")
        dims[name.group(1)] = [int(d) for d in shape.group(1).replace(",", " ").split()]
    if not dims:
        raise ValueError("config.pbtxt declares no inputs")
    return dims


def shapes(dims: dict[str, list[int]], batch: int) -> str:
    return ",".join(f"{name}:" + "x".join(str(d) for d in [batch, *shape]) for name, shape in dims.items())


def trtexec_command(trtexec: str, onnx: Path, plan: Path, dims: dict[str, list[int]],
                    max_batch: int, opt_batch: int, fp16: bool) -> list[str]:
    opt = max(1, min(opt_batch, max_batch))
    cmd = [
        trtexec, f"--onnx={onnx}", f"--saveEngine={plan}",
        f"--minShapes={shapes(dims, 1)}", f"--optShapes={shapes(dims, opt)}",
        f"--maxShapes={shapes(dims, max_batch)}", "--skipInference",
    ]
    if fp16:
        cmd.append("--fp16")
    return cmd


def convert_model(model_dir: Path, target: Path, trtexec: str, opt_batch: int, fp16: bool) -> list[int]:
    config = (model_dir / CONFIG_FILE).read_text()
    new_config = tensorrt_config(config)
    dims, max_batch = input_dims(config), max_batch_size(config)
    out = target / model_dir.name
    out.mkdir(parents=True, exist_ok=True)
    versions = sorted(int(p.name) for p in model_dir.iterdir() if p.is_dir() and p.name.isdigit())
    built = []
    for version in versions:
        src = model_dir / str(version)
        if not (src / ONNX_FILE).is_file():
            continue
        staging = out / f".{version}.building"
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir()
        cmd = trtexec_command(trtexec, src / ONNX_FILE, staging / PLAN_FILE, dims, max_batch, opt_batch, fp16)
        print("+ " + " ".join(cmd), flush=True)
        subprocess.run(cmd, check=True)
        if not (staging / PLAN_FILE).is_file():
            raise RuntimeError(f"trtexec wrote no engine for {model_dir.name}/{version}")
        for extra in src.iterdir():
            if extra.is_file() and extra.name != ONNX_FILE:
                shutil.copyfile(extra, staging / extra.name)
        os.replace(staging, out / str(version))
        built.append(version)
    if not built:
        raise RuntimeError(f"{model_dir.name}: no version directory with {ONNX_FILE}")
    for name in os.listdir(model_dir):
        if (model_dir / name).is_file() and name != CONFIG_FILE:
            shutil.copyfile(model_dir / name, out / name)
    (out / CONFIG_FILE).write_text(new_config)  # last: Triton sees a complete model
    return built


def convert_repository(source: Path, target: Path, trtexec: str, opt_batch: int = 64,
                       fp16: bool = False) -> dict[str, list[int]]:
    models = sorted(d for d in source.iterdir()
                    if d.is_dir() and not d.name.startswith(".") and (d / CONFIG_FILE).is_file())
    if not models:
        raise RuntimeError(f"no models (directories with {CONFIG_FILE}) in {source}: run `recast export` first")
    target.mkdir(parents=True, exist_ok=True)
    return {m.name: convert_model(m, target, trtexec, opt_batch, fp16) for m in models}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--source", type=Path, required=True, help="exported repository (onnxruntime_onnx)")
    p.add_argument("--target", type=Path, required=True, help="TensorRT repository to write")
    p.add_argument("--trtexec", default="trtexec")
    p.add_argument("--opt-batch", type=int, default=64, help="batch size the engine is tuned for")
    p.add_argument("--fp16", action="store_true")
    args = p.parse_args(argv)
    try:
        built = convert_repository(args.source, args.target, args.trtexec, args.opt_batch, args.fp16)
    except (OSError, ValueError, RuntimeError, subprocess.CalledProcessError) as exc:
        print(f"build_tensorrt_repository: {exc}", file=sys.stderr)
        return 1
    for name, versions in built.items():
        print(f"{name}: TensorRT engines for versions {versions}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
