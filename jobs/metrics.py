"""Metrics of a batch run: every value goes to run_dir/metrics.jsonl, and, when a Pushgateway
is configured, to the Pushgateway at the end of the run (the Prometheus convention for batch
jobs, which live too briefly to be scraped).

Pushed series: ``recast_job_<metric>{labels}`` for each recorded metric (last value per label
set), plus ``recast_job_status{status=...}`` (1 for the run's final status),
``recast_job_duration_seconds`` and ``recast_job_last_success_timestamp_seconds`` (only after a
successful run, so alerts can watch its age). The grouping key is job=recast_jobs_<name>,
run_id, and the cell index in cluster cell mode (pods of one sweep must not overwrite each other).
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

STATUSES = ("succeeded", "failed", "cancelled", "cell-stored")


def metric_name(name: str) -> str:
    clean = re.sub(r"[^a-zA-Z0-9_]", "_", name)
    return f"recast_job_{clean}"


class MetricsRecorder:
    def __init__(self, path: Path, job: str, run_id: str, pushgateway_url: str | None = None,
                 cell_index: int | None = None, timeout_s: float = 10.0) -> None:
        self.path = path
        self.job = job
        self.run_id = run_id
        self.pushgateway_url = pushgateway_url or None
        self.cell_index = cell_index
        self.timeout_s = timeout_s
        self.values: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}

    def record(self, name: str, value: float, labels: dict[str, str]) -> None:
        self.values[(name, tuple(sorted(labels.items())))] = value
        with open(self.path, "a") as fh:
            fh.write(json.dumps({"t": round(time.time(), 3), "name": name, "value": value, "labels": labels}) + "\n")

    def grouping_key(self) -> dict[str, str]:
        key = {"run_id": self.run_id}
        if self.cell_index is not None:
            key["cell"] = str(self.cell_index)
        return key

    def push(self, status: str, seconds: float) -> str | None:
        """Push everything; returns an error message instead of raising (a monitoring outage
        must not fail a finished experiment), or None when pushed or nothing is configured."""
        if not self.pushgateway_url:
            return None
        from prometheus_client import CollectorRegistry, Gauge, push_to_gateway

        registry = CollectorRegistry()
        gauges: dict[str, Gauge] = {}
        for (name, labels), value in self.values.items():
            key = (metric_name(name), tuple(k for k, _ in labels))
            full = key[0]
            if full not in gauges:
                gauges[full] = Gauge(full, f"job metric {name}", list(key[1]), registry=registry)
            gauge = gauges[full]
            (gauge.labels(**dict(labels)) if labels else gauge).set(value)
        state = Gauge("recast_job_status", "1 for the run's final status", ["status"], registry=registry)
        for s in STATUSES:
            state.labels(status=s).set(1.0 if s == status else 0.0)
        Gauge("recast_job_duration_seconds", "wall time of the run", registry=registry).set(seconds)
        if status == "succeeded":
            Gauge("recast_job_last_success_timestamp_seconds", "end of the last successful run",
                  registry=registry).set_to_current_time()
        try:
            push_to_gateway(self.pushgateway_url, job=f"recast_jobs_{self.job}", registry=registry,
                            grouping_key=self.grouping_key(), timeout=self.timeout_s)
        except Exception as exc:  # noqa: BLE001 - reported in the manifest, never fatal
            return f"push to {self.pushgateway_url} failed: {exc}"
        return None
