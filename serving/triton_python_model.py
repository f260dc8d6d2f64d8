"""Triton Python-backend model that runs ``model.onnx`` with onnxruntime.

This file is a template: ``serving.model_repository`` copies it as
``model.py`` into every version directory of the *local* model repository.
It runs inside Triton's Python-backend stub, not inside recast, so it imports
nothing from this project and nothing beyond numpy + onnxruntime.

Why it exists: the ``tritonserver`` bundled in ``nvidia-pytriton`` has no
onnxruntime backend, only the Python backend. Production serves the same
``model.onnx`` with the native onnxruntime backend.

Parameters (``config.pbtxt`` ``parameters``):

* ``site_packages``: the Triton host venv's site-packages. The stub runs an
  isolated interpreter that ignores ``PYTHONPATH``, so this path is added to
  ``sys.path`` before onnxruntime is imported.
* ``intra_op_threads``: onnxruntime intra-op threads (default 1; spinning is
  disabled so idle threads do not burn a shared CPU).

Dynamic batching only pays off if the model runs one onnxruntime call per
batch: ``execute`` concatenates all requests' inputs, runs once, and splits
the output back per request.
"""

from __future__ import annotations

import json
import os
import sys

import numpy as np
import triton_python_backend_utils as pb_utils

OUTPUT = "probability"


def _parameters(model_config: dict) -> dict[str, str]:
    raw = model_config.get("parameters") or {}
    return {k: v.get("string_value", "") for k, v in raw.items()}


def _use_site_packages(path: str) -> None:
    if path and os.path.isdir(path) and path not in sys.path:
        sys.path.insert(0, path)


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        params = _parameters(config)
        _use_site_packages(params.get("site_packages", ""))

        if int(np.__version__.split(".")[0]) >= 2:
            # The stub's pybind11 layer was built against numpy 1.x; with 2.x it
            # answers every request with empty outputs instead of failing.
            raise pb_utils.TritonModelException(
                f"the Python-backend stub loaded numpy {np.__version__} from {np.__file__}; "
                "it needs numpy<2. Start tritonserver through recast (`recast stack up`), "
                "which puts the Triton venv's bin/ first on PATH so the stub uses that venv."
            )
        try:
            import onnxruntime as ort
        except ImportError as exc:
            raise pb_utils.TritonModelException(
                f"onnxruntime is not importable in the Triton stub ({exc}); sys.path={sys.path}. "
                "Install serving/triton_requirements.txt into the Triton venv (`make install`) "
                "and check the `site_packages` parameter in config.pbtxt."
            ) from exc

        model_dir = os.path.join(args["model_repository"], args["model_version"])
        onnx_path = os.path.join(model_dir, "model.onnx")
        if not os.path.isfile(onnx_path):
            onnx_path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "model.onnx")

        options = ort.SessionOptions()
        options.intra_op_num_threads = max(1, int(params.get("intra_op_threads", "1") or 1))
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.session = ort.InferenceSession(
            onnx_path, sess_options=options, providers=["CPUExecutionProvider"]
        )
        self.input_names = [i.name for i in self.session.get_inputs()]
        outputs = [o.name for o in self.session.get_outputs()]
        self.onnx_output = OUTPUT if OUTPUT in outputs else outputs[0]
        declared = {i["name"] for i in config.get("input", [])}
        missing = [n for n in self.input_names if n not in declared]
        if missing:
            raise pb_utils.TritonModelException(
                f"{onnx_path} needs inputs {missing} that config.pbtxt does not declare "
                f"(declared: {sorted(declared)}); re-export the model repository."
            )

    def execute(self, requests):
        try:
            parts = {name: [] for name in self.input_names}
            sizes = []
            for request in requests:
                for name in self.input_names:
                    parts[name].append(pb_utils.get_input_tensor_by_name(request, name).as_numpy())
                sizes.append(parts[self.input_names[0]][-1].shape[0])
            feed = {
                name: arrays[0] if len(arrays) == 1 else np.concatenate(arrays, axis=0)
                for name, arrays in parts.items()
            }
            scores = self.session.run([self.onnx_output], feed)[0]
            scores = np.asarray(scores, dtype=np.float32).reshape(-1, 1)
            if scores.shape[0] != sum(sizes):
                raise ValueError(f"model returned {scores.shape[0]} rows for {sum(sizes)} inputs")
        except Exception as exc:  # one failed batch fails each request, not the stub
            error = pb_utils.TritonError(f"onnxruntime inference failed: {exc}")
            return [pb_utils.InferenceResponse(output_tensors=[], error=error) for _ in requests]

        responses = []
        start = 0
        for size in sizes:
            chunk = scores[start : start + size]
            start += size
            responses.append(pb_utils.InferenceResponse([pb_utils.Tensor(OUTPUT, chunk)]))
        return responses

    def finalize(self):
        self.session = None
