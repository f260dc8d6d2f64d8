"""`recast stream reset`: the group's state and the offline parts it recorded go together."""

from __future__ import annotations

import argparse
import json

from features.feast_repo import stream_offline_dirs
from recast.settings import Settings
from streaming.cli import cmd_reset
from streaming.state import StateStore, state_path


def test_reset_removes_the_groups_state_and_offline_parts_and_nothing_else(tmp_path, capsys) -> None:
    s = Settings(home=tmp_path)
    group = s.stream.consumer_group
    store = StateStore(state_path(s, group))
    store.close()
    user_dir, item_dir = stream_offline_dirs(s)
    user_dir.mkdir(parents=True)
    item_dir.mkdir(parents=True)
    ours = [user_dir / f"{group}-0-1.parquet", item_dir / f"{group}-0-1.parquet", user_dir / f".{group}-2.partial"]
    other = user_dir / "another-group-0-1.parquet"
    for p in [*ours, other]:
        p.write_bytes(b"x")

    cmd_reset(argparse.Namespace(group=None), s)

    out = json.loads(capsys.readouterr().out)
    assert out["offline_parts"] == 3 and str(state_path(s, group)) in out["removed"]
    assert not state_path(s, group).exists() and not any(p.exists() for p in ours)
    assert other.exists()
