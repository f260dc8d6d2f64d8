"""Security scan of the rendered chart with checkov, and the gateway's locks as the chart wires them.

Every value set of ``test_chart.VALUE_SETS`` is rendered by the real Helm SDK and
scanned by ``checkov`` (its Kubernetes framework, offline: ``--skip-download``).
A finding must be fixed in the chart or listed below with the reason it does not
apply; the test fails on anything else, and on a skip that no longer matches any
finding's check (so stale reasons do not pile up).

checkov lives in its own virtual environment (``.venv-checkov``, made by
``make install``): its pins (e.g. ``packaging<24``) would downgrade packages of
the main environment.
"""

from __future__ import annotations

import json
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import yaml

from chart_render import RELEASE, ROOT, VALUE_SETS, container, env_of, one, port_of, render

CHECKOV = ROOT / ".venv-checkov" / "bin" / "checkov"

# check id -> why the chart does not follow it (applies to every value set)
SKIPPED = {
    "CKV_K8S_21": "Namespaces come from `helm install --namespace`: the templates leave metadata.namespace unset, "
                  "so the rendered manifests (without a cluster) look like the default namespace.",
    "CKV_K8S_43": "Images are referenced by tag from values (image.tag); pinning by digest is a release "
                  "decision: put the digest into the tag value (`tag: 1.2.3@sha256:...`).",
    "CKV_K8S_15": "imagePullPolicy is IfNotPresent on purpose: tags are immutable releases; Always would make "
                  "every pod start depend on the registry.",
    "CKV_K8S_35": "Secrets reach the containers as environment variables by reference (secretKeyRef), because "
                  "recast's one settings object reads RECAST_* variables (and Feast expands ${FEAST_REDIS_PASSWORD}); "
                  "only whoever can read the pod spec or exec into the pod sees them.",
}
# value set -> {check id: reason}: findings that set asks for on purpose
SKIPPED_IN = {
    "no-autoscaling-no-networkpolicy": {
        "CKV2_K8S_6": "This value set switches NetworkPolicies off (networkPolicy.enabled: false), for clusters "
                      "whose CNI has none; the default value sets render a policy for every pod.",
    },
}


def _checkov(target: Path) -> list[dict]:
    """checkov's failed checks for one directory of manifests.

    One run per value set: given several directories at once, checkov merges resources
    of the same kind and name across them and reports each finding once.
    """
    run = subprocess.run([str(CHECKOV), "-d", str(target), "--framework", "kubernetes", "--skip-download",
                          "--quiet", "--compact", "-o", "json"], capture_output=True, text=True, timeout=600)
    assert run.stdout.strip(), f"checkov printed no report (rc {run.returncode}):\n{run.stderr[-3000:]}"
    report = json.loads(run.stdout)
    reports = report if isinstance(report, list) else [report]
    failed = []
    for r in reports:
        if "results" not in r:  # nothing failed: checkov prints only a summary
            continue
        assert r.get("summary", {}).get("parsing_errors", 0) == 0, r.get("summary")
        failed += r["results"]["failed_checks"]
    return failed


def _scan(out_dir: Path) -> dict[str, list[dict]]:
    """value set -> checkov's failed checks on its rendered manifests."""
    assert CHECKOV.exists(), f"{CHECKOV} missing: run `make install`"
    for name, (values, apis) in VALUE_SETS.items():
        target = out_dir / name
        target.mkdir(parents=True)
        for path, text in render(values, apis).items():
            if text.strip():
                (target / path.replace("/", "_")).write_text(text)
    with ThreadPoolExecutor(3) as pool:  # checkov runs are mostly start-up: overlap them
        return dict(zip(VALUE_SETS, pool.map(_checkov, [out_dir / name for name in VALUE_SETS])))


@pytest.fixture(scope="module")
def findings(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[dict]]:
    return _scan(tmp_path_factory.mktemp("rendered"))


def test_checkov_finds_nothing_unexplained(findings: dict[str, list[dict]]) -> None:
    unexplained, used = [], set()
    for name, failed in findings.items():
        allowed = {**SKIPPED, **SKIPPED_IN.get(name, {})}
        for f in failed:
            if f["check_id"] in allowed:
                used.add(f["check_id"])
            else:
                unexplained.append(f"{name}: {f['check_id']} {f['resource']} ({f['check_name']})")
    assert not unexplained, "checkov findings without a fix or a written reason:\n" + "\n".join(unexplained)
    stale = set(SKIPPED) | {c for skips in SKIPPED_IN.values() for c in skips}
    assert stale - used == set(), f"skips that match no finding any more (remove them): {stale - used}"


def test_every_workload_has_probes_and_a_high_uid() -> None:
    for name, (values, apis) in VALUE_SETS.items():
        manifests = [d for t in render(values, apis).values() for d in yaml.safe_load_all(t) if d]
        for obj in manifests:
            if obj["kind"] not in ("Deployment", "StatefulSet"):
                continue
            spec = obj["spec"]["template"]["spec"]
            assert spec["securityContext"]["runAsUser"] >= 10000, (name, obj["metadata"]["name"])
            for c in spec["containers"]:
                assert "livenessProbe" in c and "readinessProbe" in c, (name, obj["metadata"]["name"], c["name"])


def test_gateway_locks_are_wired_by_reference() -> None:
    from recast.settings import Settings

    values = {"gateway": {"auth": {"existingSecret": "gateway-api-key"}, "corsOrigins": ["https://shop.example"]}}
    manifests = [d for t in render(values).values() for d in yaml.safe_load_all(t) if d]
    c = container(one(manifests, "Deployment", f"{RELEASE}-gateway"), "gateway")
    env = env_of(c)
    assert env["RECAST_GATEWAY__API_KEY"] == {"secretKeyRef": {"name": "gateway-api-key", "key": "api-key"}}
    plain = {k: v for k, v in env.items() if k.startswith("RECAST_GATEWAY__") and isinstance(v, str)}
    g = Settings(gateway={k.removeprefix("RECAST_GATEWAY__").lower(): (json.loads(v) if v.startswith("[") else v)
                          for k, v in plain.items()}).gateway
    assert g.cors_origins == ["https://shop.example"]
    assert g.metrics_port == port_of(c, "metrics") != g.port == port_of(c, "http")
    service = one(manifests, "Service", f"{RELEASE}-gateway")
    assert {p["name"]: p["targetPort"] for p in service["spec"]["ports"]} == {"http": "http", "metrics": "metrics"}
    without = [d for t in render({}).values() for d in yaml.safe_load_all(t) if d]
    assert "RECAST_GATEWAY__API_KEY" not in env_of(container(one(without, "Deployment", f"{RELEASE}-gateway"), "gateway"))
