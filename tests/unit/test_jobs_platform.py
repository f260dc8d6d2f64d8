"""The jobs platform (jobs/runner.py, sweep.py, metrics.py, cli.py) with a small job defined here:
run directory and manifest, seeded sweeps (serial = parallel), resume after cancel and failure,
cluster cells + reduce, the Pushgateway push, config errors, the CLI."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest

from jobs.base import Job, JobContext, Verdict, get_job, register
from jobs.runner import count_cells, list_runs, rereport, run_job


def noisy_square(cell: dict) -> dict:
    """A sweep cell: deterministic in the cell, plus noise from the cell's own seed."""
    if cell.get("signal_parent"):  # a worker process: the runner is our parent
        os.kill(os.getppid(), signal.SIGTERM)
        time.sleep(300)
    if cell.get("fail"):
        raise RuntimeError(f"cell {cell['x']:g} broke")
    return {"x": cell["x"], "y": cell["x"] ** 2 + float(np.random.normal(0, 0.01)), "pid": os.getpid()}


@dataclass
class ToyConfig:
    points: int = 6
    cancel_after: int = -1
    """Send ourselves SIGTERM after this many cells, once per run (state remembers it)."""
    fail_at: int = -1
    signal_parent_at: int = -1
    scale: float = 1.0
    tags: list[str] | None = None


@register
class ToyJob(Job):
    name = "toy-platform-test"
    title = "A toy job of the platform's tests"
    claim = "y grows with x."
    Config = ToyConfig
    presets = {"tiny": {"points": 4}, "full": {"points": 8}}

    def run(self, cfg: ToyConfig, ctx: JobContext) -> dict:
        cells = [{"x": x * cfg.scale, "fail": x == cfg.fail_at, "signal_parent": x == cfg.signal_parent_at}
                 for x in range(cfg.points)]
        if cfg.cancel_after >= 0 and ctx.load_state("cancelled-once") is None:
            done = ctx.map(noisy_square, cells[: cfg.cancel_after], desc="squares")
            ctx._maps = 0  # the same sweep again below: cells already done are reused
            ctx.save_state("cancelled-once", {"done": len(done)})
            os.kill(os.getpid(), signal.SIGTERM)
        out = ctx.map(noisy_square, cells, desc="squares")
        ctx.metric("best_y", max(r["y"] for r in out), job_part="toy")
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots()
        ax.plot([r["x"] for r in out], [r["y"] for r in out])
        fig.savefig(ctx.plot_path("curve"))
        plt.close(fig)
        return {"ys": [r["y"] for r in out], "pids": sorted({r["pid"] for r in out})}

    def verdict(self, cfg: ToyConfig, results: dict) -> Verdict:
        ys = results["ys"]
        held = all(b > a for a, b in zip(ys, ys[1:]))
        return Verdict(held, f"{len(ys)} points, increasing: {held}", "| x | y |\n|---|---|\n" +
                       "\n".join(f"| {i} | {y:.3f} |" for i, y in enumerate(ys)))


def test_run_writes_manifest_results_report_and_is_seeded(tmp_path: Path) -> None:
    a = run_job("toy-platform-test", root=tmp_path, preset="tiny", seed=3, quiet=True)
    assert a.status == "succeeded", a.manifest
    m = json.loads((a.run_dir / "manifest.json").read_text())
    assert m["status"] == "succeeded" and m["config"]["points"] == 4 and m["seed"] == 3
    assert m["versions"]["python"] and m["host"] and m["started_at"] and m["ended_at"]
    assert m["claim_held"] is True
    results = json.loads((a.run_dir / "results.json").read_text())
    assert len(results["ys"]) == 4
    report = (a.run_dir / "report.md").read_text()
    assert "y grows with x." in report and "held" in report and "![curve](curve.png)" in report
    assert "<table>" in (a.run_dir / "report.html").read_text()
    assert (a.run_dir / "curve.png").stat().st_size > 1000
    # same seed, same numbers; another seed, other noise
    b = run_job("toy-platform-test", root=tmp_path, preset="tiny", seed=3, quiet=True)
    c = run_job("toy-platform-test", root=tmp_path, preset="tiny", seed=4, quiet=True)
    assert b.run_dir != a.run_dir and b.results["ys"] == a.results["ys"]
    assert c.results["ys"] != a.results["ys"]
    assert [r["status"] for r in list_runs(tmp_path)] == ["succeeded"] * 3


def test_parallel_sweep_uses_processes_and_matches_serial(tmp_path: Path) -> None:
    serial = run_job("toy-platform-test", root=tmp_path, preset="tiny", quiet=True, parallelism=1)
    parallel = run_job("toy-platform-test", root=tmp_path, preset="tiny", quiet=True, parallelism=2)
    assert parallel.status == "succeeded", parallel.manifest
    assert parallel.results["ys"] == serial.results["ys"]
    assert os.getpid() not in parallel.results["pids"] and len(parallel.results["pids"]) >= 1
    assert serial.results["pids"] == [os.getpid()]


def test_cancel_then_resume_keeps_finished_cells(tmp_path: Path) -> None:
    first = run_job("toy-platform-test", root=tmp_path, overrides={"cancel_after": 3}, quiet=True)
    assert first.status == "cancelled" and "--resume" in first.manifest["error"]
    assert len([p for p in (first.run_dir / "cells").rglob("*.json") if p.name != "sweep.json"]) == 3
    assert "running" not in list_runs(tmp_path)[0]["status"]
    again = run_job(None, root=tmp_path, resume=f"toy-platform-test/{first.run_dir.name}", quiet=True)
    assert again.status == "succeeded" and again.run_dir == first.run_dir
    assert again.manifest["cells_computed"] == 3  # 6 cells, 3 reused
    assert again.manifest["attempts"][0]["status"] == "cancelled"
    fresh = run_job("toy-platform-test", root=tmp_path, quiet=True)
    assert fresh.results["ys"] == again.results["ys"]  # resuming changes nothing


def test_cancel_stops_a_parallel_sweep_at_once(tmp_path: Path) -> None:
    started = time.monotonic()
    out = run_job("toy-platform-test", root=tmp_path, overrides={"signal_parent_at": 0}, parallelism=2, quiet=True)
    assert out.status == "cancelled"
    assert time.monotonic() - started < 120  # the worker sleeping 300 s was terminated, not awaited


def test_failure_is_recorded_and_resume_refuses_new_config(tmp_path: Path) -> None:
    out = run_job("toy-platform-test", root=tmp_path, overrides={"fail_at": 2}, quiet=True)
    assert out.status == "failed"
    m = json.loads((out.run_dir / "manifest.json").read_text())
    assert m["status"] == "failed" and "cell 2 broke" in m["error"] and "RuntimeError" in m["traceback"]
    assert not (out.run_dir / "results.json").exists()
    with pytest.raises(ValueError, match="keeps its preset"):
        run_job(None, root=tmp_path, resume=str(out.run_dir), overrides={"fail_at": -1})
    with pytest.raises(FileNotFoundError, match="no results"):
        rereport(tmp_path, str(out.run_dir))


def test_config_errors_are_clear(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown config field.*nope.*fields: points"):
        run_job("toy-platform-test", root=tmp_path, overrides={"nope": 1})
    with pytest.raises(ValueError, match="points: expected an integer"):
        run_job("toy-platform-test", root=tmp_path, overrides={"points": "many"})
    with pytest.raises(ValueError, match="unknown preset 'huge'"):
        run_job("toy-platform-test", root=tmp_path, preset="huge")
    with pytest.raises(KeyError, match="no job named 'nojob'"):
        get_job("nojob")
    ok = run_job("toy-platform-test", root=tmp_path, overrides={"scale": "2", "tags": "a,b"}, quiet=True)
    assert ok.manifest["config"]["scale"] == 2.0 and ok.manifest["config"]["tags"] == ["a", "b"]


def test_cluster_cells_then_last_pod_reduces(tmp_path: Path) -> None:
    assert count_cells("toy-platform-test", "tiny", {}, None) == 4
    outcomes = [run_job("toy-platform-test", root=tmp_path, preset="tiny", run_id="sweep", cell_index=i, quiet=True)
                for i in (2, 0, 3)]
    assert [o.status for o in outcomes] == ["cell-stored"] * 3
    assert not (tmp_path / "toy-platform-test/sweep/manifest.json").exists()
    with pytest.raises(ValueError, match="another spec"):
        run_job("toy-platform-test", root=tmp_path, preset="full", run_id="sweep", cell_index=1, quiet=True)
    last = run_job("toy-platform-test", root=tmp_path, preset="tiny", run_id="sweep", cell_index=1, quiet=True)
    assert last.status == "succeeded" and last.manifest["cells_computed"] == 1
    assert json.loads((tmp_path / "toy-platform-test/sweep/manifest.json").read_text())["status"] == "succeeded"
    local = run_job("toy-platform-test", root=tmp_path, preset="tiny", quiet=True)
    assert last.results["ys"] == local.results["ys"]
    bad = run_job("toy-platform-test", root=tmp_path, preset="tiny", run_id="sweep2", cell_index=9, quiet=True)
    assert bad.status == "failed" and "out of range" in bad.manifest["error"]


def test_reduce_computes_missing_cells(tmp_path: Path) -> None:
    run_job("toy-platform-test", root=tmp_path, preset="tiny", run_id="r", cell_index=0, quiet=True)
    reduced = run_job(None, root=tmp_path, resume="toy-platform-test/r", quiet=True)
    assert reduced.status == "succeeded" and reduced.manifest["cells_computed"] == 3


class _Recorder(BaseHTTPRequestHandler):
    requests: list[tuple[str, str, bytes]] = []

    def do_PUT(self) -> None:  # noqa: N802 - http.server's naming
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        _Recorder.requests.append((self.command, self.path, body))
        self.send_response(200)
        self.end_headers()

    do_POST = do_PUT

    def log_message(self, *args: object) -> None:
        pass


def test_metrics_are_pushed_to_a_pushgateway(tmp_path: Path) -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Recorder)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}"
        out = run_job("toy-platform-test", root=tmp_path, preset="tiny", run_id="pushed", pushgateway_url=url, quiet=True)
    finally:
        server.shutdown()
        server.server_close()
    assert out.status == "succeeded" and "pushgateway_error" not in out.manifest
    (method, path, body), = _Recorder.requests
    assert method == "PUT" and path == "/metrics/job/recast_jobs_toy-platform-test/run_id/pushed"
    text = body.decode()
    assert 'recast_job_best_y{job_part="toy"}' in text
    assert 'recast_job_status{status="succeeded"} 1.0' in text and "recast_job_last_success_timestamp_seconds" in text
    # an unreachable gateway is reported, never fatal
    closed = run_job("toy-platform-test", root=tmp_path, preset="tiny", pushgateway_url=url, quiet=True)
    assert closed.status == "succeeded" and "push to" in closed.manifest["pushgateway_error"]
    lines = (out.run_dir / "metrics.jsonl").read_text().splitlines()
    assert json.loads(lines[0])["name"] == "best_y"


def test_cli_run_status_report(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    from recast.cli import main
    from recast.settings import get_settings

    monkeypatch.setenv("RECAST_JOBS__RUN_ROOT", str(tmp_path))
    get_settings.cache_clear()
    try:
        main(["jobs", "run", "toy-platform-test", "--preset", "tiny", "--set", "scale=3", "--seed", "1",
              "--run-id", "cli", "--quiet"])
        out = json.loads(capsys.readouterr().out)
        assert out["status"] == "succeeded" and out["claim_held"] is True and out["run"] == "toy-platform-test/cli"
        main(["jobs", "status"])
        assert "toy-platform-test/cli" in capsys.readouterr().out
        main(["jobs", "report", "cli"])
        assert "The claim." in capsys.readouterr().out
        main(["jobs", "list"])
        assert "toy-platform-test" in capsys.readouterr().out
        with pytest.raises(SystemExit) as exit_:
            main(["jobs", "run", "toy-platform-test", "--set", "fail_at=1", "--quiet"])
        assert exit_.value.code == 1 and "cell 1 broke" in capsys.readouterr().out
    finally:
        get_settings.cache_clear()
