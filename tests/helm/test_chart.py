"""The Helm chart (helm/recast), checked without a cluster and without a helm binary.

* rendered and linted by the real Helm SDK embedded in ``helm-python-sdk``
  (``libhelm_c``, Helm v4), for several value sets, with and without the
  ServiceMonitor CRD in ``.Capabilities``;
* every rendered manifest validated offline against the Kubernetes JSON
  schemas of ``kubernetes-validate`` in strict mode (unknown fields fail);
  custom resources (Strimzi, ServiceMonitor) have no schema there and are
  skipped explicitly, by kind;
* tied to the code, so the chart cannot drift: environment names must be
  fields of ``recast.settings.Settings``, the settings the containers will
  load (built from the rendered env) must point at the rendered Services,
  ports and mounts, probe and metrics paths must be gateway routes, the
  dashboard's metric names must exist in the code, the container commands
  must parse with the real ``recast`` CLI.
"""

from __future__ import annotations

import copy
import functools
import importlib.util
import json
import os
import re
import stat
import sys
from pathlib import Path
from typing import Any, Iterator

import helm_python as helm
import kubernetes_validate
import pytest
import yaml
from helm_python import _native
from pydantic import BaseModel

from recast.settings import GatewaySettings, KafkaSettings, Settings

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "helm" / "recast"
RELEASE, NAMESPACE = "recast", "recast"
KUBE_VERSION = "1.31.0"
SERVICE_MONITOR_API = ["monitoring.coreos.com/v1", "monitoring.coreos.com/v1/ServiceMonitor"]

# Custom resources: kubernetes-validate has no schema for them; validated by hand below.
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


# -- Helm: lint, schema, render ----------------------------------------------------------


@pytest.mark.parametrize("name", sorted(VALUE_SETS))
def test_chart_lints_clean(name: str) -> None:
    values, _ = VALUE_SETS[name]
    report = helm.lint(CHART, values, strict=True, namespace=NAMESPACE, kube_version=f"v{KUBE_VERSION}")
    problems = [m for m in report["messages"] if m["severity"] >= 2]
    assert report["errors"] == [] and problems == [], report


@pytest.mark.parametrize("name", sorted(VALUE_SETS))
def test_every_manifest_is_valid_kubernetes(name: str) -> None:
    manifests = docs(name)
    assert manifests
    kinds = set()
    for obj in manifests:
        kinds.add(obj["kind"])
        label = f"{obj['kind']}/{obj['metadata']['name']}"
        assert re.fullmatch(r"[a-z0-9]([-a-z0-9.]*[a-z0-9])?", obj["metadata"]["name"]), label
        assert len(obj["metadata"]["name"]) <= 63, label
        if (obj["apiVersion"], obj["kind"]) in CUSTOM_RESOURCES:
            # no schema offline: the CRD is not part of Kubernetes. Checked by the tests below.
            assert isinstance(obj.get("spec"), dict) and obj["spec"], label
            continue
        try:
            kubernetes_validate.validate(obj, KUBE_VERSION, strict=True)
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(f"{label}: {'.'.join(map(str, exc.path))}: {exc.message}")
        except kubernetes_validate.SchemaNotFoundError as exc:
            pytest.fail(f"{label}: {exc.message} (a built-in kind must have a schema)")
    assert {"Deployment", "Service", "ConfigMap"} <= kinds


@pytest.mark.parametrize(
    "values, complaint",
    [
        ({"triton": {"backend": "pytorch"}}, "/triton/backend"),
        ({"kafka": {"mode": "kraft-in-pod"}}, "/kafka/mode"),
        ({"gateway": {"port": 70000}}, "/gateway/port"),
        ({"streamProcessor": {"replicas": 0}}, "/streamProcessor/replicas"),
        ({"gateway": {"resources": {"limits": None}}}, "/gateway/resources"),
        ({"securityContext": {"readOnlyRootFilesystem": False}}, "/securityContext/readOnlyRootFilesystem"),
        ({"podSecurityContext": {"runAsNonRoot": False}}, "/podSecurityContext/runAsNonRoot"),
        ({"gateway": {"extraEnv": [{"name": "API_TOKEN", "value": "s3cr3t"}]}}, "/gateway/extraEnv"),
        ({"kafka": {"topics": {"events": {"name": "recast events", "partitions": 3, "replicas": 3,
                                          "retentionMs": 1}}}}, "/kafka/topics/events/name"),
        ({"gatway": {"port": 8080}}, "gatway"),
        ({"training": {"model": "gpt"}}, "/training/model"),
    ],
)
def test_values_schema_rejects_bad_values(values: dict, complaint: str) -> None:
    with pytest.raises(helm.HelmValuesError, match=re.escape(complaint)):
        render(values)


@pytest.mark.parametrize(
    "values, message",
    [
        ({"streamProcessor": {"replicas": 13}}, "must not exceed the partitions of topic recast.events (12)"),
        ({"streamProcessor": {"stateStore": "sqlite"}}, "streamProcessor.replicas (2) needs streamProcessor.stateStore: redis"),
        ({"forecast": {"enabled": True, "replicas": 7}}, "must not exceed the partitions of topic recast.forecasts (6)"),
        ({"kafka": {"mode": "external"}}, "kafka.externalBootstrapServers is required"),
        ({"modelRepository": {"source": "objectStorage"}}, "modelRepository.objectStorage.uri is required"),
        ({"redis": {"enabled": False}}, "redis.external.host is required"),
        ({"kafka": {"strimzi": {"replicas": 1}}}, "exceeds the brokers"),
    ],
)
def test_render_refuses_inconsistent_values(values: dict, message: str) -> None:
    with pytest.raises(helm.HelmRenderError, match=re.escape(message)):
        render(values)


def test_stream_replicas_may_equal_partitions() -> None:
    manifests = [d for t in render({"streamProcessor": {"replicas": 12}}).values() for d in yaml.safe_load_all(t) if d]
    assert one(manifests, "StatefulSet", f"{RELEASE}-stream")["spec"]["replicas"] == 12


# -- components ----------------------------------------------------------------------------


def test_defaults_render_every_component() -> None:
    m = docs("defaults")
    for kind, name in [("Deployment", "gateway"), ("Service", "gateway"), ("HorizontalPodAutoscaler", "gateway"),
                       ("Deployment", "triton"), ("Service", "triton"), ("StatefulSet", "stream"),
                       ("StatefulSet", "redis"), ("Service", "redis"), ("CronJob", "train"),
                       ("CronJob", "abtest-dlf-vs-dmoe"), ("ConfigMap", "feast"), ("ConfigMap", "dashboard"),
                       ("PersistentVolumeClaim", "shared"), ("Kafka", None), ("KafkaNodePool", "dual-role")]:
        one(m, kind, f"{RELEASE}-{name}" if name else RELEASE)
    hpa = one(m, "HorizontalPodAutoscaler", f"{RELEASE}-gateway")
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": f"{RELEASE}-gateway"}
    assert "replicas" not in one(m, "Deployment", f"{RELEASE}-gateway")["spec"]  # the HPA owns it
    assert one(m, "StatefulSet", f"{RELEASE}-stream")["spec"]["replicas"] <= chart_values()["kafka"]["topics"]["events"]["partitions"]
    assert not by_kind(m, "Secret")


def test_triton_official_image_health_and_metrics() -> None:
    m = docs("defaults")
    triton = one(m, "Deployment", f"{RELEASE}-triton")
    c = container(triton, "tritonserver")
    assert c["image"].startswith("nvcr.io/nvidia/tritonserver:")
    args = dict(a.lstrip("-").split("=", 1) for a in c["args"])
    assert c["command"] == ["tritonserver"]
    assert args["model-repository"] == mount_path(c, "shared", "artifacts/triton_repository")
    assert args["model-control-mode"] == "poll"  # exports publish atomically; new versions load by themselves
    for port in ("http", "grpc", "metrics"):
        assert int(args[f"{port}-port"]) == port_of(c, port)
    assert c["livenessProbe"]["httpGet"] == {"path": "/v2/health/live", "port": "http"}
    assert c["readinessProbe"]["httpGet"] == {"path": "/v2/health/ready", "port": "http"}
    assert args["allow-metrics"] == "true" and port_of(c, "metrics") == 8002
    annotations = triton["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/port"] == "8002" and annotations["prometheus.io/path"] == "/metrics"
    assert "nvidia.com/gpu" not in c["resources"]["limits"]


def test_tensorrt_backend_builds_engines_from_object_storage() -> None:
    m = docs("tensorrt-object-storage")
    triton = one(m, "Deployment", f"{RELEASE}-triton")
    spec = pod_spec(triton)
    assert [c["name"] for c in spec["initContainers"]] == ["fetch-models", "build-engines"]
    fetch, build = spec["initContainers"]
    assert fetch["args"][:4] == ["s3", "sync", "s3://models/recast/triton_repository", "/models-onnx"]
    assert fetch["envFrom"] == [{"secretRef": {"name": "s3-credentials"}}]
    assert build["image"].startswith("nvcr.io/nvidia/tensorrt:")
    assert "--source=/models-onnx" in build["args"] and "--target=/models" in build["args"]
    assert build["resources"]["limits"]["nvidia.com/gpu"] == 1
    server = container(triton, "tritonserver")
    assert server["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert "--model-control-mode=none" in server["args"]
    assert "--allow-gpu-metrics=true" in server["args"]
    assert mount_path(server, "engines") == "/models"
    script = one(m, "ConfigMap", f"{RELEASE}-tensorrt")["data"]["build_tensorrt_repository.py"]
    assert script.strip() == (CHART / "files" / "build_tensorrt_repository.py").read_text().strip()
    # the gateway reads spec.json from the same fetched repository
    gateway = one(m, "Deployment", f"{RELEASE}-gateway")
    assert [c["name"] for c in pod_spec(gateway)["initContainers"]] == ["fetch-models"]
    # the training job uploads what `recast export` wrote
    train = one(m, "CronJob", f"{RELEASE}-train")
    upload = container(train, "upload")
    assert upload["args"][:4] == ["s3", "sync", "/var/lib/recast/artifacts/triton_repository",
                                  "s3://models/recast/triton_repository"]


def test_strimzi_cluster_and_topics_from_values() -> None:
    m = docs("strimzi-forecast")
    values = chart_values()["kafka"]
    kafka = one(m, "Kafka", "events")
    assert kafka["metadata"]["annotations"] == {"strimzi.io/node-pools": "enabled", "strimzi.io/kraft": "enabled"}
    listener = kafka["spec"]["kafka"]["listeners"][0]
    assert (listener["port"], listener["tls"], listener["type"]) == (9092, False, "internal")
    pool = one(m, "KafkaNodePool", "events-dual-role")
    assert pool["metadata"]["labels"]["strimzi.io/cluster"] == "events"
    assert sorted(pool["spec"]["roles"]) == ["broker", "controller"]
    assert pool["spec"]["replicas"] == values["strimzi"]["replicas"]
    topics = {t["spec"]["topicName"]: t for t in by_kind(m, "KafkaTopic").values()}
    assert set(topics) == {t["name"] for t in values["topics"].values()}
    for topic in values["topics"].values():
        cr = topics[topic["name"]]
        assert cr["metadata"]["labels"]["strimzi.io/cluster"] == "events"
        assert cr["spec"]["partitions"] == topic["partitions"]
        assert cr["spec"]["replicas"] == topic["replicas"]
        assert cr["spec"]["config"]["retention.ms"] == topic["retentionMs"]
    for obj, spec in workloads(m):
        for c in containers(spec):
            if "RECAST_KAFKA__BOOTSTRAP_SERVERS" in env_of(c):
                assert env_of(c)["RECAST_KAFKA__BOOTSTRAP_SERVERS"] == "events-kafka-bootstrap:9092"
    forecast = one(m, "Deployment", f"{RELEASE}-forecast")
    assert forecast["spec"]["replicas"] <= values["topics"]["forecasts"]["partitions"]


def test_external_kafka_and_redis() -> None:
    m = docs("external-kafka-redis")
    assert not [d for d in m if d["apiVersion"].startswith("kafka.strimzi.io/")]
    assert f"{RELEASE}-redis" not in by_kind(m, "StatefulSet")
    for obj, spec in workloads(m):
        for c in containers(spec):
            env = env_of(c)
            if "RECAST_KAFKA__BOOTSTRAP_SERVERS" in env:
                assert env["RECAST_KAFKA__BOOTSTRAP_SERVERS"] == "kafka-0.kafka:9092,kafka-1.kafka:9092"
                assert env["FEAST_REDIS_PASSWORD"] == {"secretKeyRef": {"name": "redis-auth", "key": "redis-password"}}
    store = yaml.safe_load(one(m, "ConfigMap", f"{RELEASE}-feast")["data"]["feature_store.yaml"])
    assert store["online_store"]["connection_string"] == "redis.cache.svc:6380,password=${FEAST_REDIS_PASSWORD}"


@pytest.mark.parametrize("name, expect_monitors", [("defaults", False), ("servicemonitor", True)])
def test_prometheus_servicemonitor_when_the_crd_exists_else_annotations(name: str, expect_monitors: bool) -> None:
    m = docs(name)
    monitors = by_kind(m, "ServiceMonitor")
    scraped = {"gateway": ("Deployment", "metrics"), "triton": ("Deployment", "metrics"), "stream": ("StatefulSet", "metrics")}
    for component, (kind, port_name) in scraped.items():
        obj = one(m, kind, f"{RELEASE}-{component}")
        annotations = obj["spec"]["template"]["metadata"].get("annotations", {})
        main = pod_spec(obj)["containers"][0]
        if expect_monitors:
            assert "prometheus.io/scrape" not in annotations
            sm = monitors[f"{RELEASE}-{component}"]
            assert sm["metadata"]["labels"]["release"] == "kube-prometheus-stack"
            service = one(m, "Service", f"{RELEASE}-{component}")
            assert sm["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
            (endpoint,) = sm["spec"]["endpoints"]
            svc_port = next(p for p in service["spec"]["ports"] if p["name"] == endpoint["port"])
            assert svc_port["targetPort"] == port_name and endpoint["path"] == "/metrics"
        else:
            assert not monitors
            assert annotations["prometheus.io/scrape"] == "true"
            assert int(annotations["prometheus.io/port"]) == port_of(main, port_name)
            assert annotations["prometheus.io/path"] == "/metrics"


def test_grafana_dashboard_uses_metrics_the_code_exports() -> None:
    from prometheus_client import CollectorRegistry

    from serving.gateway import GatewayMetrics

    cm = one(docs("defaults"), "ConfigMap", f"{RELEASE}-dashboard")
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    dashboard = json.loads(cm["data"]["recast.json"])
    panels = [p for p in dashboard["panels"] if p["type"] != "row"]
    rows = [p["title"] for p in dashboard["panels"] if p["type"] == "row"]
    assert rows == ["Gateway", "Triton", "Stream processor", "A/B experiments"]
    exprs = [t["expr"] for p in panels for t in p.get("targets", [])]
    names = {n for e in exprs for n in re.findall(r"\b((?:recast|nv)_[a-z0-9_]+)", e)}
    used = {n if n in TRITON_METRICS else re.sub(r"_(bucket|sum|count)$", "", n) for n in names}

    registry = CollectorRegistry()
    GatewayMetrics(registry)
    gateway_metrics = {m.name for m in registry.collect()}
    gateway_metrics |= {n + "_total" for n in gateway_metrics}  # counters collect without the suffix
    must_show = {"recast_gateway_requests_total", "recast_gateway_request_seconds", "recast_gateway_feature_fetch_seconds",
                 "recast_gateway_triton_seconds", "recast_gateway_backend_errors_total"}
    assert must_show <= used
    assert must_show <= gateway_metrics
    # every recast_* name is defined by a prometheus_client metric in the code
    code = "\n".join(p.read_text() for area in ("serving", "streaming", "abtest") for p in (ROOT / area).rglob("*.py"))
    defined = set(re.findall(r"(?:Counter|Histogram|Gauge|Summary)\(\s*[\"'](recast_[a-z0-9_]+)[\"']", code))
    defined |= {n + "_total" for n in defined if not n.endswith("_total")}
    for name in sorted(used):
        if name.startswith("recast_"):
            assert name in defined, f"the dashboard uses {name}, which no Counter/Histogram/Gauge in the code defines"
        else:
            assert name in TRITON_METRICS, f"{name} is not a Triton metric"
    assert any(n.startswith("nv_inference_") for n in used)
    assert any(n.startswith("recast_stream_") for n in used)


# Triton's Prometheus metrics (server docs, user_guide/metrics.md) that a dashboard may use.
TRITON_METRICS = {
    "nv_inference_request_success", "nv_inference_request_failure", "nv_inference_count", "nv_inference_exec_count",
    "nv_inference_request_duration_us", "nv_inference_queue_duration_us", "nv_inference_compute_input_duration_us",
    "nv_inference_compute_infer_duration_us", "nv_inference_compute_output_duration_us", "nv_inference_pending_request_count",
    "nv_gpu_utilization", "nv_gpu_memory_total_bytes", "nv_gpu_memory_used_bytes", "nv_gpu_power_usage",
    "nv_cpu_utilization", "nv_cpu_memory_used_bytes",
}


# -- security ----------------------------------------------------------------------------------


SECRETISH = re.compile(r"PASSWORD|SECRET|TOKEN|(^|_)KEY($|_)|CREDENTIAL", re.I)


@pytest.mark.parametrize("name", sorted(VALUE_SETS))
def test_pods_are_locked_down(name: str) -> None:
    m = docs(name)
    assert not by_kind(m, "Secret"), "the chart must reference Secrets, never create them"
    assert list(workloads(m))
    for obj, spec in workloads(m):
        label = f"{obj['kind']}/{obj['metadata']['name']}"
        assert spec["securityContext"]["runAsNonRoot"] is True, label
        assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}, label
        assert spec["automountServiceAccountToken"] is False, label
        for c in containers(spec):
            where = f"{label} container {c['name']}"
            sc = c["securityContext"]
            assert sc["readOnlyRootFilesystem"] is True, where
            assert sc["allowPrivilegeEscalation"] is False, where
            assert sc["capabilities"]["drop"] == ["ALL"] and not sc["capabilities"].get("add"), where
            for kind in ("requests", "limits"):
                assert {"cpu", "memory"} <= set(c["resources"][kind]), f"{where}: {kind}"
            for e in c.get("env", []):
                if SECRETISH.search(e["name"]):
                    assert "value" not in e and "secretKeyRef" in e["valueFrom"], f"{where}: {e['name']} must come from a Secret"
            # a read-only root filesystem needs a writable /tmp
            assert "/tmp" in {v["mountPath"] for v in c.get("volumeMounts", [])} or c["name"] == "redis", where


def test_network_policies_cover_every_pod() -> None:
    m = docs("servicemonitor")
    policies = by_kind(m, "NetworkPolicy")
    deny = policies[f"{RELEASE}-default-deny"]
    assert deny["spec"]["policyTypes"] == ["Ingress"] and "ingress" not in deny["spec"]
    for obj, _ in workloads(m):
        labels = pod_labels(obj)
        assert deny["spec"]["podSelector"]["matchLabels"].items() <= labels.items(), obj["metadata"]["name"]
    triton = policies[f"{RELEASE}-triton"]["spec"]["ingress"]
    gateway_labels = pod_labels(one(m, "Deployment", f"{RELEASE}-gateway"))
    assert triton[0]["from"][0]["podSelector"]["matchLabels"].items() <= gateway_labels.items()
    assert {p["port"] for p in triton[0]["ports"]} == {"http", "grpc"}
    assert {p["port"] for p in triton[1]["ports"]} == {"metrics"}
    gateway = policies[f"{RELEASE}-gateway"]["spec"]["ingress"][0]
    assert gateway["from"][0]["namespaceSelector"]["matchLabels"] == {"kubernetes.io/metadata.name": "ingress"}
    redis_from = policies[f"{RELEASE}-redis"]["spec"]["ingress"][0]["from"]
    readers = [one(m, "Deployment", f"{RELEASE}-gateway"), one(m, "StatefulSet", f"{RELEASE}-stream"),
               one(m, "CronJob", f"{RELEASE}-train")]
    for obj in readers:
        assert any(p["podSelector"]["matchLabels"].items() <= pod_labels(obj).items() for p in redis_from), obj["metadata"]["name"]
    assert not by_kind(docs("no-autoscaling-no-networkpolicy"), "NetworkPolicy")


# -- no drift from the code -------------------------------------------------------------------


def _field(model: type[BaseModel], name: str) -> Any:
    fields = {k.lower(): v for k, v in model.model_fields.items()}
    assert name.lower() in fields, f"{model.__name__} has no field {name.lower()}"
    return fields[name.lower()]


@pytest.mark.parametrize("name", sorted(VALUE_SETS))
def test_env_names_are_settings_fields(name: str) -> None:
    """pydantic-settings ignores unknown RECAST_* names silently: a typo would never be noticed."""
    seen = set()
    for obj, spec in workloads(docs(name)):
        for c in containers(spec):
            for env in env_of(c):
                if not env.startswith("RECAST_") or env == "RECAST_CONFIG":
                    continue
                seen.add(env)
                path = env[len("RECAST_"):].split("__")
                field = _field(Settings, path[0])
                for part in path[1:]:
                    assert isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel), env
                    field = _field(field.annotation, part)
    assert {"RECAST_GATEWAY__PORT", "RECAST_TRITON__HOST", "RECAST_TRITON__HTTP_PORT", "RECAST_KAFKA__BOOTSTRAP_SERVERS",
            "RECAST_FEAST__REPO_DIR"} <= seen or name == "no-autoscaling-no-networkpolicy"


@pytest.mark.parametrize("name", ["defaults", "tensorrt-object-storage", "strimzi-forecast"])
def test_gateway_settings_point_at_the_rendered_services(name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    m = docs(name)
    gateway = one(m, "Deployment", f"{RELEASE}-gateway")
    c = container(gateway, "gateway")
    s = settings_from(c, m, tmp_path, monkeypatch)
    # the gateway listens where the container port, probes and Service point
    assert s.gateway.host == "0.0.0.0"
    assert s.gateway.port == port_of(c, "http")
    gw_service = one(m, "Service", f"{RELEASE}-gateway")
    assert gw_service["spec"]["ports"][0]["targetPort"] == "http"
    assert gw_service["spec"]["selector"].items() <= pod_labels(gateway).items()
    # ... and reaches Triton through its Service, on the ports Triton listens on
    triton = one(m, "Deployment", f"{RELEASE}-triton")
    server = container(triton, "tritonserver")
    triton_service = one(m, "Service", s.triton.host)
    assert triton_service["spec"]["selector"].items() <= pod_labels(triton).items()
    service_ports = {p["name"]: p for p in triton_service["spec"]["ports"]}
    for port, value in (("http", s.triton.http_port), ("grpc", s.triton.grpc_port), ("metrics", s.triton.metrics_port)):
        assert service_ports[port]["port"] == value == port_of(server, port)
        assert f"--{port}-port={value}" in server["args"]
    # the Feast repository it opens is the mounted feature_store.yaml
    assert str(s.path(s.feast.repo_dir)) == mount_path(c, "feast")
    # spec.json of each model: read from the repository Triton serves (or its ONNX source)
    repo = str(s.path(s.export.local_model_repository))
    assert repo in {m_["mountPath"] for m_ in c["volumeMounts"]}
    build = [i for i in pod_spec(triton).get("initContainers", []) if i["name"] == "build-engines"]
    triton_source = f"--source={repo}" in build[0]["args"] if build else repo in server["args"][0]
    assert triton_source, "gateway and Triton must read the same model repository"


@pytest.mark.parametrize("name", ["defaults", "external-kafka-redis"])
def test_stream_replicas_share_the_redis_state_store(name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every replica of the processor opens the same group state in the release's Redis (no per-pod volume)."""
    from streaming.state_redis import connection_kwargs

    m = docs(name)
    stream = one(m, "StatefulSet", f"{RELEASE}-stream")
    assert stream["spec"]["replicas"] == 2 and "volumeClaimTemplates" not in stream["spec"]
    c = container(stream, "stream")
    s = settings_from(c, m, tmp_path, monkeypatch)
    assert s.stream.state_store == "redis" and s.stream.consumer_group == chart_values()["streamProcessor"]["consumerGroup"]
    address = connection_kwargs(s.stream.state_redis_address)
    if name == "defaults":  # the release's Redis Service
        redis = one(m, "Service", address["host"])
        assert address["port"] == redis["spec"]["ports"][0]["port"] and "password" not in address
    else:  # the external Redis, its password from the Secret, expanded by the kubelet from the env before it
        assert (address["host"], address["port"]) == ("redis.cache.svc", 6380)
        assert address["password"] == "$(FEAST_REDIS_PASSWORD)"
        names = [e["name"] for e in c["env"]]
        assert names.index("FEAST_REDIS_PASSWORD") < names.index("RECAST_STREAM__STATE_REDIS_ADDRESS")


def test_a_sqlite_state_store_keeps_one_replica_on_its_own_volume() -> None:
    manifests = [d for t in render({"streamProcessor": {"stateStore": "sqlite", "replicas": 1}}).values()
                 for d in yaml.safe_load_all(t) if d]
    stream = one(manifests, "StatefulSet", f"{RELEASE}-stream")
    assert stream["spec"]["volumeClaimTemplates"][0]["metadata"]["name"] == "state"
    env = env_of(container(stream, "stream"))
    assert env["RECAST_STREAM__STATE_DIR"] == mount_path(container(stream, "stream"), "state")
    assert "RECAST_STREAM__STATE_STORE" not in env  # the code's default: sqlite


def test_probe_and_metrics_paths_are_gateway_routes() -> None:
    from serving.gateway import create_app

    app = create_app(Settings(), scorer=object())  # routes only; the app is not started
    routes = {getattr(r, "path", None) for r in app.routes}
    c = container(one(docs("defaults"), "Deployment", f"{RELEASE}-gateway"), "gateway")
    probes = {c[p]["httpGet"]["path"] for p in ("startupProbe", "livenessProbe", "readinessProbe")}
    assert probes == {"/healthz", "/readyz"} and probes <= routes
    assert c["readinessProbe"]["httpGet"]["path"] == "/readyz"  # ready only when Triton has the model
    assert "/metrics" in routes and "/v1/score" in routes


def test_feature_store_yaml_is_valid_feast_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from features.feast_repo import import_feast

    import_feast()
    from feast.repo_config import load_repo_config

    m = docs("defaults")
    text = one(m, "ConfigMap", f"{RELEASE}-feast")["data"]["feature_store.yaml"]
    (tmp_path / "feature_store.yaml").write_text(text)
    config = load_repo_config(tmp_path, tmp_path / "feature_store.yaml")
    assert config.project == Settings().feast.project == chart_values()["feast"]["project"]
    assert config.online_store.type == "redis"
    redis = one(m, "Service", f"{RELEASE}-redis")
    assert config.online_store.connection_string == f"{redis['metadata']['name']}:{redis['spec']['ports'][0]['port']}"
    # the training job writes the registry where the serving pods read it
    train = one(m, "CronJob", f"{RELEASE}-train")
    features = container(train, "features")
    monkeypatch.delenv("RECAST_FEAST__REGISTRY_PATH", raising=False)
    s = Settings(home=Path(env_of(features)["RECAST_HOME"]))
    assert str(s.path(s.feast.registry_path)) == config.registry.path
    assert mount_path(features, "shared") == env_of(features)["RECAST_HOME"]
    gateway = container(one(m, "Deployment", f"{RELEASE}-gateway"), "gateway")
    assert mount_path(gateway, "shared", "data/feast_repo") == str(Path(config.registry.path).parent)
    # the password is expanded from the environment by Feast, never stored in the file
    auth = [d for t in render({"redis": {"auth": {"existingSecret": "r"}}}).values() for d in yaml.safe_load_all(t) if d]
    (tmp_path / "feature_store.yaml").write_text(one(auth, "ConfigMap", f"{RELEASE}-feast")["data"]["feature_store.yaml"])
    monkeypatch.setenv("FEAST_REDIS_PASSWORD", "from-a-secret")
    config = load_repo_config(tmp_path, tmp_path / "feature_store.yaml")
    assert config.online_store.connection_string.endswith(",password=from-a-secret")


def test_chart_defaults_match_code_defaults(monkeypatch, tmp_path) -> None:
    values = chart_values()
    monkeypatch.chdir(tmp_path)  # the code's defaults, not a recast.yaml in the checkout
    monkeypatch.delenv("RECAST_CONFIG", raising=False)
    gateway = GatewaySettings()
    assert values["gateway"]["port"] == gateway.port
    assert values["gateway"]["modelName"] == gateway.model_name
    assert values["gateway"]["maxCandidates"] == gateway.max_candidates
    assert values["feast"]["project"] == Settings().feast.project
    # every topic the code knows has the same default name in the chart (RECAST_KAFKA__<KEY>_TOPIC)
    kafka = KafkaSettings()
    topics = values["kafka"]["topics"]
    for field, default in kafka.model_dump().items():
        if field.endswith("_topic"):
            key = re.sub(r"_(\w)", lambda mm: mm.group(1).upper(), field[: -len("_topic")])
            assert topics[key]["name"] == default, field
    stream = getattr(Settings(), "stream", None)
    if stream is not None:
        assert values["streamProcessor"]["metricsPort"] == stream.metrics_port
        assert values["streamProcessor"]["consumerGroup"] == stream.consumer_group
    # Triton's own defaults (the local stack moves them to 18000-18002 to avoid collisions)
    assert values["triton"]["ports"] == {"http": 8000, "grpc": 8001, "metrics": 8002}


def _app_commands() -> list[tuple[str, list[str]]]:
    manifests = [d for t in render({"forecast": {"enabled": True}}).values() for d in yaml.safe_load_all(t) if d]
    out = []
    for obj, spec in workloads(manifests):
        for c in containers(spec):
            if c["image"].split(":")[0] in ("recast", "recast-train") and "command" not in c:
                out.append((f"{obj['metadata']['name']}/{c['name']}", c["args"]))
    return out


@pytest.mark.parametrize("where, args", _app_commands(), ids=lambda v: v if isinstance(v, str) else " ".join(v))
def test_container_commands_parse_with_the_recast_cli(where: str, args: list[str]) -> None:
    from recast.cli import build_parser

    parser = build_parser()
    commands = parser._subparsers._group_actions[0].choices  # noqa: SLF001 - argparse keeps them here
    if args[0] not in commands:
        pytest.fail(f"`recast {args[0]}` is not a registered command (recast/cli.py), but {where} runs `recast {' '.join(args)}`")
    try:
        parsed = parser.parse_args(args)
    except SystemExit as exc:
        pytest.fail(f"{where}: `recast {' '.join(args)}` does not parse (exit {exc.code})")
    if args[:2] == ["abtest", "report"]:  # the experiment must exist in the shipped experiments file
        from abtest.config import load_config

        load_config(ROOT / "abtest" / "experiments.yaml").find(parsed.experiment)


def test_materialize_step_uses_real_feast_cli_options() -> None:
    from features.feast_repo import import_feast

    import_feast()
    from feast.cli.cli import cli

    step = container(one(docs("defaults"), "CronJob", f"{RELEASE}-train"), "materialize")
    assert step["command"] == ["feast"]
    option, repo, command, start, end = step["args"]
    assert option in {o for p in cli.params for o in p.opts}
    assert repo == chart_values()["feast"]["repoDir"] == mount_path(step, "feast")
    materialize = cli.commands[command]
    ctx = materialize.make_context(command, [start, end])
    assert ctx.params["start_ts"] == start and ctx.params["end_ts"] == end


# -- the TensorRT init container's script ------------------------------------------------------


def _load_script():
    path = CHART / "files" / "build_tensorrt_repository.py"
    spec = importlib.util.spec_from_file_location("build_tensorrt_repository", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_tensorrt_script_converts_an_exported_repository(tmp_path: Path) -> None:
    from features.spec import FeatureSpec, SparseFeature
    from serving.model_repository import write_model_repository

    spec = FeatureSpec(sparse=(SparseFeature("user_id", 10, "user"), SparseFeature("genres", 5, "item", max_len=3)))
    onnx = tmp_path / "model.onnx"
    onnx.write_bytes(b"onnx")
    prod, local = tmp_path / "prod", tmp_path / "local"
    for version in (1, 2):
        write_model_repository(onnx, spec, "dlf", version, prod, local, max_batch_size=256,
                               site_packages=tmp_path)
    calls = tmp_path / "calls.jsonl"
    trtexec = tmp_path / "trtexec"
    trtexec.write_text(
        f"#!{sys.executable}\nimport json, sys\n"
        f"open({str(calls)!r}, 'a').write(json.dumps(sys.argv[1:]) + '\\n')\n"
        "out = [a.split('=', 1)[1] for a in sys.argv[1:] if a.startswith('--saveEngine=')][0]\n"
        "open(out, 'wb').write(b'engine')\n")
    trtexec.chmod(trtexec.stat().st_mode | stat.S_IEXEC)

    script = _load_script()
    assert script.main(["--source", str(prod), "--target", str(tmp_path / "trt"), "--trtexec", str(trtexec),
                        "--opt-batch", "64", "--fp16"]) == 0
    out = tmp_path / "trt" / "dlf"
    config = (out / "config.pbtxt").read_text()
    original = (prod / "dlf" / "config.pbtxt").read_text()
    assert 'platform: "tensorrt_plan"' in config and 'backend: "tensorrt"' in config and "KIND_GPU" in config
    assert "onnxruntime" not in config
    assert script.input_dims(config) == script.input_dims(original) == {
        "sparse_ids": [spec.total_slots], "sparse_mask": [spec.total_slots]}
    assert config.split("output [")[1] == original.split("output [")[1].replace("KIND_CPU", "KIND_GPU")
    for version in ("1", "2"):
        assert (out / version / "model.plan").read_bytes() == b"engine"
        assert not (out / version / "model.onnx").exists()
    assert (out / "spec.json").read_text() == (prod / "dlf" / "spec.json").read_text()
    assert not list((tmp_path / "trt").glob("**/.*.building"))
    args = [json.loads(line) for line in calls.read_text().splitlines()]
    assert len(args) == 2
    slots = spec.total_slots
    assert f"--minShapes=sparse_ids:1x{slots},sparse_mask:1x{slots}" in args[0]
    assert f"--optShapes=sparse_ids:64x{slots},sparse_mask:64x{slots}" in args[0]
    assert f"--maxShapes=sparse_ids:256x{slots},sparse_mask:256x{slots}" in args[0]
    assert "--fp16" in args[0]
    # an empty or missing repository is an error the init container reports
    (tmp_path / "empty").mkdir()
    assert script.main(["--source", str(tmp_path / "empty"), "--target", str(tmp_path / "x")]) == 1


# -- the application image -----------------------------------------------------------------------


def _dockerfile_stages() -> dict[str, str]:
    text = (ROOT / "Dockerfile").read_text()
    stages: dict[str, str] = {}
    for block in re.split(r"^(?=FROM )", text, flags=re.M)[1:]:
        name = re.match(r"FROM \S+ AS (\S+)", block).group(1)
        stages[name] = block
    return stages


def test_dockerfile_runtime_has_no_torch_and_train_matches_the_makefile() -> None:
    stages = _dockerfile_stages()
    assert list(stages)[-1] == "runtime", "the default target must be the runtime image"
    runtime_chain = stages["base"] + stages["build"] + stages["runtime"]
    installs = re.findall(r"pip install[^\n]*", runtime_chain)
    assert installs and not any("train" in i or "torch" in i for i in installs), installs
    assert re.search(r"COPY --from=build /opt/venv", stages["runtime"])
    train = stages["build-train"]
    assert re.search(r'pip install "\.\[train\]"', train)
    makefile_version = re.search(r"^TORCHREC_VERSION := (\S+)", (ROOT / "Makefile").read_text(), re.M).group(1)
    assert re.search(rf"ARG TORCHREC_VERSION={re.escape(makefile_version)}\b", train)
    assert 'pip install --no-deps "torchrec==${TORCHREC_VERSION}"' in train
    values = chart_values()
    uid = values["podSecurityContext"]["runAsUser"]
    for stage in ("runtime", "train"):
        assert re.search(rf"^USER {uid}:{values['podSecurityContext']['runAsGroup']}$", stages[stage], re.M), stage
        assert 'ENTRYPOINT ["recast"]' in stages[stage]
        assert f"RECAST_HOME={values['home']}" in stages[stage]
    assert f"--uid {uid}" in stages["base"]
    assert re.search(rf"^EXPOSE {GatewaySettings().port}$", stages["runtime"], re.M)
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert {".venv", "data", "artifacts", ".git"} <= set(ignored)
