"""The model repository writer: config.pbtxt content, versioned layout, list_models."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from features.spec import FeatureSpec, SparseFeature
from serving.model_repository import (
    list_models,
    model_config,
    remove_version,
    render_config,
    to_pbtxt,
    write_model_repository,
)

SPEC = FeatureSpec(
    sparse=(
        SparseFeature("user_id", 100, "user"),
        SparseFeature("item_id", 50, "item"),
        SparseFeature("genres", 20, "item", max_len=3),
    )
)
SPEC_DENSE = FeatureSpec(sparse=SPEC.sparse, dense=("age", "price"))


@pytest.fixture
def fake_onnx(tmp_path: Path) -> Path:
    # The writer copies bytes; it never parses the model.
    path = tmp_path / "export" / "model.onnx"
    path.parent.mkdir()
    path.write_bytes(b"not-really-onnx")
    return path


def _write(tmp_path: Path, onnx: Path, version: int = 1, spec: FeatureSpec = SPEC, **kw):
    return write_model_repository(
        onnx, spec, "dlf", version, tmp_path / "prod", tmp_path / "local",
        site_packages=Path("/opt/triton-venv/site-packages"), **kw,
    )


def _blocks(text: str, key: str) -> list[str]:
    """The ``{ ... }`` entries of a top-level ``key [ ... ]`` list."""
    match = re.search(rf"^{key} \[\n(.*?)\n\]", text, re.S | re.M)
    assert match, f"no {key} list in:\n{text}"
    return re.findall(r"\{(.*?)\}", match.group(1), re.S)


def test_pbtxt_writer_formats() -> None:
    text = to_pbtxt({
        "name": 'a"b', "n": 3, "flag": False, "dims": [4, 5], "skip": None,
        "nested": {"inner": {"x": 1}},
        "items": [{"k": "v"}, {"k": "w"}],
    })
    assert 'name: "a\\"b"' in text
    assert "n: 3" in text and "flag: false" in text and "dims: [ 4, 5 ]" in text
    assert "skip" not in text
    assert "nested {\n  inner {\n    x: 1\n  }\n}" in text
    assert text.count("{\n    k:") == 2 and "},\n" in text


def test_production_config(tmp_path: Path, fake_onnx: Path) -> None:
    _write(tmp_path, fake_onnx, max_batch_size=256, preferred_batch_sizes=[64, 16],
           max_queue_delay_us=300, instance_count=2, instance_kind="KIND_GPU")
    text = (tmp_path / "prod" / "dlf" / "config.pbtxt").read_text()
    assert 'name: "dlf"' in text
    assert 'backend: "onnxruntime"' in text and 'platform: "onnxruntime_onnx"' in text
    assert "max_batch_size: 256" in text
    assert "version_policy {\n  latest {\n    num_versions: 2\n  }\n}" in text
    inputs = _blocks(text, "input")
    assert len(inputs) == 2  # no dense features in SPEC
    assert 'name: "sparse_ids"' in inputs[0] and "TYPE_INT64" in inputs[0] and "dims: [ 5 ]" in inputs[0]
    assert 'name: "sparse_mask"' in inputs[1] and "TYPE_FP32" in inputs[1] and "dims: [ 5 ]" in inputs[1]
    (output,) = _blocks(text, "output")
    assert 'name: "probability"' in output and "TYPE_FP32" in output and "dims: [ 1 ]" in output
    assert "preferred_batch_size: [ 16, 64 ]" in text
    assert "max_queue_delay_microseconds: 300" in text
    assert "count: 2" in text and "kind: KIND_GPU" in text
    assert "parameters" not in text and "python" not in text


def test_local_config_python_backend(tmp_path: Path, fake_onnx: Path) -> None:
    _write(tmp_path, fake_onnx, instance_kind="KIND_GPU", intra_op_threads=2)
    text = (tmp_path / "local" / "dlf" / "config.pbtxt").read_text()
    assert 'backend: "python"' in text and "platform" not in text
    assert "kind: KIND_CPU" in text  # the local stub runs onnxruntime on CPU only
    assert "dynamic_batching {" in text
    params = dict(re.findall(r'key: "(\w+)"\n\s+value \{\n\s+string_value: "([^"]*)"', text))
    assert params == {"site_packages": "/opt/triton-venv/site-packages", "intra_op_threads": "2"}
    # Same tensor contract as production.
    prod = (tmp_path / "prod" / "dlf" / "config.pbtxt").read_text()
    assert _blocks(text, "input") == _blocks(prod, "input")
    assert _blocks(text, "output") == _blocks(prod, "output")


def test_dense_input_only_when_spec_has_dense(tmp_path: Path, fake_onnx: Path) -> None:
    _write(tmp_path, fake_onnx, spec=SPEC_DENSE)
    for repo in ("prod", "local"):
        inputs = _blocks((tmp_path / repo / "dlf" / "config.pbtxt").read_text(), "input")
        assert len(inputs) == 3
        assert 'name: "dense"' in inputs[2] and "TYPE_FP32" in inputs[2] and "dims: [ 2 ]" in inputs[2]


def test_dynamic_batching_off(tmp_path: Path, fake_onnx: Path) -> None:
    _write(tmp_path, fake_onnx, dynamic_batching=False)
    for repo in ("prod", "local"):
        text = (tmp_path / repo / "dlf" / "config.pbtxt").read_text()
        assert "dynamic_batching" not in text and "max_batch_size: 1024" in text


def test_config_rejects_bad_values() -> None:
    with pytest.raises(ValueError, match="preferred_batch_sizes"):
        model_config(SPEC, "m", backend="onnxruntime", max_batch_size=8, preferred_batch_sizes=[16])
    with pytest.raises(ValueError, match="max_batch_size"):
        model_config(SPEC, "m", backend="python", max_batch_size=0)
    assert render_config(model_config(SPEC, "m", backend="python")).endswith("]\n")


def test_versioned_layout_and_files(tmp_path: Path, fake_onnx: Path) -> None:
    meta_src = tmp_path / "export" / "export.json"
    meta_src.write_text('{"auc": 0.8}')
    published = _write(tmp_path, fake_onnx, extra_files={"export.json": meta_src})
    assert published.prod_version_dir == tmp_path / "prod" / "dlf" / "1"
    for repo, backend in (("prod", "onnxruntime"), ("local", "python")):
        model_dir = tmp_path / repo / "dlf"
        assert (model_dir / "1" / "model.onnx").read_bytes() == b"not-really-onnx"
        assert (model_dir / "1" / "export.json").read_text() == '{"auc": 0.8}'
        assert FeatureSpec.from_json((model_dir / "spec.json").read_text()) == SPEC
        meta = json.loads((model_dir / "metadata.json").read_text())
        assert meta["name"] == "dlf" and "version" not in meta and meta["backend"] == backend
        assert json.loads((model_dir / "1" / "metadata.json").read_text())["version"] == 1
        assert meta["total_slots"] == 5
        assert meta["inputs"] == ["sparse_ids", "sparse_mask"] and meta["outputs"] == ["probability"]
    assert (tmp_path / "local" / "dlf" / "1" / "model.py").read_text().startswith('"""Triton Python-backend')
    assert not (tmp_path / "prod" / "dlf" / "1" / "model.py").exists()
    # A plain file blocks bytecode writes that a polling Triton would see as a change.
    assert (tmp_path / "local" / "dlf" / "1" / "__pycache__").is_file()
    # Staging happens beside, never inside, the repository.
    assert sorted(p.name for p in (tmp_path / "local").iterdir()) == ["dlf"]


def test_versions_coexist_and_replace(tmp_path: Path, fake_onnx: Path) -> None:
    _write(tmp_path, fake_onnx, version=1)
    config = tmp_path / "local" / "dlf" / "config.pbtxt"
    metadata = tmp_path / "local" / "dlf" / "metadata.json"
    mtimes = (config.stat().st_mtime_ns, metadata.stat().st_mtime_ns)
    fake_onnx.write_bytes(b"v2")
    _write(tmp_path, fake_onnx, version=2)
    # unchanged model-level files are not rewritten: a polling Triton keeps version 1 loaded
    assert (config.stat().st_mtime_ns, metadata.stat().st_mtime_ns) == mtimes
    assert list_models(tmp_path / "local") == {"dlf": [1, 2]}
    assert json.loads((tmp_path / "local" / "dlf" / "2" / "metadata.json").read_text())["version"] == 2
    fake_onnx.write_bytes(b"v2-fixed")
    _write(tmp_path, fake_onnx, version=2)  # re-export replaces the version atomically
    assert (tmp_path / "local" / "dlf" / "2" / "model.onnx").read_bytes() == b"v2-fixed"
    remove_version(tmp_path / "local", "dlf", 1)
    assert list_models(tmp_path / "local") == {"dlf": [2]}


def test_list_models(tmp_path: Path, fake_onnx: Path) -> None:
    assert list_models(tmp_path / "missing") == {}
    _write(tmp_path, fake_onnx, version=3)
    write_model_repository(fake_onnx, SPEC, "dmoe", 1, tmp_path / "prod", tmp_path / "local",
                           site_packages=Path("/x"))
    (tmp_path / "local" / "not_a_model").mkdir()  # no config.pbtxt
    (tmp_path / "local" / "dlf" / "notes").mkdir()  # non-numeric: not a version
    assert list_models(tmp_path / "local") == {"dlf": [3], "dmoe": [1]}
    assert list_models(tmp_path / "prod") == {"dlf": [3], "dmoe": [1]}


def test_input_validation(tmp_path: Path, fake_onnx: Path) -> None:
    with pytest.raises(FileNotFoundError, match="recast export"):
        _write(tmp_path, tmp_path / "nope.onnx")
    with pytest.raises(ValueError, match="positive integer"):
        _write(tmp_path, fake_onnx, version=0)
    with pytest.raises(ValueError, match="reserved"):
        _write(tmp_path, fake_onnx, extra_files={"model.py": fake_onnx})


def test_configs_parse_with_tritons_own_schema(tmp_path: Path, fake_onnx: Path) -> None:
    """Both config.pbtxt files parse strictly as Triton's ModelConfig protobuf.

    The schema ships with tritonclient in the Triton venv (the main venv has no
    grpc extra), so the check runs there; without that venv the test fails.
    """
    import subprocess

    python = Path(__file__).resolve().parents[2] / ".venv-triton" / "bin" / "python"
    if not python.exists():
        pytest.fail(".venv-triton is not installed: run `make install` (make test does it)")
    _write(tmp_path, fake_onnx, spec=SPEC_DENSE, preferred_batch_sizes=[8, 32])
    check = (
        "import sys\n"
        "from google.protobuf import text_format\n"
        "from tritonclient.grpc import model_config_pb2 as pb\n"
        "for path in sys.argv[1:]:\n"
        "    cfg = text_format.Parse(open(path).read(), pb.ModelConfig())\n"
        "    print(cfg.backend, cfg.max_batch_size, len(cfg.input),"
        " cfg.dynamic_batching.max_queue_delay_microseconds, sorted(cfg.parameters))\n"
    )
    out = subprocess.run(
        [str(python), "-c", check,
         str(tmp_path / "prod" / "dlf" / "config.pbtxt"),
         str(tmp_path / "local" / "dlf" / "config.pbtxt")],
        capture_output=True, text=True, timeout=60,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == [
        "onnxruntime 1024 3 500 []",
        "python 1024 3 500 ['intra_op_threads', 'site_packages']",
    ]
