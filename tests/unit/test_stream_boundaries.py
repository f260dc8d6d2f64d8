"""The streaming runtime and the gateway's exposure publisher carry no PyTorch and no training/."""

from __future__ import annotations

import subprocess
import sys

MODULES = [
    "streaming.events", "streaming.features", "streaming.state", "streaming.topics", "streaming.broker",
    "streaming.sink", "streaming.processor", "streaming.replay", "streaming.labels", "streaming.status",
    "streaming.cli", "streaming.harness", "serving.exposures", "serving.gateway", "features.online",
]


def test_streaming_imports_no_torch_and_no_training() -> None:
    code = (
        "import sys\n"
        + "".join(f"import {m}\n" for m in MODULES)
        + "import kafka\n"
        + "bad = sorted(m for m in sys.modules if m == 'torch' or m.startswith(('torch.', 'torchrec', 'training')))\n"
        + "print(','.join(bad))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"streaming modules imported {out.stdout.strip()}"
