"""The chart's continuous-training CronJob (helm/recast/templates/loop.yaml): off by default; when on, its
container arguments parse with the real `recast` CLI as a `recast loop` run, on the training image, with the
shared volume (labels, checkpoints, model repository, the loop's registry) mounted read-write. Kubernetes
schema validation and lint of the same render are in test_chart.py (value set loop-cron)."""

from __future__ import annotations

import yaml
from chart_render import by_kind, docs, render

from recast.cli import build_parser, cmd_loop


def test_loop_cronjob_runs_recast_loop() -> None:
    crons = by_kind(docs("loop-cron"), "CronJob")
    cron = crons["recast-loop"]["spec"]
    assert cron["schedule"] == "15 */6 * * *" and cron["concurrencyPolicy"] == "Forbid"
    pod = cron["jobTemplate"]["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert "train" in container["image"]
    parsed = build_parser().parse_args(container["args"])
    assert parsed.func is cmd_loop and parsed.rollout == "simulate" and parsed.from_scratch
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["OMP_NUM_THREADS"] == "2"
    mounts = {m["name"]: m for m in container["volumeMounts"]}
    assert mounts["shared"]["mountPath"] == "/var/lib/recast" and not mounts["shared"].get("readOnly")
    (check,) = pod["initContainers"]  # the consistency check runs first, its gauges go to the Pushgateway
    parsed = build_parser().parse_args(check["args"])
    assert parsed.func is cmd_loop and parsed.check_consistency
    env = {e["name"]: e.get("value") for e in check["env"]}
    assert env["RECAST_JOBS__PUSHGATEWAY_URL"] == "http://pushgateway.monitoring:9091"


def test_loop_is_off_by_default_and_registers_without_traffic_when_on() -> None:
    assert "recast-loop" not in by_kind(docs("defaults"), "CronJob")
    rendered = [d for text in render({"loop": {"enabled": True}}).values() for d in yaml.safe_load_all(text) if d]
    (container,) = by_kind(rendered, "CronJob")["recast-loop"]["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"]
    parsed = build_parser().parse_args(container["args"])
    assert parsed.rollout == "none" and not parsed.from_scratch  # a candidate, no simulated decision in production
