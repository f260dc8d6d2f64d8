"""What the chart's containers run besides ``recast``: the TensorRT init container's script, and the
application image's Dockerfile against the Makefile's installs."""

from __future__ import annotations

import importlib.util
import json
import re
import stat
import sys
from pathlib import Path

from recast.settings import GatewaySettings

from chart_render import CHART, ROOT, chart_values


# -- the TensorRT init container's script ------------------------------------------------------


def _load_script():
    path = CHART / "files" / "build_tensorrt_repository.py"
    spec = importlib.util.spec_from_file_location("build_tensorrt_repository", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_tensorrt_script_converts_an_exported_repository(tmp_path: Path) -> None:
    from features.spec import FeatureSpec, SparseFeature
    from serving.model_repository import write_model_repository

    spec = FeatureSpec(sparse=(SparseFeature("user_id", 10, "user"), SparseFeature("genres", 5, "item", max_len=3)))
    onnx = tmp_path / "model.onnx"
    onnx.write_bytes(b"onnx")
    prod, local = tmp_path / "prod", tmp_path / "local"
    for version in (1, 2):
        write_model_repository(onnx, spec, "dlf", version, prod, local, max_batch_size=256,
                               site_packages=tmp_path)
    calls = tmp_path / "calls.jsonl"
    trtexec = tmp_path / "trtexec"
    trtexec.write_text(
        f"#!{sys.executable}\nimport json, sys\n"
        f"open({str(calls)!r}, 'a').write(json.dumps(sys.argv[1:]) + '\\n')\n"
        "out = [a.split('=', 1)[1] for a in sys.argv[1:] if a.startswith('--saveEngine=')][0]\n"
        "open(out, 'wb').write(b'engine')\n")
    trtexec.chmod(trtexec.stat().st_mode | stat.S_IEXEC)

    script = _load_script()
    assert script.main(["--source", str(prod), "--target", str(tmp_path / "trt"), "--trtexec", str(trtexec),
                        "--opt-batch", "64", "--fp16"]) == 0
    out = tmp_path / "trt" / "dlf"
    config = (out / "config.pbtxt").read_text()
    original = (prod / "dlf" / "config.pbtxt").read_text()
    assert 'platform: "tensorrt_plan"' in config and 'backend: "tensorrt"' in config and "KIND_GPU" in config
    assert "onnxruntime" not in config
    assert script.input_dims(config) == script.input_dims(original) == {
        "sparse_ids": [spec.total_slots], "sparse_mask": [spec.total_slots]}
    assert config.split("output [")[1] == original.split("output [")[1].replace("KIND_CPU", "KIND_GPU")
    for version in ("1", "2"):
        assert (out / version / "model.plan").read_bytes() == b"engine"
        assert not (out / version / "model.onnx").exists()
    assert (out / "spec.json").read_text() == (prod / "dlf" / "spec.json").read_text()
    assert not list((tmp_path / "trt").glob("**/.*.building"))
    args = [json.loads(line) for line in calls.read_text().splitlines()]
    assert len(args) == 2
    slots = spec.total_slots
    assert f"--minShapes=sparse_ids:1x{slots},sparse_mask:1x{slots}" in args[0]
    assert f"--optShapes=sparse_ids:64x{slots},sparse_mask:64x{slots}" in args[0]
    assert f"--maxShapes=sparse_ids:256x{slots},sparse_mask:256x{slots}" in args[0]
    assert "--fp16" in args[0]
    # an empty or missing repository is an error the init container reports
    (tmp_path / "empty").mkdir()
    assert script.main(["--source", str(tmp_path / "empty"), "--target", str(tmp_path / "x")]) == 1


# -- the application image -----------------------------------------------------------------------


def _dockerfile_stages() -> dict[str, str]:
    text = (ROOT / "Dockerfile").read_text()
    stages: dict[str, str] = {}
    for block in re.split(r"^(?=FROM )", text, flags=re.M)[1:]:
        name = re.match(r"FROM \S+ AS (\S+)", block).group(1)
        stages[name] = block
    return stages


def test_dockerfile_runtime_has_no_torch_and_train_matches_the_makefile() -> None:
    stages = _dockerfile_stages()
    assert list(stages)[-1] == "runtime", "the default target must be the runtime image"
    runtime_chain = stages["base"] + stages["build"] + stages["runtime"]
    installs = re.findall(r"pip install[^\n]*", runtime_chain)
    assert installs and not any("train" in i or "torch" in i for i in installs), installs
    assert re.search(r"COPY --from=build /opt/venv", stages["runtime"])
    train = stages["build-train"]
    assert re.search(r'pip install "\.\[train\]"', train)
    makefile_version = re.search(r"^TORCHREC_VERSION := (\S+)", (ROOT / "Makefile").read_text(), re.M).group(1)
    assert re.search(rf"ARG TORCHREC_VERSION={re.escape(makefile_version)}\b", train)
    assert 'pip install --no-deps "torchrec==${TORCHREC_VERSION}"' in train
    values = chart_values()
    uid = values["podSecurityContext"]["runAsUser"]
    for stage in ("runtime", "train"):
        assert re.search(rf"^USER {uid}:{values['podSecurityContext']['runAsGroup']}$", stages[stage], re.M), stage
        assert 'ENTRYPOINT ["recast"]' in stages[stage]
        assert f"RECAST_HOME={values['home']}" in stages[stage]
    assert f"--uid {uid}" in stages["base"]
    assert re.search(rf"^EXPOSE {GatewaySettings().port}$", stages["runtime"], re.M)
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert {".venv", "data", "artifacts", ".git"} <= set(ignored)
