"""The chart's offline batch jobs (helm/recast/templates/jobs.yaml): an Indexed Job per enabled
job (one index per sweep cell), a CronJob of such Jobs when a schedule is set; the container
arguments parse with the real `recast` CLI and name a registered job. Kubernetes schema
validation of the same renders is in test_chart.py (value set jobs-indexed-and-cron)."""

from __future__ import annotations

import re

import pytest
from chart_render import by_kind, docs, render

from jobs.base import get_job
from recast.cli import build_parser


def _container(pod_spec: dict) -> dict:
    (container,) = pod_spec["containers"]
    return container


def _expand(args: list[str], env: dict[str, str]) -> list[str]:
    return [re.sub(r"\$\((\w+)\)", lambda m: env[m.group(1)], a) for a in args]


def test_indexed_job_per_sweep_and_cronjob_with_schedule() -> None:
    manifests = docs("jobs-indexed-and-cron")
    jobs = {n: d for n, d in by_kind(manifests, "Job").items() if "-job-" in n}
    crons = {n: d for n, d in by_kind(manifests, "CronJob").items() if "-job-" in n}
    assert list(jobs) == ["recast-job-lightsam"] and list(crons) == ["recast-job-nightly"]

    spec = jobs["recast-job-lightsam"]["spec"]
    assert spec["completionMode"] == "Indexed" and spec["completions"] == 12 and spec["parallelism"] == 3
    container = _container(spec["template"]["spec"])
    env = {e["name"]: e for e in container["env"]}
    assert env["JOB_COMPLETION_INDEX"]["valueFrom"]["fieldRef"]["fieldPath"] == \
        "metadata.annotations['batch.kubernetes.io/job-completion-index']"
    assert env["JOB_RUN_ID"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.labels['batch.kubernetes.io/job-name']"
    assert env["RECAST_JOBS__PUSHGATEWAY_URL"]["value"] == "http://pushgateway.monitoring:9091"
    # the pods share the run directory: the shared volume is mounted read-write at home
    mounts = {m["name"]: m for m in container["volumeMounts"]}
    assert mounts["shared"]["mountPath"] == "/var/lib/recast" and not mounts["shared"].get("readOnly")

    args = _expand(container["args"], {"JOB_RUN_ID": "recast-job-lightsam", "JOB_COMPLETION_INDEX": "7"})
    parsed = build_parser().parse_args(args)
    assert (parsed.jobs_command, parsed.name, parsed.preset, parsed.run_id, parsed.cell_index, parsed.set) == \
        ("run", "lightsam", "full", "recast-job-lightsam", 7, ["seeds=1"])
    assert get_job(parsed.name).name == "lightsam"

    cron = crons["recast-job-nightly"]["spec"]
    assert cron["schedule"] == "0 2 * * *"
    template = cron["jobTemplate"]["spec"]
    assert template["completionMode"] == "Indexed" and template["completions"] == 4
    cron_args = _container(template["template"]["spec"])["args"]
    assert cron_args[:5] == ["jobs", "run", "nightly", "--preset", "tiny"]


def test_jobs_are_off_by_default_and_cells_are_required() -> None:
    assert not [d for d in docs("defaults") if "-job-" in d["metadata"]["name"]]
    with pytest.raises(Exception, match="cells"):
        render({"jobs": {"lightsam": {"enabled": True, "cells": None}}})
