"""The local stack: the Kafka-protocol broker (Tansu, memory-only), a real
tritonserver and the scoring gateway, as background processes with pid files,
logs and health checks (``recast stack up|down|status``).

``recast stack up`` also starts a small supervisor process (``recast/supervisor.py``)
that restarts any of the three when it dies; ``recast stack down`` stops the
supervisor first, so nothing is restarted behind it. ``recast stack status``
shows the supervisor's restart counts and each served model's health (the
checks behind the gateway's ``/readyz``, see ``serving/readiness.py``).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

from recast.processes import log_tail, pid_alive, terminate_group
from recast.settings import Settings


def child_environment(settings: Settings, config: Path) -> dict[str, str]:
    """Environment of a stack process: exactly these settings (ports, paths), whatever its cwd.

    The settings go to ``config`` as JSON (a YAML subset); the API key does not go
    to disk but to the child's environment.
    """
    config.parent.mkdir(parents=True, exist_ok=True)
    config.write_text(json.dumps(settings.model_dump(mode="json", exclude={"gateway": {"api_key"}})))
    env = {k: v for k, v in os.environ.items() if not k.startswith("RECAST_")}
    env["RECAST_CONFIG"] = str(config)
    if settings.gateway.api_key is not None:
        env["RECAST_GATEWAY__API_KEY"] = settings.gateway.api_key.get_secret_value()
    return env


class GatewayProcess:
    """uvicorn running serving.gateway in the background of this machine."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        logs = settings.path(settings.triton.log_dir)
        self.log_file = logs / "gateway.log"
        self.pid_file = logs.parent / "gateway" / "gateway.pid"
        g = settings.gateway
        self.url = f"http://{g.host}:{g.port}"

    def pid(self) -> int | None:
        return self._pid()

    def _pid(self) -> int | None:
        try:
            pid = int(json.loads(self.pid_file.read_text())["pid"])
        except (OSError, ValueError, KeyError):
            return None
        return pid if pid_alive(pid) else None

    def healthy(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/healthz", timeout=1.0) as r:
                return r.status == 200
        except OSError:
            return False

    def start(self, timeout: float = 60.0) -> int:
        pid = self._pid()
        if pid and self.healthy():
            return pid
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        self.pid_file.parent.mkdir(parents=True, exist_ok=True)
        g = self.settings.gateway
        cmd = [sys.executable, "-m", "uvicorn", "--factory", "serving.gateway:app_factory",
               "--host", g.host, "--port", str(g.port), "--workers", str(g.workers), "--no-access-log"]
        env = child_environment(self.settings, self.pid_file.parent / "settings.yaml")
        with open(self.log_file, "ab") as log:
            proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True,
                                    cwd=str(self.settings.home))
        self.pid_file.write_text(json.dumps({"pid": proc.pid, "url": self.url}))
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"gateway exited with code {proc.returncode}; last log lines:\n{self.log_tail()}")
            if self.healthy():
                return proc.pid
            time.sleep(0.2)
        raise RuntimeError(f"gateway did not answer /healthz within {timeout:.0f}s; see {self.log_file}")

    def stop(self, timeout: float = 15.0) -> bool:
        pid = self._pid()
        if pid is None:
            self.pid_file.unlink(missing_ok=True)
            return False
        terminate_group(pid, timeout)
        self.pid_file.unlink(missing_ok=True)
        return True

    def log_tail(self, lines: int = 30) -> str:
        return log_tail(self.log_file, lines)

    def status(self) -> dict[str, Any]:
        return {"pid": self._pid(), "url": self.url, "healthy": self.healthy(), "log": str(self.log_file)}


def triton(settings: Settings):
    from serving.triton_launcher import LocalTriton

    return LocalTriton(settings)


def stack_up(settings: Settings, models: list[str] | None = None, supervise: bool = True) -> dict[str, Any]:
    from streaming.broker import broker_up
    from streaming.redis_server import redis_up

    broker_up(settings)  # before the gateway, which publishes exposures to it
    redis_up(settings)  # the online store, when feast.online_store is a local Redis
    tri = triton(settings)
    tri.start(wait=True)
    for name in models or [settings.gateway.model_name]:
        tri.wait_model_ready(name, timeout=settings.triton.startup_timeout_s)
    gw = GatewayProcess(settings)
    gw.start()
    if supervise:
        from recast.supervisor import Supervisor

        Supervisor(settings).start()
    return stack_status(settings)


def stack_down(settings: Settings) -> dict[str, bool]:
    from recast.supervisor import Supervisor
    from streaming.broker import broker_down
    from streaming.redis_server import redis_down

    supervisor = Supervisor(settings).stop()  # first: it would restart what stops next
    return {"supervisor": supervisor, "gateway": GatewayProcess(settings).stop(), "triton": triton(settings).stop(),
            "broker": broker_down(settings), "redis": redis_down(settings)}


def model_health(settings: Settings, tri=None) -> dict[str, Any]:
    """Each model of the local repository: healthy, problems, and Triton's own states and reasons."""
    from serving.readiness import ModelFiles, assess

    tri = tri or triton(settings)
    files = ModelFiles(settings.path(settings.export.local_model_repository))
    index = tri.repository_index() if tri.is_live() else None
    out = {}
    for name, latest in files.latest_versions().items():
        problems = assess(name, index is not None and tri.model_ready(name), index, latest, files.problems(name, latest))
        out[name] = {"healthy": not problems, "latest_version": latest, "problems": problems,
                     "triton": [e for e in index or [] if e.get("name") == name]}
    return out


def stack_status(settings: Settings) -> dict[str, Any]:
    from recast.supervisor import Supervisor
    from streaming.broker import broker_status
    from streaming.redis_server import redis_status

    tri = triton(settings)
    return {"triton": tri.status(), "models": model_health(settings, tri), "gateway": GatewayProcess(settings).status(),
            "broker": broker_status(settings), "redis": redis_status(settings), "supervisor": Supervisor(settings).status()}
