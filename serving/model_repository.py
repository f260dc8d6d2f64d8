"""Write Triton model repositories for an exported CTR model.

One export produces two repositories with the same layout
(``<repo>/<model_name>/<version>/``) and the same tensor contract
(``features/spec.py``):

* the **production** repository serves ``model.onnx`` with Triton's
  ``onnxruntime`` backend (the NVIDIA container, CPU or GPU instances);
* the **local** repository serves the same ``model.onnx`` through Triton's
  Python backend (``model.py`` from ``serving/triton_python_model.py``), because
  the ``tritonserver`` bundled in the ``nvidia-pytriton`` wheel ships only the
  Python backend.

Both get identical inputs, outputs and dynamic batching, so a client that
works against the local stack works against production unchanged.

Versions are published atomically: a version directory is staged next to the
repository and renamed into place, so a server polling the repository never
sees a half-written model. Files at model level (``config.pbtxt``,
``spec.json``, ``metadata.json``) are only rewritten when their content
changes, because any change there makes a polling server reload the model
(all its versions; Triton loads the new generation before it drops the old
one, so serving continues); version-specific metadata therefore lives in
the version directory. Inside a local version directory a
``__pycache__`` *file* stops Python from writing bytecode there, which a
polling server would otherwise take for a modified version and reload.

``config.pbtxt`` is produced by a small text writer instead of the protobuf
classes so the runtime needs no ``tritonclient[grpc]``/protobuf dependency.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Literal, Mapping

from features.spec import FeatureSpec

SPARSE_IDS = "sparse_ids"
SPARSE_MASK = "sparse_mask"
DENSE = "dense"
OUTPUT = "probability"

MODEL_FILE = "model.onnx"
CONFIG_FILE = "config.pbtxt"
SPEC_FILE = "spec.json"
METADATA_FILE = "metadata.json"
PYTHON_MODEL_TEMPLATE = Path(__file__).with_name("triton_python_model.py")

PYCACHE_BLOCKER = (
    "Placeholder so Python cannot write bytecode into this version directory;\n"
    "new files here would make a polling tritonserver reload the version.\n"
)

InstanceKind = Literal["KIND_CPU", "KIND_GPU"]


class Ident(str):
    """A protobuf enum value: written bare (``TYPE_FP32``), not quoted."""


def _scalar(value: Any) -> str:
    if isinstance(value, Ident):
        return str(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)  # protobuf text format accepts JSON string escapes
    raise TypeError(f"cannot write {type(value).__name__} into config.pbtxt: {value!r}")


def to_pbtxt(message: Mapping[str, Any], indent: int = 0) -> str:
    """Render nested dicts/lists as protobuf text format.

    dict -> ``key { ... }``; list of dicts -> ``key [ { ... }, { ... } ]``;
    list of scalars -> ``key: [ a, b ]``; scalars -> ``key: value``.
    Keys whose value is ``None`` are left out.
    """
    pad = "  " * indent
    lines: list[str] = []
    for key, value in message.items():
        if value is None:
            continue
        if isinstance(value, Mapping):
            lines.append(f"{pad}{key} {{")
            lines.append(to_pbtxt(value, indent + 1))
            lines.append(f"{pad}}}")
        elif isinstance(value, (list, tuple)):
            if value and all(isinstance(v, Mapping) for v in value):
                blocks = []
                for item in value:
                    blocks.append(f"{pad}  {{\n{to_pbtxt(item, indent + 2)}\n{pad}  }}")
                lines.append(f"{pad}{key} [\n" + ",\n".join(blocks) + f"\n{pad}]")
            else:
                lines.append(f"{pad}{key}: [ " + ", ".join(_scalar(v) for v in value) + " ]")
        else:
            lines.append(f"{pad}{key}: {_scalar(value)}")
    return "\n".join(line for line in lines if line)


def _io(spec: FeatureSpec) -> tuple[list[dict], list[dict]]:
    inputs = [
        {"name": SPARSE_IDS, "data_type": Ident("TYPE_INT64"), "dims": [spec.total_slots]},
        {"name": SPARSE_MASK, "data_type": Ident("TYPE_FP32"), "dims": [spec.total_slots]},
    ]
    if spec.dense:
        inputs.append({"name": DENSE, "data_type": Ident("TYPE_FP32"), "dims": [len(spec.dense)]})
    outputs = [{"name": OUTPUT, "data_type": Ident("TYPE_FP32"), "dims": [1]}]
    return inputs, outputs


def model_config(
    spec: FeatureSpec,
    model_name: str,
    *,
    backend: Literal["onnxruntime", "python"],
    max_batch_size: int = 1024,
    dynamic_batching: bool = True,
    preferred_batch_sizes: Iterable[int] | None = None,
    max_queue_delay_us: int = 500,
    instance_count: int = 1,
    instance_kind: InstanceKind = "KIND_CPU",
    num_versions: int = 2,
    parameters: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """The model configuration as a dict ready for :func:`to_pbtxt`."""
    if spec.total_slots <= 0:
        raise ValueError("feature spec has no sparse slots; rebuild it with `recast features build`")
    if max_batch_size < 1:
        raise ValueError(f"max_batch_size must be >= 1 (got {max_batch_size})")
    inputs, outputs = _io(spec)
    config: dict[str, Any] = {"name": model_name, "backend": backend}
    if backend == "onnxruntime":
        config["platform"] = "onnxruntime_onnx"
    config["max_batch_size"] = max_batch_size
    config["version_policy"] = {"latest": {"num_versions": num_versions}}
    config["input"] = inputs
    config["output"] = outputs
    if dynamic_batching:
        batching: dict[str, Any] = {}
        sizes = sorted(set(preferred_batch_sizes or ()))
        if any(s < 1 or s > max_batch_size for s in sizes):
            raise ValueError(f"preferred_batch_sizes {sizes} must lie in [1, {max_batch_size}]")
        if sizes:
            batching["preferred_batch_size"] = sizes
        batching["max_queue_delay_microseconds"] = max_queue_delay_us
        config["dynamic_batching"] = batching
    config["instance_group"] = [{"count": instance_count, "kind": Ident(instance_kind)}]
    if parameters:
        config["parameters"] = [
            {"key": k, "value": {"string_value": str(v)}} for k, v in parameters.items()
        ]
    return config


def render_config(config: Mapping[str, Any]) -> str:
    return to_pbtxt(config) + "\n"


@dataclass(frozen=True)
class PublishedModel:
    """Where one export landed."""

    model_name: str
    version: int
    prod_version_dir: Path
    local_version_dir: Path


def default_site_packages(settings: Any = None) -> Path:
    """site-packages of the Triton host venv of ``settings`` (default: get_settings()), used by model.py.

    The Python-backend stub does not inherit ``PYTHONPATH``; the local
    ``model.py`` adds this directory to ``sys.path`` before importing
    onnxruntime.
    """
    from recast.settings import get_settings

    settings = settings or get_settings()
    venv = settings.path(settings.triton.venv).resolve()
    found = sorted(venv.glob("lib/python3*/site-packages"))
    if found:
        return found[0]
    return venv / "lib" / f"python{sys.version_info.major}.{sys.version_info.minor}" / "site-packages"


def _staging_dir(repo: Path) -> Path:
    # Outside the repository: Triton treats every directory in it as a model.
    return repo.parent / f".{repo.name}.staging"


def _write_if_changed(path: Path, text: str, staging: Path) -> None:
    if path.exists() and path.read_text() == text:
        return
    tmp = staging / f"{path.name}.{uuid.uuid4().hex}"
    tmp.write_text(text)
    os.replace(tmp, path)


def _publish_version(staged: Path, final: Path, staging: Path) -> None:
    """Rename a fully written version dir into place (replacing an old one)."""
    if final.exists():
        trash = staging / f"old-{final.name}-{uuid.uuid4().hex}"
        os.replace(final, trash)
        os.replace(staged, final)
        shutil.rmtree(trash, ignore_errors=True)
    else:
        os.replace(staged, final)


def _write_one(
    repo: Path,
    model_name: str,
    version: int,
    config_text: str,
    spec: FeatureSpec,
    version_files: Mapping[str, Path],
    metadata: dict[str, Any],
) -> Path:
    repo.mkdir(parents=True, exist_ok=True)
    staging = _staging_dir(repo)
    staging.mkdir(parents=True, exist_ok=True)
    model_dir = repo / model_name
    model_dir.mkdir(exist_ok=True)

    staged = staging / f"{model_name}-{version}-{uuid.uuid4().hex}"
    staged.mkdir()
    try:
        for name, src in version_files.items():
            shutil.copyfile(src, staged / name)
        if "model.py" in version_files:
            # Importing model.py would create __pycache__/ in the version dir; a
            # polling Triton sees that as a modified version and reloads it. A
            # plain file of that name makes Python skip writing bytecode.
            (staged / "__pycache__").write_text(PYCACHE_BLOCKER)
        # Model-level files first: a new version must find its config in place.
        _write_if_changed(model_dir / CONFIG_FILE, config_text, staging)
        _write_if_changed(model_dir / SPEC_FILE, spec.to_json() + "\n", staging)
        # model-level metadata holds nothing version-specific, so publishing a new
        # version leaves it untouched and a polling Triton does not reload the others;
        # the version's own metadata goes into its directory (list_models gives the set)
        stable = {k: v for k, v in metadata.items() if k not in ("version", "model_sha256")}
        _write_if_changed(model_dir / METADATA_FILE, json.dumps(stable, indent=2) + "\n", staging)
        (staged / METADATA_FILE).write_text(json.dumps(metadata, indent=2) + "\n")
        final = model_dir / str(version)
        _publish_version(staged, final, staging)
    finally:
        shutil.rmtree(staged, ignore_errors=True)
    return final


def write_model_repository(
    onnx_path: Path,
    spec: FeatureSpec,
    model_name: str,
    version: int,
    prod_repo: Path,
    local_repo: Path,
    max_batch_size: int = 1024,
    dynamic_batching: bool = True,
    preferred_batch_sizes: Iterable[int] | None = None,
    max_queue_delay_us: int = 500,
    instance_count: int = 1,
    extra_files: Mapping[str, Path] | None = None,
    *,
    instance_kind: InstanceKind = "KIND_CPU",
    num_versions: int = 2,
    intra_op_threads: int = 1,
    site_packages: Path | None = None,
) -> PublishedModel:
    """Publish ``onnx_path`` as ``<model_name>/<version>`` in both repositories.

    ``instance_kind`` applies to the production repository only; the local
    Python backend always runs onnxruntime on CPU with ``intra_op_threads``.
    ``extra_files`` maps a file name to a source path copied into the version
    dir of both repositories (e.g. ``{"export.json": path}``).
    ``site_packages`` is the Triton host venv's site-packages written into the
    local config (default: from ``TritonSettings.venv``).
    """
    onnx_path = Path(onnx_path)
    if not onnx_path.is_file():
        raise FileNotFoundError(f"ONNX model {onnx_path} not found: run `recast export` first")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise ValueError(f"version must be a positive integer (got {version!r})")
    if not model_name or "/" in model_name or model_name.startswith("."):
        raise ValueError(f"invalid model name {model_name!r}")
    extra = {name: Path(p) for name, p in (extra_files or {}).items()}
    for name, p in extra.items():
        if name in (MODEL_FILE, "model.py", "__pycache__", METADATA_FILE) or "/" in name:
            raise ValueError(f"extra file name {name!r} is reserved or not a plain file name")
        if not p.is_file():
            raise FileNotFoundError(f"extra file {p} (for {name!r}) not found")

    common: dict[str, Any] = dict(
        max_batch_size=max_batch_size,
        dynamic_batching=dynamic_batching,
        preferred_batch_sizes=tuple(preferred_batch_sizes or ()),  # used twice: no generators
        max_queue_delay_us=max_queue_delay_us,
        instance_count=instance_count,
        num_versions=num_versions,
    )
    prod_config = model_config(
        spec, model_name, backend="onnxruntime", instance_kind=instance_kind, **common
    )
    site = Path(site_packages) if site_packages is not None else default_site_packages()
    local_config = model_config(
        spec,
        model_name,
        backend="python",
        instance_kind="KIND_CPU",
        parameters={"site_packages": str(site), "intra_op_threads": str(intra_op_threads)},
        **common,
    )
    inputs, outputs = _io(spec)
    metadata = {
        "name": model_name,
        "version": version,
        "total_slots": spec.total_slots,
        "n_dense": len(spec.dense),
        "inputs": [i["name"] for i in inputs],
        "outputs": [o["name"] for o in outputs],
        "max_batch_size": max_batch_size,
        # the publication record readiness compares the served file against (serving/readiness.py)
        "model_sha256": sha256_file(onnx_path),
    }
    prod_dir = _write_one(
        Path(prod_repo), model_name, version, render_config(prod_config), spec,
        {MODEL_FILE: onnx_path, **extra}, {**metadata, "backend": "onnxruntime"},
    )
    local_dir = _write_one(
        Path(local_repo), model_name, version, render_config(local_config), spec,
        {MODEL_FILE: onnx_path, "model.py": PYTHON_MODEL_TEMPLATE, **extra},
        {**metadata, "backend": "python"},
    )
    return PublishedModel(model_name, version, prod_dir, local_dir)


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def _versions(model_dir: Path) -> list[int]:
    return sorted(int(p.name) for p in model_dir.iterdir() if p.is_dir() and p.name.isdigit())


def list_models(repo: Path) -> dict[str, list[int]]:
    """Models in a repository and their version numbers, ascending.

    Only directories with a ``config.pbtxt`` count as models; a missing
    repository has no models.
    """
    repo = Path(repo)
    if not repo.is_dir():
        return {}
    return {
        d.name: _versions(d)
        for d in sorted(repo.iterdir())
        if d.is_dir() and not d.name.startswith(".") and (d / CONFIG_FILE).is_file()
    }


def remove_version(repo: Path, model_name: str, version: int) -> None:
    """Delete one version (a polling server unloads it on its next poll)."""
    target = Path(repo) / model_name / str(version)
    if not target.is_dir():
        raise FileNotFoundError(f"{target} does not exist; versions: {list_models(repo).get(model_name)}")
    shutil.rmtree(target)
