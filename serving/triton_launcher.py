"""Start, stop and query the local ``tritonserver`` (``recast stack up/down/status``).

The server is the real Triton 2.51 binary shipped inside the ``nvidia-pytriton``
wheel of the isolated Triton venv (``TritonSettings.venv``). It serves the
*local* model repository (Python backend running onnxruntime) and polls it, so
a newly exported version is picked up without a restart.

Traps this module handles, so that callers do not have to:

* The Python-backend stub runs an isolated, embedded interpreter that ignores
  ``PYTHONPATH`` and locates its prefix by searching ``python3`` on ``PATH``.
  If that finds a Python whose site-packages hold numpy 2, the stub answers
  with empty outputs. The Triton venv's ``bin/`` therefore goes first on
  ``PATH``, which makes the stub adopt that venv (numpy<2).
* The stub links ``libpython3.11.so.1.0``; a system copy of that library
  does not match a pyenv/venv interpreter (model load fails with
  ``'_thread.RLock' object has no attribute '_recursion_count'``), so the
  Triton venv's ``LIBDIR`` goes first on ``LD_LIBRARY_PATH``.
* The wheel has no stub inside ``backends/python``; a backend directory with
  the stub is assembled under ``artifacts/triton/`` (the venv is untouched).
  The copied libraries lose their relative RPATH, so the wheel's
  ``nvidia_pytriton.libs`` goes on ``LD_LIBRARY_PATH`` too.
* Default ports 8000-8002 collide with other software: ports come from
  settings and are checked before launch.

State lives in a pid file, so ``start()`` in one process and ``stop()`` or
``status()`` in a later CLI invocation work on the same server.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from recast.processes import pid_alive, port_open
from recast.settings import Settings, get_settings


# Messages a CPU-only host always logs; they hide the real error when quoted.
_HARMLESS = ("CudaDriverHelper", "NVML", "DCGM", "pinned memory", "CUDA driver")


class TritonLaunchError(RuntimeError):
    """tritonserver could not be found, started or reached."""


@dataclass(frozen=True)
class TritonInstall:
    """Where the pieces of the Triton install live inside the Triton venv."""

    python: Path
    bin_dir: Path
    tritonserver: Path
    backends: Path
    stub: Path
    wheel_libs: Path
    libpython_dir: Path
    site_packages: Path


def find_triton_install(venv: Path) -> TritonInstall:
    """Locate tritonserver, its backends and stub, and libpython via the venv's Python."""
    python = venv / "bin" / "python"
    if not python.exists():
        raise TritonLaunchError(
            f"Triton venv {venv} has no bin/python. Create it with `make install` "
            "(numpy<2, onnxruntime, nvidia-pytriton from serving/triton_requirements.txt) "
            "or point RECAST_TRITON__VENV at an existing one."
        )
    probe = (
        "import importlib.util, json, sys, sysconfig\n"
        "spec = importlib.util.find_spec('pytriton')\n"
        "print(json.dumps({'libdir': sysconfig.get_config_var('LIBDIR'),"
        " 'purelib': sysconfig.get_paths()['purelib'],"
        " 'version': f'{sys.version_info[0]}.{sys.version_info[1]}',"
        " 'pytriton': list(spec.submodule_search_locations) if spec else None}))"
    )
    try:
        out = subprocess.run(
            [str(python), "-c", probe], capture_output=True, text=True, timeout=60, check=True
        ).stdout
    except (subprocess.SubprocessError, OSError) as exc:
        raise TritonLaunchError(f"cannot run {python} to inspect the Triton venv: {exc}") from exc
    info = json.loads(out.strip().splitlines()[-1])
    if not info["pytriton"]:
        raise TritonLaunchError(
            f"nvidia-pytriton is not installed in {venv}; run "
            f"`{python} -m pip install -r serving/triton_requirements.txt` (or `make install`)."
        )
    root = Path(info["pytriton"][0]) / "tritonserver"
    install = TritonInstall(
        python=python,
        bin_dir=venv / "bin",
        tritonserver=root / "bin" / "tritonserver",
        backends=root / "backends",
        stub=root / "python_backend_stubs" / info["version"] / "triton_python_backend_stub",
        wheel_libs=root.parent.parent / "nvidia_pytriton.libs",
        libpython_dir=Path(info["libdir"]),
        site_packages=Path(info["purelib"]),
    )
    for path in (install.tritonserver, install.backends / "python", install.stub):
        if not path.exists():
            raise TritonLaunchError(
                f"{path} is missing from the nvidia-pytriton install in {venv}; "
                "reinstall nvidia-pytriton==0.7.0 there."
            )
    return install


def _read_lines(path: Path) -> list[str]:
    try:
        return path.read_text(errors="replace").splitlines()
    except OSError:
        return []


def _is_tritonserver(pid: int) -> bool:
    try:
        return b"tritonserver" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


class LocalTriton:
    """One local tritonserver serving the local model repository.

    ``poll_interval_s`` is how often Triton rescans the repository for new or
    removed versions (``--model-control-mode=poll``).
    """

    def __init__(
        self,
        settings: Settings | None = None,
        model_repository: Path | None = None,
        poll_interval_s: int = 2,
    ) -> None:
        self.settings = settings or get_settings()
        t = self.settings.triton
        self.host = t.host
        self.ports = {"http": t.http_port, "grpc": t.grpc_port, "metrics": t.metrics_port}
        self.venv = self.settings.path(t.venv).absolute()
        self.model_repository = Path(
            model_repository or self.settings.path(self.settings.export.local_model_repository)
        ).absolute()
        self.log_dir = self.settings.path(t.log_dir).absolute()
        self.log_file = self.log_dir / "tritonserver.log"
        self.run_dir = self.log_dir.parent / "triton"
        self.pid_file = self.run_dir / "tritonserver.pid"
        self.startup_timeout_s = t.startup_timeout_s
        self.client_timeout_s = t.client_timeout_s
        self.poll_interval_s = max(1, int(poll_interval_s))
        self._proc: subprocess.Popen | None = None

    # -- HTTP helpers ---------------------------------------------------------------
    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.ports['http']}"

    def _request(self, path: str, body: dict | None = None, timeout: float | None = None):
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.url + path, data=data, method="POST" if data else "GET")
        try:
            with urllib.request.urlopen(req, timeout=timeout or self.client_timeout_s) as resp:
                raw = resp.read()
                return resp.status, (json.loads(raw) if raw else None)
        except urllib.error.HTTPError as exc:
            return exc.code, None
        except (urllib.error.URLError, OSError):
            return None, None

    def is_live(self) -> bool:
        """The server answers (even when a model failed to load, which makes it not ready)."""
        return self._request("/v2/health/live", timeout=2.0)[0] == 200

    def is_ready(self) -> bool:
        return self._request("/v2/health/ready", timeout=2.0)[0] == 200

    def model_ready(self, name: str, version: int | None = None) -> bool:
        path = f"/v2/models/{name}" + (f"/versions/{version}" if version is not None else "")
        return self._request(path + "/ready", timeout=2.0)[0] == 200

    def wait_model_ready(self, name: str, timeout: float = 60.0, version: int | None = None) -> None:
        """Block until the model (version) is ready; Triton picks new versions up on its next poll."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.model_ready(name, version):
                return
            self._raise_if_died("while waiting for model " + name)
            time.sleep(0.2)
        label = name if version is None else f"{name} version {version}"
        raise TritonLaunchError(
            f"model {label} not ready after {timeout:.0f}s "
            f"(repository {self.model_repository}: {self.repository_index()}).\n{self._explain()}"
        )

    def repository_index(self) -> list[dict[str, Any]]:
        """Models Triton knows about, with version and state (READY, UNAVAILABLE, ...)."""
        status, body = self._request("/v2/repository/index", body={})
        return body if status == 200 and isinstance(body, list) else []

    # -- process state --------------------------------------------------------------
    def _read_pid(self) -> dict[str, Any] | None:
        try:
            info = json.loads(self.pid_file.read_text())
        except (OSError, ValueError):
            return None
        pid = int(info.get("pid", 0))
        if pid > 0 and pid_alive(pid) and _is_tritonserver(pid):
            return info
        if pid > 0 and not pid_alive(pid):
            # A crashed server (SIGSEGV, kill -9) leaves its Python-backend stubs running in its
            # process group (they ignore SIGTERM); the group id stays reserved while they live.
            try:
                os.killpg(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        self.pid_file.unlink(missing_ok=True)  # stale: that server is gone
        return None

    def pid(self) -> int | None:
        info = self._read_pid()
        return int(info["pid"]) if info else None

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(_read_lines(self.log_file)[-lines:]) or f"(no log at {self.log_file})"

    def log_problems(self, limit: int = 12) -> str:
        """Error lines of the current log, without the harmless CPU-only GPU noise."""
        picked = [
            line[:600] for line in _read_lines(self.log_file)
            if (line.startswith("E") or "UNAVAILABLE" in line or line.startswith("error:"))
            and not any(noise in line for noise in _HARMLESS)
        ]
        return "\n".join(picked[-limit:])

    def _explain(self) -> str:
        problems = self.log_problems()
        head = f"Errors in {self.log_file}:\n{problems}\n" if problems else ""
        return f"{head}Last lines of {self.log_file}:\n{self.log_tail(15)}"

    def _raise_if_died(self, when: str) -> None:
        if self._proc is not None and self._proc.poll() is not None:
            code = self._proc.returncode
            self._proc = None
            self.pid_file.unlink(missing_ok=True)
            raise TritonLaunchError(
                f"tritonserver exited with code {code} {when}.\n{self._explain()}"
            )

    def status(self) -> dict[str, Any]:
        info = self._read_pid()
        ready = bool(info) and self.is_ready()
        return {
            "running": info is not None,
            "pid": info["pid"] if info else None,
            "ready": ready,
            "url": self.url,
            "ports": dict(self.ports),
            "model_repository": str(self.model_repository),
            "log_file": str(self.log_file),
            "models": self.repository_index() if ready else [],
        }

    # -- start / stop ---------------------------------------------------------------
    def _prepare_backends(self, install: TritonInstall) -> Path:
        """Assemble ``backends/python`` with the stub, leaving the venv untouched."""
        target = self.run_dir / "backends" / "python"
        target.mkdir(parents=True, exist_ok=True)
        sources = [p for p in (install.backends / "python").iterdir() if p.is_file()]
        for src in [*sources, install.stub]:
            dst = target / src.name
            st = src.stat()
            if dst.exists() and dst.stat().st_size == st.st_size and dst.stat().st_mtime >= st.st_mtime:
                continue
            tmp = target / f".{src.name}.tmp"
            shutil.copy2(src, tmp)
            os.replace(tmp, dst)  # a running server keeps the old inode
        return target.parent

    def _environment(self, install: TritonInstall) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
        env["PATH"] = os.pathsep.join([str(install.bin_dir), env.get("PATH", "/usr/bin:/bin")])
        lib_path = [str(install.libpython_dir), str(install.wheel_libs)]
        if env.get("LD_LIBRARY_PATH"):
            lib_path.append(env["LD_LIBRARY_PATH"])
        env["LD_LIBRARY_PATH"] = os.pathsep.join(lib_path)
        env.setdefault("OMP_WAIT_POLICY", "PASSIVE")
        return env

    def command(self, install: TritonInstall, backend_dir: Path) -> list[str]:
        return [
            str(install.tritonserver),
            f"--model-repository={self.model_repository}", f"--backend-directory={backend_dir}",
            "--model-control-mode=poll", f"--repository-poll-secs={self.poll_interval_s}",
            f"--http-address={self.host}", f"--http-port={self.ports['http']}",
            f"--grpc-address={self.host}", f"--grpc-port={self.ports['grpc']}",
            f"--metrics-address={self.host}", f"--metrics-port={self.ports['metrics']}",
            "--allow-gpu-metrics=false", "--pinned-memory-pool-byte-size=0",
            "--exit-timeout-secs=10", "--log-verbose=0",
        ]

    def start(self, wait: bool = True) -> int:
        """Start tritonserver (no-op if ours is already running); returns its pid.

        With ``wait`` it blocks until ``/v2/health/ready`` answers 200, which
        with strict readiness means every model in the repository loaded.
        """
        info = self._read_pid()
        if info is not None:
            pid = int(info["pid"])
            if wait and not self.is_ready():
                self._wait_ready(pid)
            return pid

        busy = [f"{k} {self.host}:{p}" for k, p in self.ports.items() if port_open(self.host, p, timeout=0.3)]
        if busy:
            raise TritonLaunchError(
                f"cannot start tritonserver: port(s) {', '.join(busy)} already in use by another "
                "process. Stop it, or pick free ports with RECAST_TRITON__HTTP_PORT / "
                "RECAST_TRITON__GRPC_PORT / RECAST_TRITON__METRICS_PORT."
            )
        if not self.model_repository.is_dir():
            raise TritonLaunchError(
                f"model repository {self.model_repository} does not exist: run `recast export` first."
            )
        install = find_triton_install(self.venv)
        backend_dir = self._prepare_backends(install)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        if self.log_file.exists():
            os.replace(self.log_file, self.log_file.with_suffix(".log.1"))
        cmd = self.command(install, backend_dir)
        with open(self.log_file, "wb") as log:
            log.write(("# " + " ".join(cmd) + "\n").encode())
            log.flush()
            self._proc = subprocess.Popen(
                cmd,
                env=self._environment(install),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.run_dir,
                start_new_session=True,  # outlives the CLI; its process group holds the stubs
            )
        pid = self._proc.pid
        self.pid_file.write_text(json.dumps({
            "pid": pid, "ports": self.ports, "host": self.host,
            "model_repository": str(self.model_repository), "started_at": time.time(),
        }))
        if wait:
            self._wait_ready(pid)
        return pid

    def wait_ready(self, timeout: float | None = None) -> None:
        """Block until a started server answers ready (after ``start(wait=False)``)."""
        pid = self.pid()
        if pid is None:
            raise TritonLaunchError(f"no tritonserver running for {self.pid_file}; run `recast stack up`")
        self._wait_ready(pid, timeout, stop_on_timeout=False)

    def _wait_ready(self, pid: int, timeout: float | None = None, stop_on_timeout: bool = True) -> None:
        timeout = self.startup_timeout_s if timeout is None else timeout
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.is_ready():
                return
            self._raise_if_died("during startup")
            if self._proc is None and not pid_alive(pid):
                self.pid_file.unlink(missing_ok=True)
                raise TritonLaunchError(
                    f"tritonserver (pid {pid}) exited during startup.\n{self._explain()}"
                )
            time.sleep(0.2)
        explanation = self._explain()
        if stop_on_timeout:
            self.stop()
        raise TritonLaunchError(
            f"tritonserver was not ready at {self.url}/v2/health/ready after {timeout:.0f}s"
            f"{' and was stopped' if stop_on_timeout else ''} (raise "
            f"RECAST_TRITON__STARTUP_TIMEOUT_S if it is just slow).\n{explanation}"
        )

    def stop(self, timeout: float = 20.0) -> bool:
        """SIGTERM, then SIGKILL of the process group after ``timeout``; True if one was running."""
        info = self._read_pid()
        if info is None:
            self._proc = None
            return False
        pid = int(info["pid"])
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self._alive(pid):
            time.sleep(0.1)
        if self._alive(pid):
            try:
                os.killpg(pid, signal.SIGKILL)  # also ends stubs left behind
            except (ProcessLookupError, PermissionError):
                pass
            while self._alive(pid):
                time.sleep(0.05)
        self._proc = None
        self.pid_file.unlink(missing_ok=True)
        return True

    def _alive(self, pid: int) -> bool:
        if self._proc is not None and self._proc.pid == pid:
            return self._proc.poll() is None  # reaps our own child
        return pid_alive(pid)
