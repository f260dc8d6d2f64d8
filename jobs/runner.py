"""The one runner of every job: run directory, manifest, seeding, resume, cancellation,
cluster cells and the report.

A run lives in ``<run_root>/<job>/<run-id>/``:

* ``spec.json``      what was asked (job, preset, config, seed): a resume or a reduce reads it
* ``manifest.json``  the record: config, seed, versions, git revision, host, start/end, status
                     (running, succeeded, failed -- with the error --, cancelled), attempts
* ``results.json``, ``report.md``, ``report.html``, ``*.png``  the outcome
* ``cells/``  one JSON per finished sweep cell; ``state/`` the job's checkpoints
* ``log.txt``, ``metrics.jsonl``; ``pods/cell-<i>.json`` in cluster cell mode
"""

from __future__ import annotations

import json
import os
import platform
import signal
import socket
import subprocess
import sys
import threading
import time
import traceback
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator

from jobs.base import Job, JobCancelled, JobContext, StopAfterCell, get_job, to_jsonable
from jobs.config import build_config, config_dict
from jobs.metrics import MetricsRecorder
from jobs.report import write_report
from jobs.sweep import CellStore, seed_all

REPO_ROOT = Path(__file__).resolve().parents[1]


@dataclass
class RunOutcome:
    run_dir: Path
    status: str
    """succeeded, failed, cancelled, or cell-stored (cluster cell mode, the reduce comes later)."""
    manifest: dict[str, Any]
    results: dict[str, Any] | None = None


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _write_json(path: Path, obj: Any) -> None:
    tmp = path.with_suffix(path.suffix + f".tmp{os.getpid()}")
    tmp.write_text(json.dumps(to_jsonable(obj), indent=2, allow_nan=True) + "\n")
    tmp.replace(path)


def git_revision() -> str | None:
    try:
        rev = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=5)
        if rev.returncode != 0:
            return os.environ.get("RECAST_GIT_REVISION")
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO_ROOT,
                               capture_output=True, text=True, timeout=5).stdout.strip()
        return rev.stdout.strip() + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return os.environ.get("RECAST_GIT_REVISION")  # images carry it as an environment variable


def versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version()}
    for name in ("recast", "numpy", "torch", "torchrec", "scikit-learn"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            pass
    return out


def new_run_id(root: Path, job: str, preset: str | None) -> str:
    base = f"{datetime.now(timezone.utc):%Y%m%d-%H%M%S}-{preset or 'default'}"
    run_id, n = base, 1
    while (root / job / run_id).exists():
        n += 1
        run_id = f"{base}-{n}"
    return run_id


def find_run(root: Path, ref: str) -> Path:
    """``job/run-id``, a bare run id (searched under every job), or a path to a run directory."""
    path = Path(ref)
    if (path / "spec.json").exists():
        return path
    if (root / ref / "spec.json").exists():
        return root / ref
    hits = sorted(p.parent for p in root.glob(f"*/{ref}/spec.json"))
    if len(hits) == 1:
        return hits[0]
    if len(hits) > 1:
        raise ValueError(f"run id {ref!r} exists for several jobs: {', '.join(h.parent.name for h in hits)}; use JOB/{ref}")
    raise FileNotFoundError(f"no run {ref!r} under {root} (recast jobs status lists them)")


@contextmanager
def cancel_on_signals(event: threading.Event) -> Iterator[None]:
    """SIGINT/SIGTERM set ``event`` (the job stops at its next check, state saved); a second
    SIGINT interrupts at once."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: Any) -> None:
        if event.is_set() and signum == signal.SIGINT:
            raise KeyboardInterrupt
        event.set()
        print(f"\n{signal.Signals(signum).name}: cancelling at the next checkpoint (Ctrl-C again to stop now)",
              file=sys.stderr, flush=True)

    previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


def _spec_for(job: Job, run_dir: Path, preset: str | None, overrides: dict, seed: int | None,
              resume: bool) -> dict[str, Any]:
    spec_path = run_dir / "spec.json"
    if resume:
        if not spec_path.exists():
            raise FileNotFoundError(f"{run_dir} has no spec.json: not a run directory")
        spec = json.loads(spec_path.read_text())
        if overrides or preset is not None or seed is not None:
            raise ValueError("a resumed run keeps its preset, config and seed; start a new run to change them")
        return spec
    cfg = build_config(job.Config, job.presets, preset, overrides)
    spec = {"job": job.name, "preset": preset, "overrides": overrides, "config": config_dict(cfg),
            "seed": 0 if seed is None else seed}
    if spec_path.exists():  # cluster pods of one run all write it: they must agree
        saved = json.loads(spec_path.read_text())
        if saved != to_jsonable(spec):
            raise ValueError(f"{run_dir} already holds a run with another spec; pick another --run-id or --resume it")
    else:
        run_dir.mkdir(parents=True, exist_ok=True)
        _write_json(spec_path, spec)
    return spec


def run_job(name: str | None, *, root: Path, preset: str | None = None, overrides: dict[str, Any] | None = None,
            seed: int | None = None, run_id: str | None = None, resume: str | Path | None = None,
            cell_index: int | None = None, parallelism: int = 1, pushgateway_url: str | None = None,
            quiet: bool = False, argv: list[str] | None = None) -> RunOutcome:
    """Run (or resume, or compute one cluster cell of) a job; never raises for a failure of the
    job itself: the outcome's status and the manifest say what happened."""
    overrides = dict(overrides or {})
    if resume is not None:
        run_dir = find_run(root, str(resume))
        name = json.loads((run_dir / "spec.json").read_text())["job"]
    if name is None:
        raise ValueError("name a job or --resume a run")
    job = get_job(name)
    if resume is None:
        run_dir = root / job.name / (run_id or new_run_id(root, job.name, preset))
    run_dir.mkdir(parents=True, exist_ok=True)
    spec = _spec_for(job, run_dir, preset, overrides, seed, resume is not None)
    cfg = build_config(job.Config, {}, None, spec["config"])

    manifest_path = run_dir / ("manifest.json" if cell_index is None else f"pods/cell-{cell_index}.json")
    manifest_path.parent.mkdir(parents=True, exist_ok=True)
    previous = json.loads(manifest_path.read_text()) if manifest_path.exists() else {}
    attempts = previous.get("attempts", [])
    if previous:
        attempts.append({k: previous.get(k) for k in ("started_at", "ended_at", "status", "error", "host")})
    manifest: dict[str, Any] = {
        "job": job.name, "title": job.title, "run_id": run_dir.name, "preset": spec["preset"],
        "config": spec["config"], "overrides": spec["overrides"], "seed": spec["seed"], "status": "running",
        "error": None, "started_at": _now(), "ended_at": None, "seconds": None, "host": socket.gethostname(),
        "pid": os.getpid(), "versions": versions(), "git_revision": git_revision(),
        "command": argv if argv is not None else sys.argv, "cell_index": cell_index, "attempts": attempts,
    }
    _write_json(manifest_path, manifest)

    cancel = threading.Event()
    metrics = MetricsRecorder(run_dir / "metrics.jsonl", job.name, run_dir.name, pushgateway_url, cell_index)
    ctx = JobContext(run_dir, spec["seed"], parallelism=parallelism, cancel_event=cancel, metrics=metrics,
                     cell_index=cell_index, quiet=quiet)
    ctx.log(f"{job.name}: run {run_dir} ({'resumed' if resume else 'new'}, preset {spec['preset']}, seed {spec['seed']})")
    started = time.perf_counter()
    results = None
    status = "running"
    try:
        with cancel_on_signals(cancel):
            seed_all(spec["seed"])
            results = to_jsonable(job.run(cfg, ctx))
            status = "succeeded"
    except StopAfterCell as stop:
        status, manifest["note"] = "cell-stored", str(stop)
    except (JobCancelled, KeyboardInterrupt):
        status, manifest["error"] = "cancelled", "cancelled by a signal; continue with --resume " + f"{job.name}/{run_dir.name}"
    except Exception as exc:  # noqa: BLE001 - the manifest says why
        status = "failed"
        manifest["error"] = f"{type(exc).__name__}: {exc}"
        manifest["traceback"] = traceback.format_exc(limit=-8)
    reduced_here = ctx.cell_index is None and cell_index is not None and status != "cell-stored"
    seconds = time.perf_counter() - started
    manifest.update(status=status, ended_at=_now(), seconds=round(seconds, 2), cells_computed=ctx.cells_computed)
    if results is not None:
        _write_json(run_dir / "results.json", results)
        try:
            verdict = write_report(job, cfg, results, ctx, manifest)
            manifest["claim_held"] = verdict.held
        except Exception as exc:  # noqa: BLE001 - results are safe on disk; `recast jobs report` redraws
            manifest["report_error"] = f"{type(exc).__name__}: {exc}"
            ctx.log(f"report failed: {manifest['report_error']}")
    push_error = metrics.push(status, seconds)
    if push_error:
        manifest["pushgateway_error"] = push_error
        ctx.log(push_error)
    _write_json(manifest_path, manifest)
    if reduced_here:  # this pod completed the sweep and reduced: it also writes the run's record
        _write_json(run_dir / "manifest.json", manifest)
    ctx.log(f"{job.name}: {status} in {seconds:.1f}s" + (f" -- {manifest['error']}" if manifest.get("error") else ""))
    return RunOutcome(run_dir, status, manifest, results)


def list_runs(root: Path, job: str | None = None) -> list[dict[str, Any]]:
    """Every run under ``root`` (newest first) with its status; a run whose process is gone
    while its manifest still says running is reported as ``stale``."""
    rows = []
    for spec_path in sorted(root.glob(f"{job or '*'}/*/spec.json")):
        run_dir = spec_path.parent
        manifest_path = run_dir / "manifest.json"
        m = json.loads(manifest_path.read_text()) if manifest_path.exists() else {}
        status = m.get("status")
        if status is None:
            pods = list((run_dir / "pods").glob("cell-*.json"))
            status = f"partial ({len(pods)} cell pod(s) reported)" if pods else "unknown"
        elif status == "running" and m.get("host") == socket.gethostname() and not _alive(m.get("pid")):
            status = "stale (process gone; --resume it)"
        if status == "running" or status.startswith("partial"):
            status += sweep_progress(run_dir)
        rows.append({"run": f"{run_dir.parent.name}/{run_dir.name}", "status": status,
                     "started_at": m.get("started_at"), "seconds": m.get("seconds"),
                     "claim_held": m.get("claim_held"), "error": m.get("error")})
    return sorted(rows, key=lambda r: r["started_at"] or "", reverse=True)


def sweep_progress(run_dir: Path) -> str:
    """' (cells 404/550)' for the sweeps of a run that are under way, '' when none."""
    parts = []
    for meta in sorted(run_dir.glob("cells/*/sweep.json")):
        total = json.loads(meta.read_text())["cells"]
        parts.append(f"{CellStore(run_dir, meta.parent.name).count()}/{total}")
    return f" (cells {', '.join(parts)})" if parts else ""


def _alive(pid: Any) -> bool:
    if not isinstance(pid, int):
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def rereport(root: Path, ref: str) -> Path:
    """Rewrite report.md/html (and the job's plots) of a finished run from its results.json."""
    run_dir = find_run(root, ref)
    spec = json.loads((run_dir / "spec.json").read_text())
    results_path = run_dir / "results.json"
    if not results_path.exists():
        manifest = json.loads((run_dir / "manifest.json").read_text()) if (run_dir / "manifest.json").exists() else {}
        raise FileNotFoundError(f"{run_dir} has no results (status {manifest.get('status')}: {manifest.get('error')})")
    job = get_job(spec["job"])
    cfg = build_config(job.Config, {}, None, spec["config"])
    manifest = json.loads((run_dir / "manifest.json").read_text())
    ctx = JobContext(run_dir, spec["seed"], quiet=True)
    verdict = write_report(job, cfg, json.loads(results_path.read_text()), ctx, manifest)
    manifest["claim_held"] = verdict.held
    _write_json(run_dir / "manifest.json", manifest)
    return run_dir / "report.md"


def count_cells(name: str, preset: str | None, overrides: dict[str, Any], seed: int | None) -> int:
    """Cells of the job's first sweep (what a cluster's Indexed Job needs as completions): runs the
    job in a scratch directory up to its first ``ctx.map``."""
    import tempfile

    from jobs.base import SweepSize

    job = get_job(name)
    cfg = build_config(job.Config, job.presets, preset, overrides)
    with tempfile.TemporaryDirectory() as tmp:
        ctx = JobContext(Path(tmp), 0 if seed is None else seed, quiet=True, count_only=True)
        try:
            job.run(cfg, ctx)
        except SweepSize as size:
            return size.cells
    raise ValueError(f"job {name} runs no sweep: run it as a plain Job, not an Indexed Job")
