"""The chart cannot drift from the code: environment names are settings fields, the settings the
containers load point at the rendered Services, probe and metrics paths are gateway routes, chart
defaults are code defaults, container commands parse with the real ``recast`` CLI."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import BaseModel

from recast.settings import GatewaySettings, KafkaSettings, Settings

from chart_render import (
    RELEASE,
    ROOT,
    VALUE_SETS,
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
    settings_from,
    workloads,
)


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
