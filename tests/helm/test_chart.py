"""The Helm chart (helm/recast), checked without a cluster and without a helm binary.

* rendered and linted by the real Helm SDK embedded in ``helm-python-sdk``
  (``libhelm_c``, Helm v4), for several value sets, with and without the
  ServiceMonitor CRD in ``.Capabilities``;
* every rendered manifest validated offline against the Kubernetes JSON
  schemas of ``kubernetes-validate`` in strict mode (unknown fields fail);
  custom resources (Strimzi, ServiceMonitor) have no schema there and are
  skipped explicitly, by kind;
* tied to the code (test_chart_drift.py), so the chart cannot drift: environment names must be
  fields of ``recast.settings.Settings``, the settings the containers will
  load (built from the rendered env) must point at the rendered Services,
  ports and mounts, probe and metrics paths must be gateway routes, the
  dashboard's metric names must exist in the code, the container commands
  must parse with the real ``recast`` CLI.

The value sets and the rendering helpers are in chart_render.py.
"""

from __future__ import annotations

import json
import re

import helm_python as helm
import kubernetes_validate
import pytest
import yaml

from chart_render import (
    CHART,
    CUSTOM_RESOURCES,
    KUBE_VERSION,
    NAMESPACE,
    RELEASE,
    ROOT,
    VALUE_SETS,
    by_kind,
    chart_values,
    container,
    containers,
    docs,
    env_of,
    mount_path,
    one,
    pod_labels,
    pod_spec,
    port_of,
    render,
    workloads,
)


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
