"""The forecast runtime (forecasting/) never imports torch or training/, whatever module is loaded."""

from __future__ import annotations

import pkgutil
import subprocess
import sys
from pathlib import Path

import forecasting

RUNTIME = sorted(f"forecasting.{m.name}" for m in pkgutil.iter_modules([str(Path(forecasting.__file__).parent)]))


def test_every_runtime_module_is_checked() -> None:
    assert {"forecasting.contract", "forecasting.store", "forecasting.service", "forecasting.bundle",
            "forecasting.cli"} <= set(RUNTIME)


def test_runtime_imports_no_torch_and_no_training() -> None:
    code = ("import sys\n" + "".join(f"import {m}\n" for m in RUNTIME) + "import recast.cli, onnxruntime, kafka\n"
            "recast.cli.build_parser()\n"
            "bad = sorted(m for m in sys.modules if m == 'torch' or m.startswith(('torch.', 'training')))\n"
            "print(','.join(bad))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"forecast runtime imported {out.stdout.strip()}"


def test_runtime_sources_never_name_training() -> None:
    """Not even a lazy import: the runtime forwards train/export by module name only (forecasting/cli.py)."""
    root = Path(forecasting.__file__).parent
    for path in root.glob("*.py"):
        text = path.read_text()
        assert "from training" not in text and "import training" not in text, path
