"""The stack supervisor's restart policy (backoff, counts, events) on stand-in parts.

The real processes are supervised in tests/integration/test_spine.py (tritonserver
killed with SIGKILL under load); here only the policy is checked, with a clock the
test controls.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from recast import supervisor as sup
from recast.settings import Settings


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture()
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    c = Clock()
    monkeypatch.setattr(sup.time, "monotonic", c)
    return c


def test_a_dead_part_is_restarted_with_growing_backoff(tmp_path: Path, clock: Clock) -> None:
    alive = {"v": False}
    attempts: list[float] = []

    def restart() -> None:
        attempts.append(clock.now)
        if len(attempts) < 3:
            raise RuntimeError("port still taken")
        alive["v"] = True

    part = sup.Part("triton", lambda: alive["v"], restart)
    s = sup.Supervisor(Settings(home=tmp_path))
    s.dir.mkdir(parents=True)
    events: list[dict] = []
    for _ in range(40):  # 0.5 s steps
        s._check(part, events)
        clock.now += 0.5
    assert [a - attempts[0] for a in attempts] == [0.0, 1.0, 3.0]  # 1 s, then 2 s between tries
    assert part.restarts == 1 and part.failures == 2
    assert [e["event"] for e in events] == ["restart_failed", "restart_failed", "restarted"]
    s._save([part], events)
    state = json.loads(s.state_file.read_text())
    assert state["restarts"] == {"triton": 1} and state["failed_restarts"] == {"triton": 2}
    assert s.status()["restarts"] == {"triton": 1}


def test_backoff_resets_after_a_part_stayed_up(tmp_path: Path, clock: Clock) -> None:
    part = sup.Part("gateway", lambda: True, lambda: None, delay=16.0)
    part.up_since = clock.now
    s = sup.Supervisor(Settings(home=tmp_path))
    clock.now += sup.STABLE_S + 1
    s._check(part, [])
    assert part.delay == sup.MIN_DELAY_S and part.restarts == 0


def test_backoff_is_capped(tmp_path: Path, clock: Clock) -> None:
    def fail() -> None:
        raise RuntimeError("broken model crashes the server")

    part = sup.Part("triton", lambda: False, fail)
    s = sup.Supervisor(Settings(home=tmp_path))
    for _ in range(400):
        s._check(part, [])
        clock.now += 1.0
    assert part.delay == sup.MAX_DELAY_S
    assert part.failures < 25  # 400 s of a permanently broken part: a few tries, not one per second
