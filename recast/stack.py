"""The local stack: the Kafka-protocol broker (Tansu, memory-only), a real
tritonserver and the scoring gateway, as background processes with pid files,
logs and health checks (``recast stack up|down|status``).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
from typing import Any

from recast.processes import log_tail, pid_alive, terminate_group
from recast.settings import Settings


class GatewayProcess:
    """uvicorn running serving.gateway in the background of this machine."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        logs = settings.path(settings.triton.log_dir)
        self.log_file = logs / "gateway.log"
        self.pid_file = logs.parent / "gateway" / "gateway.pid"
        g = settings.gateway
        self.url = f"http://{g.host}:{g.port}"

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
        # the child sees exactly these settings (ports, paths), whatever its cwd and env
        config = self.pid_file.parent / "settings.yaml"
        config.write_text(json.dumps(self.settings.model_dump(mode="json")))
        env = {k: v for k, v in os.environ.items() if not k.startswith("RECAST_")}
        env["RECAST_CONFIG"] = str(config)
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


def stack_up(settings: Settings, models: list[str] | None = None) -> dict[str, Any]:
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
    return stack_status(settings)


def stack_down(settings: Settings) -> dict[str, bool]:
    from streaming.broker import broker_down
    from streaming.redis_server import redis_down

    return {"gateway": GatewayProcess(settings).stop(), "triton": triton(settings).stop(),
            "broker": broker_down(settings), "redis": redis_down(settings)}


def stack_status(settings: Settings) -> dict[str, Any]:
    from streaming.broker import broker_status
    from streaming.redis_server import redis_status

    return {"triton": triton(settings).status(), "gateway": GatewayProcess(settings).status(),
            "broker": broker_status(settings), "redis": redis_status(settings)}
