"""Shared helpers for the benchmarks: thread pinning, statistics, tables, JSON.

Import this module *before* torch / onnxruntime / numpy so that
``OMP_WAIT_POLICY=PASSIVE`` and the thread-count variables are set before the
OpenMP runtimes start (idle spinning threads would steal the shared cores).
"""

from __future__ import annotations

import json
import os
import platform
import socket
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Iterable, Sequence

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

FEATURES_DIR = ROOT / "data" / "features"
CHECKPOINT = ROOT / "artifacts" / "checkpoints" / "dlf" / "best.pt"
ONNX_MODEL = ROOT / "artifacts" / "models" / "dlf" / "1" / "model.onnx"
ONNX_SPEC = ROOT / "artifacts" / "models" / "dlf" / "1" / "spec.json"
TRITON_VENV = ROOT / ".venv-triton"
OUT_DIR = ROOT / "artifacts" / "benchmarks"


def pin_threads(n: int) -> None:
    """Fix the thread count of every runtime this process loads.

    Call before importing torch/onnxruntime (the OpenMP variables are read at
    load time); torch's own pools are set too when torch is already imported.
    """
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[var] = str(n)
    if "torch" in sys.modules:
        import torch

        torch.set_num_threads(n)
        try:
            torch.set_num_interop_threads(1)
        except RuntimeError:  # can only be set once per process
            pass


def ort_session(path: Path, threads: int):
    """onnxruntime CPU session configured like serving/triton_python_model.py."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])


# -- statistics ----------------------------------------------------------------------
def percentile(values: Sequence[float], q: float) -> float:
    """Linear-interpolated percentile (q in [0, 100]); nan for no values."""
    if not values:
        return float("nan")
    xs = sorted(values)
    if len(xs) == 1:
        return float(xs[0])
    pos = (len(xs) - 1) * q / 100.0
    lo = int(pos)
    hi = min(lo + 1, len(xs) - 1)
    return float(xs[lo] + (xs[hi] - xs[lo]) * (pos - lo))


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values)) if values else float("nan")


def summary_ms(seconds: Sequence[float]) -> dict[str, float]:
    ms = [s * 1e3 for s in seconds]
    return {
        "n": len(ms),
        "p50_ms": percentile(ms, 50),
        "p90_ms": percentile(ms, 90),
        "p99_ms": percentile(ms, 99),
        "max_ms": max(ms) if ms else float("nan"),
        "mean_ms": (sum(ms) / len(ms)) if ms else float("nan"),
    }


def ratio(a: float, b: float) -> float:
    return a / b if b else float("nan")


# -- output --------------------------------------------------------------------------
def fmt(value: Any, digits: int = 2) -> str:
    if isinstance(value, float):
        if value != value:  # nan
            return "-"
        if abs(value) >= 1e5:
            return f"{value:,.0f}"
        return f"{value:,.{digits}f}"
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    return str(value)


def table(headers: Sequence[str], rows: Iterable[Sequence[Any]], digits: int = 2) -> str:
    """A GitHub-markdown table (pastes into README unchanged)."""
    body = [[fmt(c, digits) for c in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in body)) if body else len(h) for i, h in enumerate(headers)]
    line = lambda cells: "| " + " | ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(cells, widths))) + " |"
    sep = "|" + "|".join("-" * (w + 1) + ":" if i else ":" + "-" * (w + 1) for i, w in enumerate(widths)) + "|"
    return "\n".join([line(headers), sep, *(line(r) for r in body)])


def environment(threads: int | None = None) -> dict[str, Any]:
    info: dict[str, Any] = {
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
        "loadavg_1min_at_start": _LOAD_AT_IMPORT,
        "loadavg_at_end": list(os.getloadavg()),
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
        "threads": threads,
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    for mod in ("torch", "torchrec", "onnxruntime", "numpy", "tritonclient", "httpx", "aiohttp"):
        if mod in sys.modules:
            info[mod] = getattr(sys.modules[mod], "__version__", "?")
    return info


_LOAD_AT_IMPORT = os.getloadavg()[0]


def load_note() -> str:
    """One line for the table footer: the shared host's 1-min load average at start and now."""
    return (f"host: {os.cpu_count()} CPUs, 1-min load average {_LOAD_AT_IMPORT:.2f} at start, "
            f"{os.getloadavg()[0]:.2f} at end (other processes share these cores)")


def write_json(name: str, payload: dict[str, Any], out_dir: Path | None = None) -> Path:
    out = Path(out_dir or OUT_DIR)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{name}.json"
    path.write_text(json.dumps(payload, indent=2, default=str) + "\n")
    return path


def progress(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def free_ports(n: int) -> list[int]:
    """n distinct free ports (sockets held open together so they differ)."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def pids_matching(fragment: str) -> list[int]:
    """Pids whose command line contains ``fragment`` (e.g. a temporary home)."""
    out = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                if fragment.encode() in (d / "cmdline").read_bytes():
                    out.append(int(d.name))
            except OSError:
                pass
    return out


def cpu_seconds(pids: Iterable[int]) -> float:
    """User + system CPU seconds used so far by these processes (Linux /proc)."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / tick
        except (OSError, IndexError, ValueError):
            pass
    return total


def own_cpu_seconds() -> float:
    import resource

    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def triton_site_packages(venv: Path = TRITON_VENV) -> Path:
    found = sorted(Path(venv).glob("lib/python3*/site-packages"))
    if not found:
        raise FileNotFoundError(f"{venv} has no site-packages: run `make install`")
    return found[0]
