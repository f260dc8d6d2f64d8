"""Background processes of the local stack (gateway, broker, tritonserver).

The three launchers share these few rules, so they live in one place: a
process counts as alive only while it really runs (an exited child of this
process is a zombie that ``kill(pid, 0)`` still reports, so it is reaped
here), and stopping is SIGTERM, a grace period, then SIGKILL of the whole
process group.
"""

from __future__ import annotations

import os
import signal
import socket
import time
from pathlib import Path


def port_open(host: str, port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def pid_alive(pid: int) -> bool:
    """True while ``pid`` runs; exited children are reaped, zombies count as dead."""
    try:
        if os.waitpid(pid, os.WNOHANG)[0] == pid:
            return False
    except ChildProcessError:  # not our child (started by an earlier CLI call)
        pass
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def live_group_members(pgid: int) -> list[int]:
    """Pids of the running (not zombie) processes in process group ``pgid``.

    A killed group's members linger as zombies until their parent (often PID 1) reaps them;
    they are dead, so "is anything of that group still running" must not count them."""
    live = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            live.append(int(entry.name))
    return live


def terminate_group(pid: int, timeout: float, poll_s: float = 0.05) -> None:
    """SIGTERM to the process group of ``pid``; SIGKILL to it if ``pid`` outlives ``timeout``."""
    try:
        os.killpg(pid, signal.SIGTERM)
    except OSError:
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not pid_alive(pid):
            return
        time.sleep(poll_s)
    try:
        os.killpg(pid, signal.SIGKILL)
    except OSError:
        pass


def log_tail(path: Path, lines: int = 30) -> str:
    """The last lines of a log file, or a note that there is none."""
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return f"(no log at {path})"
