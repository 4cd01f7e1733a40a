"""deploy/compose.yaml and deploy/.env.example, checked offline (no Docker engine here).

Parses the file, resolves `${VAR...}` the way docker compose does from .env.example, and
checks that every role service runs `flashwatch run <role>` with an existing role, that every
FW_ variable is a known setting (and the resolved environment of each role loads as valid
settings), that secrets only ever come from the .env file, and the topology rules: Kafka in
KRaft mode, Redis with AOF and noeviction, two ingest shards, two alerts replicas (shards), and
GPU reservations in the `gpu` profile.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from flashwatch.config import ENV_ALIASES, load_settings, unknown_env_vars
from flashwatch.runtime import ROLES

DEPLOY = Path(__file__).resolve().parents[3] / "deploy"
INTERP = re.compile(r"\$\{([A-Z0-9_]+)(?:(:?[-?])([^}]*))?\}")
BACKENDS = {"kafka", "redis", "postgres"}


def secret_env_names() -> set[str]:
    """FW_ names of every SecretStr setting, aliases included."""
    from pydantic import BaseModel

    from flashwatch.config import Settings

    names = set()
    for section, field in Settings.model_fields.items():
        model = field.annotation
        if isinstance(model, type) and issubclass(model, BaseModel):
            for key, sub in model.model_fields.items():
                if "SecretStr" in str(sub.annotation):
                    names.add(f"FW_{section}__{key}".upper())
    aliases = {a for a, (sec, key) in ENV_ALIASES.items() if f"FW_{sec}__{key}".upper() in names}
    return names | aliases


def parse_env_file(path: Path) -> dict[str, str]:
    out = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        key, _, value = line.partition("=")
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        out[key.strip()] = value
    return out


def interpolate(value: str, env: dict[str, str]) -> str:
    def sub(m: re.Match[str]) -> str:
        name, op, arg = m.group(1), m.group(2), m.group(3)
        have = env.get(name)
        if op in (":?", "?") and not have:
            raise AssertionError(f"${{{name}}} required: {arg}")
        if op in (":-", "-") and not have:
            return arg
        return have or ""

    return INTERP.sub(sub, value)


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load((DEPLOY / "compose.yaml").read_text())


@pytest.fixture(scope="module")
def env_example() -> dict[str, str]:
    return parse_env_file(DEPLOY / ".env.example")


def role_services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {n: s for n, s in compose["services"].items() if n not in BACKENDS}


def role_of(svc: dict[str, Any]) -> str:
    cmd = svc["command"]
    assert isinstance(cmd, list) and len(cmd) == 2 and cmd[0] == "run", cmd
    return cmd[1]


def test_services_run_existing_roles_from_flashwatch_images(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert set(services) >= BACKENDS
    roles = {name: role_of(svc) for name, svc in role_services(compose).items()}
    assert set(roles.values()) == set(ROLES)
    assert all(r in ROLES for r in roles.values())
    for name, role in roles.items():
        assert name.split("-")[0] == role, (name, role)
        image = role_services(compose)[name]["image"]
        # The images' ENTRYPOINT is `flashwatch` (test_dockerfiles checks), so the command
        # ["run", role] is `flashwatch run <role>`.
        assert re.fullmatch(r"\$\{FLASHWATCH(_GPU)?_IMAGE:-flashwatch(-gpu)?:[\w.]+\}", image)
        assert ("gpu" in name) == ("GPU" in image), name


def test_every_role_is_hardened_and_healthchecked(compose: dict[str, Any]) -> None:
    for name, svc in compose["services"].items():
        assert "healthcheck" in svc, name
    for name, svc in role_services(compose).items():
        assert svc["read_only"] is True and svc["user"] == "10001:10001", name
        assert "/tmp" in svc["tmpfs"] and svc["cap_drop"] == ["ALL"], name
        assert "/v1/health" in " ".join(svc["healthcheck"]["test"]), name
        for dep, cond in svc["depends_on"].items():
            assert cond == {"condition": "service_healthy"}, (name, dep)


def test_fw_variables_are_known_settings(
    compose: dict[str, Any], env_example: dict[str, str]
) -> None:
    fw = [k for k in env_example if k.startswith("FW_")]
    for svc in role_services(compose).values():
        fw += [k for k in svc["environment"] if k.startswith("FW_")]
    text = (DEPLOY / "compose.yaml").read_text()
    fw += [m.group(1) for m in INTERP.finditer(text) if m.group(1).startswith("FW_")]
    assert fw
    assert unknown_env_vars(dict.fromkeys(fw, "")) == []


def test_env_example_covers_exactly_the_compose_variables(env_example: dict[str, str]) -> None:
    used = {m.group(1) for m in INTERP.finditer((DEPLOY / "compose.yaml").read_text())}
    assert used == set(env_example), used ^ set(env_example)


def test_secrets_are_never_literal(compose: dict[str, Any], env_example: dict[str, str]) -> None:
    secret_names = secret_env_names() | {"POSTGRES_PASSWORD", "REDIS_PASSWORD", "REDISCLI_AUTH"}
    for name, svc in compose["services"].items():
        env = svc.get("environment", {})
        for key, value in env.items():
            if key in secret_names:
                assert "${" in str(value), f"{name}: {key} is a literal"
                # Every password inside a URL is interpolated too.
            if "://" in str(value) and "@" in str(value):
                userinfo = str(value).split("://", 1)[1].split("@", 1)[0]
                assert ":" not in userinfo or "${" in userinfo, f"{name}: {key} has a password"
    for key, value in env_example.items():
        if key in secret_names:
            assert value == "CHANGE_ME", key


@pytest.mark.parametrize(
    "service",
    ["api", "ingest-0", "ingest-1", "encoder", "reasoner", "encoder-gpu", "reasoner-gpu", "alerts"],
)
def test_resolved_role_environment_loads_as_valid_settings(
    compose: dict[str, Any],
    env_example: dict[str, str],
    service: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import os

    for key in list(os.environ):
        if key.startswith("FW_"):
            monkeypatch.delenv(key)
    env = role_services(compose)[service]["environment"]
    for key, value in env.items():
        monkeypatch.setenv(key, interpolate(str(value), env_example))
    settings = load_settings()
    assert settings.mode == "distributed" and settings.bus.kind == "kafka"
    assert settings.memory.backend == "redis"
    assert settings.db_url.startswith("postgresql+psycopg://flashwatch:CHANGE_ME@postgres:5432/")
    assert settings.reasoner.url == "http://reasoner:8080"
    assert settings.reasoner.service_token is not None
    assert settings.api.host == "0.0.0.0" and settings.api.port == 8080
    if service.startswith("ingest"):
        assert settings.ingest.replica_count == 2
        assert settings.ingest.replica_index == int(service[-1])
        assert settings.ingest.camera_networks == ["192.168.10.0/24"]
    role = role_of(role_services(compose)[service])
    if role in ("encoder", "reasoner"):
        # The pipeline refuses to start these roles without a model directory.
        assert str(getattr(settings, role).model_dir).startswith("/models/")
        assert getattr(settings, role).device == ("cuda" if service.endswith("-gpu") else "cpu")


def test_topology(compose: dict[str, Any]) -> None:
    services = compose["services"]
    kafka = services["kafka"]["environment"]
    assert "controller" in kafka["KAFKA_PROCESS_ROLES"] and "zookeeper" not in str(kafka).lower()
    redis_cmd = services["redis"]["command"]
    assert redis_cmd[redis_cmd.index("--appendonly") + 1] == "yes"
    assert redis_cmd[redis_cmd.index("--maxmemory-policy") + 1] == "noeviction"
    # One alerts service, replicated: its replicas split the rule shards (advisory locks).
    alerts = [n for n, s in role_services(compose).items() if role_of(s) == "alerts"]
    assert alerts == ["alerts"] and services["alerts"]["deploy"]["replicas"] == 2
    assert int(services["alerts"]["environment"]["FW_ALERTS__SHARDS"]) >= 2
    assert "ports" not in services["alerts"] and "container_name" not in services["alerts"]
    # Two ingest shards with distinct indices of the same count.
    shards = {
        (s["environment"]["FW_INGEST__REPLICA_INDEX"], s["environment"]["FW_INGEST__REPLICA_COUNT"])
        for s in role_services(compose).values()
        if role_of(s) == "ingest"
    }
    assert shards == {("0", "2"), ("1", "2")}
    # The api role (which migrates the registry first) is the only role the others wait for.
    assert set(services["api"]["depends_on"]) == BACKENDS
    # Profiles: CPU encoder/reasoner vs GPU ones with a device reservation; the GPU reasoner
    # answers on the same name the api/alerts roles call.
    for role in ("encoder", "reasoner"):
        assert services[role]["profiles"] == ["cpu"]
        assert any(v.endswith(":/models:ro") for v in services[role]["volumes"])
        gpu = services[f"{role}-gpu"]
        assert gpu["profiles"] == ["gpu"]
        (device,) = gpu["deploy"]["resources"]["reservations"]["devices"]
        assert device["driver"] == "nvidia" and device["capabilities"] == ["gpu"]
        assert any(v.endswith(":/models:ro") for v in gpu["volumes"])
    assert services["reasoner-gpu"]["networks"]["default"]["aliases"] == ["reasoner"]
    for name, svc in role_services(compose).items():
        assert "profiles" in svc or "gpu" not in str(svc.get("deploy", "")), name
