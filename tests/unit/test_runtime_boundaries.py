"""The runtime must not carry PyTorch: a gateway image has no torch in it."""

from __future__ import annotations

import subprocess
import sys

RUNTIME_MODULES = [
    "serving.gateway",
    "serving.scoring",
    "serving.triton_client",
    "serving.model_repository",
    "serving.triton_launcher",
    "features.online",
    "features.encoding",
    "recast.stack",
    "recast.cli",
]


def test_runtime_imports_no_torch_and_no_training():
    code = (
        "import sys\n"
        + "".join(f"import {m}\n" for m in RUNTIME_MODULES)
        + "bad = sorted(m for m in sys.modules if m == 'torch' or m.startswith(('torch.', 'torchrec', 'training')))\n"
        + "print(','.join(bad))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"runtime modules imported {out.stdout.strip()}"
