"""Rendering the Helm chart (helm/recast) for the chart tests: the value sets, the real Helm SDK's
render and lint, and small accessors of the rendered manifests (tests/helm/test_chart*.py)."""

from __future__ import annotations

import copy
import functools
import json
import os
from pathlib import Path
from typing import Any, Iterator

import helm_python as helm
import pytest
import yaml
from helm_python import _native

from recast.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "helm" / "recast"
RELEASE, NAMESPACE = "recast", "recast"
KUBE_VERSION = "1.31.0"
SERVICE_MONITOR_API = ["monitoring.coreos.com/v1", "monitoring.coreos.com/v1/ServiceMonitor"]

# Custom resources: kubernetes-validate has no schema for them; test_chart.py checks them by hand.
CUSTOM_RESOURCES = {
    ("kafka.strimzi.io/v1beta2", "Kafka"),
    ("kafka.strimzi.io/v1beta2", "KafkaNodePool"),
    ("kafka.strimzi.io/v1beta2", "KafkaTopic"),
    ("monitoring.coreos.com/v1", "ServiceMonitor"),
}

# name -> (values, api versions advertised in .Capabilities)
VALUE_SETS: dict[str, tuple[dict[str, Any], list[str]]] = {
    "defaults": ({}, []),
    "strimzi-forecast": ({"kafka": {"mode": "strimzi", "strimzi": {"clusterName": "events"}},
                          "forecast": {"enabled": True}}, []),
    "external-kafka-redis": ({
        "kafka": {"mode": "external", "externalBootstrapServers": "kafka-0.kafka:9092,kafka-1.kafka:9092"},
        "redis": {"enabled": False, "external": {"host": "redis.cache.svc", "port": 6380},
                  "auth": {"existingSecret": "redis-auth"}},
    }, []),
    "tensorrt-object-storage": ({
        "triton": {"backend": "tensorrt"},
        "modelRepository": {"source": "objectStorage", "objectStorage": {
            "uri": "s3://models/recast/triton_repository", "endpointUrl": "http://minio.storage:9000",
            "credentialsSecret": "s3-credentials"}},
    }, []),
    "servicemonitor": ({
        "metrics": {"serviceMonitor": {"labels": {"release": "kube-prometheus-stack"}}},
        "gateway": {"allowedClients": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "ingress"}}}]},
        "triton": {"replicas": 2},
    }, SERVICE_MONITOR_API),
    "no-autoscaling-no-networkpolicy": ({
        "gateway": {"autoscaling": {"enabled": False}, "replicas": 3},
        "networkPolicy": {"enabled": False}, "training": {"enabled": False},
        "abtestReport": {"enabled": False}, "streamProcessor": {"enabled": False},
        "metrics": {"dashboard": {"enabled": False}},
    }, []),
    "jobs-indexed-and-cron": ({
        "jobs": {"lightsam": {"enabled": True, "cells": 12, "parallelism": 3, "args": ["--set", "seeds=1"]},
                 "nightly": {"enabled": True, "schedule": "0 2 * * *", "preset": "tiny", "cells": 4,
                             "resources": {"requests": {"cpu": "1", "memory": "1Gi"}, "limits": {"cpu": "2", "memory": "2Gi"}}}},
        "jobsPushgatewayUrl": "http://pushgateway.monitoring:9091",
    }, []),
    "loop-cron": ({"loop": {"enabled": True, "schedule": "15 */6 * * *", "rollout": "simulate", "fromScratch": True,
                            "extraArgs": []}, "jobsPushgatewayUrl": "http://pushgateway.monitoring:9091"}, []),
}


# -- rendering ---------------------------------------------------------------------------


@functools.lru_cache(maxsize=1)
def _chart() -> helm.Chart:
    return helm.Chart.load(CHART)


def render(values: dict[str, Any] | None = None, api_versions: list[str] | tuple[str, ...] = ()) -> dict[str, str]:
    """Template path -> rendered text, as `helm template` with --api-versions / --kube-version.

    ``Chart.render`` does not expose the Capabilities options that the library's
    C ABI takes (``api_versions``, ``kube_version``), so call it directly.
    """
    opts = {"name": RELEASE, "namespace": NAMESPACE, "kube_version": f"v{KUBE_VERSION}",
            "api_versions": list(api_versions), "is_install": True}
    return json.loads(_native.call_string("helm_render", _chart()._raw(), json.dumps(values or {}), json.dumps(opts)))


@functools.lru_cache(maxsize=None)
def _docs(name: str) -> tuple[dict[str, Any], ...]:
    values, apis = VALUE_SETS[name]
    docs = []
    for text in render(values, apis).values():
        docs.extend(d for d in yaml.safe_load_all(text) if d)
    return tuple(docs)


def docs(name: str) -> list[dict[str, Any]]:
    return copy.deepcopy(list(_docs(name)))


def by_kind(manifests: list[dict], kind: str) -> dict[str, dict]:
    return {d["metadata"]["name"]: d for d in manifests if d["kind"] == kind}


def one(manifests: list[dict], kind: str, name: str) -> dict:
    found = by_kind(manifests, kind)
    assert name in found, f"no {kind} {name}; have {sorted(found)}"
    return found[name]


def pod_spec(obj: dict) -> dict | None:
    if obj["kind"] in ("Deployment", "StatefulSet", "Job"):
        return obj["spec"]["template"]["spec"]
    if obj["kind"] == "CronJob":
        return obj["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    return None


def pod_labels(obj: dict) -> dict:
    if obj["kind"] == "CronJob":
        return obj["spec"]["jobTemplate"]["spec"]["template"]["metadata"]["labels"]
    return obj["spec"]["template"]["metadata"]["labels"]


def containers(spec: dict) -> list[dict]:
    return list(spec.get("initContainers", [])) + list(spec["containers"])


def workloads(manifests: list[dict]) -> Iterator[tuple[dict, dict]]:
    for obj in manifests:
        spec = pod_spec(obj)
        if spec is not None:
            yield obj, spec


def container(obj: dict, name: str) -> dict:
    found = {c["name"]: c for c in containers(pod_spec(obj))}
    assert name in found, f"{obj['metadata']['name']} has no container {name}; has {sorted(found)}"
    return found[name]


def env_of(c: dict) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in c.get("env", [])}


def port_of(c: dict, name: str) -> int:
    return next(p["containerPort"] for p in c["ports"] if p["name"] == name)


def mount_path(c: dict, volume: str, sub_path: str | None = None) -> str:
    for m in c["volumeMounts"]:
        if m["name"] == volume and (sub_path is None or m.get("subPath") == sub_path):
            return m["mountPath"]
    raise AssertionError(f"container {c['name']} does not mount {volume} {sub_path or ''}")


def chart_values() -> dict[str, Any]:
    return yaml.safe_load((CHART / "values.yaml").read_text())


def settings_from(c: dict, manifests: list[dict], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    """The Settings this container will load: its env, and recast.yaml from the rendered ConfigMap."""
    for key in list(os.environ):
        if key.startswith("RECAST_"):
            monkeypatch.delenv(key)
    config = one(manifests, "ConfigMap", f"{RELEASE}-config")["data"]["recast.yaml"]
    config_path = tmp_path / "recast.yaml"
    config_path.write_text(config)
    for name, value in env_of(c).items():
        if name.startswith("RECAST_") and isinstance(value, str):
            monkeypatch.setenv(name, value)
    assert env_of(c)["RECAST_CONFIG"] == mount_path(c, "config") + "/recast.yaml"
    monkeypatch.setenv("RECAST_CONFIG", str(config_path))
    return Settings()
