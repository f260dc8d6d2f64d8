"""Supervision of the local stack: restart a crashed broker, tritonserver or gateway.

``recast stack up`` starts one supervisor process (``python -m recast.supervisor``,
pid file and log under ``artifacts/supervisor``). Once a second it checks that
each part still runs; a part that died (a SIGSEGV in Triton's Python backend,
an OOM kill, ``kill -9``) is started again without anyone typing a command.

* **Backoff:** a part that keeps dying is retried after 1, 2, 4 ... 30 s, so a
  broken part (a model that crashes the server at load) does not spin; the
  delay resets once the part has stayed up for a minute.
* **Counted and logged:** every restart and every failed attempt goes to
  ``artifacts/logs/supervisor.log`` and to the state file that
  ``recast stack status`` shows (restarts per part, the last events).
* ``recast stack down`` stops the supervisor before the parts, so nothing is
  restarted behind it. To stop one part by hand, stop the stack (or the
  supervisor) first.

The parts are restarted with the same launchers ``stack up`` uses; Triton is
started without waiting for its models, so a slow load never blocks the
supervision of the other parts (the gateway answers 503 meanwhile).
"""

from __future__ import annotations

import json
import logging
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from recast.processes import pid_alive, terminate_group
from recast.settings import Settings, get_settings

log = logging.getLogger("recast.supervisor")

MIN_DELAY_S, MAX_DELAY_S, STABLE_S = 1.0, 30.0, 60.0


@dataclass
class Part:
    """One supervised process: how to tell it runs and how to start it again."""

    name: str
    alive: Callable[[], bool]
    restart: Callable[[], Any]
    pid_file: Path | None = None
    restarts: int = 0
    failures: int = 0
    delay: float = MIN_DELAY_S
    next_try: float = 0.0
    up_since: float = field(default_factory=time.monotonic)


def parts(settings: Settings) -> list[Part]:
    from recast.stack import GatewayProcess, triton
    from streaming.broker import LocalBroker, broker_up

    out = []
    if settings.kafka.local_broker:
        broker = LocalBroker(settings)
        out.append(Part("broker", broker.healthy, lambda: broker_up(settings), broker.pid_file))
    tri = triton(settings)
    out.append(Part("triton", lambda: tri.pid() is not None, lambda: tri.start(wait=False), tri.pid_file))
    gw = GatewayProcess(settings)
    out.append(Part("gateway", lambda: gw.pid() is not None, gw.start, gw.pid_file))
    return out


def _pid_note(path: Path | None) -> str:
    try:
        return f"pid file {path}: {path.read_text().strip()[:200]}" if path else "no pid file"
    except OSError:
        return f"no pid file at {path}"


class Supervisor:
    """The supervisor process of one stack home: start, stop, status, and the loop itself."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        logs = settings.path(settings.triton.log_dir)
        self.dir = logs.parent / "supervisor"
        self.pid_file = self.dir / "supervisor.pid"
        self.state_file = self.dir / "state.json"
        self.log_file = logs / "supervisor.log"
        self._stop = False

    def pid(self) -> int | None:
        try:
            pid = int(json.loads(self.pid_file.read_text())["pid"])
        except (OSError, ValueError, KeyError):
            return None
        return pid if pid_alive(pid) else None

    def start(self) -> int:
        from recast.stack import child_environment

        pid = self.pid()
        if pid is not None:
            return pid
        env = child_environment(self.settings, self.dir / "settings.yaml")
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_file, "ab") as out:
            proc = subprocess.Popen([sys.executable, "-m", "recast.supervisor"], stdout=out, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, env=env, cwd=str(self.settings.home),
                                    start_new_session=True)
        self.pid_file.write_text(json.dumps({"pid": proc.pid}))
        return proc.pid

    def stop(self, timeout: float = 10.0) -> bool:
        pid = self.pid()
        self.pid_file.unlink(missing_ok=True)
        if pid is None:
            return False
        terminate_group(pid, timeout)
        return True

    def status(self) -> dict[str, Any]:
        try:
            state = json.loads(self.state_file.read_text())
        except (OSError, ValueError):
            state = {}
        return {"pid": self.pid(), "restarts": state.get("restarts", {}), "events": state.get("events", [])[-5:],
                "log": str(self.log_file)}

    # ------------------------------------------------------------------ the loop (in the supervisor process)
    def run(self, interval_s: float = 1.0) -> None:
        signal.signal(signal.SIGTERM, lambda *_: setattr(self, "_stop", True))
        supervised = parts(self.settings)
        events: list[dict[str, Any]] = []
        log.info("supervising %s", ", ".join(p.name for p in supervised))
        while not self._stop:
            for part in supervised:
                if self._stop:
                    break
                self._check(part, events)
            self._save(supervised, events)
            time.sleep(interval_s)
        log.info("supervisor stopped")

    def _check(self, part: Part, events: list[dict[str, Any]]) -> None:
        now = time.monotonic()
        note = _pid_note(part.pid_file)  # before alive(), which removes a stale pid file
        if part.alive():
            if now - part.up_since > STABLE_S:
                part.delay = MIN_DELAY_S
            return
        if now < part.next_try:
            return
        log.warning("%s is not running (%s): restarting it (restart %d)", part.name, note, part.restarts + 1)
        try:
            part.restart()
        except Exception as exc:  # noqa: BLE001 - a failed restart is retried after the backoff
            part.failures += 1
            log.error("restarting %s failed (next try in %.0f s): %s", part.name, part.delay, exc)
            events.append({"part": part.name, "at": time.time(), "event": "restart_failed", "error": str(exc)[:500]})
        else:
            part.restarts += 1
            part.up_since = time.monotonic()
            log.warning("%s restarted", part.name)
            events.append({"part": part.name, "at": time.time(), "event": "restarted"})
        part.next_try = time.monotonic() + part.delay
        part.delay = min(part.delay * 2, MAX_DELAY_S)

    def _save(self, supervised: list[Part], events: list[dict[str, Any]]) -> None:
        del events[:-50]
        state = {"restarts": {p.name: p.restarts for p in supervised},
                 "failed_restarts": {p.name: p.failures for p in supervised}, "events": events}
        tmp = self.state_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(state))
        tmp.replace(self.state_file)


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    Supervisor(get_settings()).run()


if __name__ == "__main__":
    main()
