"""The Helm chart, rendered offline by a small Go-template evaluator and validated.

No helm binary exists on the test machines, so this file carries an evaluator for the subset
of Go templates the chart uses: `{{- -}}` trimming, comments, `.Values`/`.Release`/`.Chart`
lookups, `$` and `$var`, `if`/`else`/`end`, `range` (lists and maps, with `$i`/`$k, $v :=`),
`define`/`include`, pipelines and the functions in `_FUNCS`. Anything else is an error, so a
template that leaves the subset fails here instead of rendering differently from helm.
Each rendered document is checked by hand (kinds, names, security, probes, GPUs, secrets,
NetworkPolicy egress) and, where `kubernetes-validate` is installed, against the Kubernetes
OpenAPI schemas (strict: unknown fields are errors).
"""

from __future__ import annotations

import copy
import ipaddress
import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from flashwatch.config import unknown_env_vars
from flashwatch.runtime import ROLES

CHART = Path(__file__).resolve().parents[3] / "deploy" / "helm" / "flashwatch"
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


# --------------------------------------------------------------------------- evaluator


class TemplateError(Exception):
    pass


_ACTION = re.compile(r"\{\{(-\s)?(.*?)(\s-)?\}\}", re.S)
_TOKEN = re.compile(
    r"""\s*(?:
      (?P<str>"(?:[^"\\]|\\.)*")
    | (?P<num>-?\d+(?:\.\d+)?)
    | (?P<var>\$[A-Za-z0-9_]*(?:\.[A-Za-z0-9_]+)*)
    | (?P<field>(?:\.[A-Za-z0-9_]+)+|\.)
    | (?P<assign>:=)
    | (?P<punct>[(),|])
    | (?P<ident>[A-Za-z_][A-Za-z0-9_]*)
    )""",
    re.X,
)


def _lex(source: str) -> list[tuple[str, str]]:
    out, pos = [], 0
    source = source.strip()
    while pos < len(source):
        m = _TOKEN.match(source, pos)
        if not m or m.end() == pos:
            raise TemplateError(f"cannot parse {source[pos:]!r}")
        kind = m.lastgroup
        assert kind is not None
        out.append((kind, m.group(kind)))
        pos = m.end()
        while pos < len(source) and source[pos].isspace():
            pos += 1
    return out


def _split_actions(text: str) -> list[tuple[str, str]]:
    """[('text', s) | ('action', body)] with `{{-`/`-}}` whitespace trimming applied."""
    parts: list[tuple[str, str]] = []
    pos, trim_next = 0, False
    for m in _ACTION.finditer(text):
        chunk = text[pos : m.start()]
        if trim_next:
            chunk = chunk.lstrip()
        if m.group(1):
            chunk = chunk.rstrip()
        parts.append(("text", chunk))
        parts.append(("action", m.group(2).strip()))
        trim_next = bool(m.group(3))
        pos = m.end()
    tail = text[pos:]
    parts.append(("text", tail.lstrip() if trim_next else tail))
    return parts


def _parse(parts: list[tuple[str, str]], i: int = 0, stop: tuple[str, ...] = ()) -> tuple:
    """Nodes until one of `stop` keywords; returns (nodes, index, stop_keyword, stop_body)."""
    nodes: list[Any] = []
    while i < len(parts):
        kind, body = parts[i]
        i += 1
        if kind == "text":
            if body:
                nodes.append(("text", body))
            continue
        if body.startswith("/*"):
            if not body.endswith("*/"):
                raise TemplateError(f"unterminated comment {body!r}")
            continue
        word = body.split(None, 1)[0]
        rest = body[len(word) :].strip()
        if word in ("end", "else"):
            if word not in stop:
                raise TemplateError(f"unexpected {{{{ {body} }}}}")
            return nodes, i, word, rest
        if word == "if":
            branches, else_nodes = [], []
            cond = rest
            while True:
                inner, i, kw, kw_rest = _parse(parts, i, ("end", "else"))
                branches.append((_lex(cond), inner))
                if kw == "end":
                    break
                if kw_rest.startswith("if "):
                    cond = kw_rest[3:]
                    continue
                else_nodes, i, _, _ = _parse(parts, i, ("end",))
                break
            nodes.append(("if", branches, else_nodes))
        elif word == "range":
            names: list[str] = []
            m = re.match(r"^(\$\w+)(?:\s*,\s*(\$\w+))?\s*:=\s*(.*)$", rest, re.S)
            if m:
                names = [n for n in (m.group(1), m.group(2)) if n]
                rest = m.group(3)
            inner, i, kw, _ = _parse(parts, i, ("end", "else"))
            if kw == "else":
                raise TemplateError("range/else is outside the supported subset")
            nodes.append(("range", names, _lex(rest), inner))
        elif word == "define":
            name = json.loads(rest)
            inner, i, _, _ = _parse(parts, i, ("end",))
            nodes.append(("define", name, inner))
        elif word in ("with", "block", "template", "break", "continue"):
            raise TemplateError(f"{{{{ {word} }}}} is outside the supported subset")
        else:
            nodes.append(("action", _lex(body)))
    if stop:
        raise TemplateError(f"missing {{{{ end }}}} (expected one of {stop})")
    return nodes, i, None, ""


def _go_str(value: Any) -> str:
    if value is None:
        raise TemplateError("printing a missing value")
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, dict | list):
        raise TemplateError(f"printing a {type(value).__name__}; use toYaml")
    return str(value)


def _truthy(value: Any) -> bool:
    return value not in (None, False, 0, "") and not (isinstance(value, dict | list) and not value)


def _indent(n: int, s: str) -> str:
    pad = " " * n
    return pad + s.replace("\n", "\n" + pad)


def _to_yaml(value: Any) -> str:
    return yaml.safe_dump(value, default_flow_style=False, sort_keys=True).rstrip("\n")


def _quote(*values: Any) -> str:
    return " ".join(json.dumps(_go_str(v)) for v in values if v is not None)


_FUNCS: dict[str, Callable[..., Any]] = {
    "toYaml": _to_yaml,
    "toJson": lambda v: json.dumps(v, separators=(",", ":")),
    "nindent": lambda n, s: "\n" + _indent(n, s),
    "indent": _indent,
    "quote": _quote,
    "until": lambda n: list(range(n)),
    "int": int,
    "list": lambda *a: list(a),
    "not": lambda v: not _truthy(v),
    "eq": lambda a, b: a == b,
    "default": lambda d, v=None: v if _truthy(v) else d,
}


class Renderer:
    def __init__(self, values: dict[str, Any], release: str = "fw", namespace: str = "default"):
        chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
        self.root = {
            "Values": values,
            "Release": {"Name": release, "Namespace": namespace, "Service": "Helm"},
            "Chart": {
                "Name": chart["name"],
                "Version": chart["version"],
                "AppVersion": chart["appVersion"],
            },
        }
        self.defines: dict[str, list[Any]] = {}
        self.files: dict[str, list[Any]] = {}
        for path in sorted((CHART / "templates").iterdir()):
            nodes, _, _, _ = _parse(_split_actions(path.read_text()))
            self._collect(nodes)
            self.files[path.name] = nodes

    def _collect(self, nodes: list[Any]) -> None:
        for node in nodes:
            if node[0] == "define":
                self.defines[node[1]] = node[2]

    # -- expressions
    def _lookup(self, base: Any, path: list[str], what: str) -> Any:
        for key in path:
            if not isinstance(base, dict) or key not in base:
                raise TemplateError(f"{what}: no key {key!r}")
            base = base[key]
        return base

    def _operand(self, tok: tuple[str, str], dot: Any, env: dict[str, Any]) -> Any:
        kind, text = tok
        if kind == "str":
            return json.loads(text)
        if kind == "num":
            return float(text) if "." in text else int(text)
        if kind == "field":
            return dot if text == "." else self._lookup(dot, text[1:].split("."), text)
        if kind == "var":
            name, *path = text.split(".")
            if name not in env:
                raise TemplateError(f"undefined variable {name}")
            return self._lookup(env[name], path, text)
        if kind == "ident" and text in ("true", "false"):
            return text == "true"
        raise TemplateError(f"unexpected {text!r}")

    def _pipeline(self, toks: list[tuple[str, str]], dot: Any, env: dict[str, Any]) -> Any:
        commands: list[list[tuple[str, str]]] = [[]]
        depth = 0
        for tok in toks:
            if tok == ("punct", "|") and depth == 0:
                commands.append([])
                continue
            depth += tok == ("punct", "(")
            depth -= tok == ("punct", ")")
            commands[-1].append(tok)
        value: Any = None
        for n, cmd in enumerate(commands):
            value = self._command(cmd, dot, env, piped=n > 0, value=value)
        return value

    def _args(self, toks: list[tuple[str, str]], dot: Any, env: dict[str, Any]) -> list[Any]:
        args, i = [], 0
        while i < len(toks):
            if toks[i] == ("punct", "("):
                depth, j = 1, i + 1
                while depth:
                    depth += toks[j] == ("punct", "(")
                    depth -= toks[j] == ("punct", ")")
                    j += 1
                args.append(self._pipeline(toks[i + 1 : j - 1], dot, env))
                i = j
            else:
                args.append(self._operand(toks[i], dot, env))
                i += 1
        return args

    def _command(self, cmd: list, dot: Any, env: dict, *, piped: bool, value: Any) -> Any:
        if not cmd:
            raise TemplateError("empty command")
        kind, text = cmd[0]
        if kind == "ident" and text not in ("true", "false"):
            args = self._args(cmd[1:], dot, env) + ([value] if piped else [])
            if text == "include":
                name, ctx = args
                if name not in self.defines:
                    raise TemplateError(f"include of undefined template {name!r}")
                return self._render(self.defines[name], ctx, {"$": self.root})
            if text not in _FUNCS:
                raise TemplateError(f"function {text!r} is outside the supported subset")
            return _FUNCS[text](*args)
        if piped:
            raise TemplateError(f"cannot pipe into {text!r}")
        args = self._args(cmd, dot, env)
        if len(args) != 1:
            raise TemplateError(f"{cmd!r}: one operand expected")
        return args[0]

    # -- statements
    def _render(self, nodes: list[Any], dot: Any, env: dict[str, Any]) -> str:
        out: list[str] = []
        for node in nodes:
            kind = node[0]
            if kind == "text":
                out.append(node[1])
            elif kind == "action":
                out.append(_go_str(self._pipeline(node[1], dot, env)))
            elif kind == "if":
                for cond, body in node[1]:
                    if _truthy(self._pipeline(cond, dot, env)):
                        out.append(self._render(body, dot, env))
                        break
                else:
                    out.append(self._render(node[2], dot, env))
            elif kind == "range":
                names, expr, body = node[1], node[2], node[3]
                seq = self._pipeline(expr, dot, env)
                items = sorted(seq.items()) if isinstance(seq, dict) else list(enumerate(seq or []))
                for key, item in items:
                    scope = dict(env)
                    if len(names) == 1:
                        scope[names[0]] = item
                    elif len(names) == 2:
                        scope[names[0]], scope[names[1]] = key, item
                    out.append(self._render(body, item, scope))
        return "".join(out)

    def render(self) -> dict[str, str]:
        """Rendered text per template file (helpers, whose names start with _, excluded)."""
        return {
            name: self._render(nodes, self.root, {"$": self.root})
            for name, nodes in self.files.items()
            if not name.startswith("_")
        }


def chart_values() -> dict[str, Any]:
    return yaml.safe_load((CHART / "values.yaml").read_text())


def render_docs(values: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    rendered = Renderer(chart_values() if values is None else values).render()
    docs = []
    for name, text in rendered.items():
        try:
            loaded = list(yaml.safe_load_all(text))
        except yaml.YAMLError as exc:
            pytest.fail(f"{name} renders to invalid YAML: {exc}\n{text}")
        docs += [d for d in loaded if d is not None]
    return docs


def by_kind(docs: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for d in docs if d["kind"] == kind}


@pytest.fixture(scope="module")
def docs() -> list[dict[str, Any]]:
    return render_docs()


# --------------------------------------------------------------------------- evaluator tests


def _render_snippet(tmp: str, values: dict[str, Any]) -> str:
    r = Renderer(values)
    nodes, _, _, _ = _parse(_split_actions(tmp))
    return r._render(nodes, r.root, {"$": r.root})


def test_evaluator_trimming_range_and_functions() -> None:
    values = {"m": {"b": 2, "a": 1}, "l": ["x", "y"], "on": True, "off": False}
    tmp = (
        "a:\n{{- range $k, $v := .Values.m }}\n  {{ $k }}: {{ $v | quote }}\n{{- end }}\n"
        "l: {{ .Values.l | toJson | quote }}\n"
        "{{- if .Values.off }}\nno\n{{- else if .Values.on }}\nyes: {{ until 2 | toJson }}\n"
        "{{- end }}\n"
        "n:{{- toYaml .Values.m | nindent 2 }}"
    )
    out = _render_snippet(tmp, values)
    assert out == 'a:\n  a: "1"\n  b: "2"\nl: "[\\"x\\",\\"y\\"]"\nyes: [0,1]\nn:\n  a: 1\n  b: 2'


def test_evaluator_refuses_unknown_functions_and_keys() -> None:
    with pytest.raises(TemplateError, match="outside the supported subset"):
        _render_snippet("{{ .Values.a | upper }}", {"a": "x"})
    with pytest.raises(TemplateError, match="no key"):
        _render_snippet("{{ .Values.missing }}", {"a": "x"})


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
    kv = pytest.importorskip("kubernetes_validate")
    for d in docs:
        try:
            kv.validate(d, K8S_VERSION, strict=True)
        except kv.ValidationError as exc:
            pytest.fail(f"{d['kind']} {d['metadata']['name']}: {exc.message} at {exc.path}")
    # The validator is live: an unknown field in a rendered Deployment is refused.
    broken = copy.deepcopy(by_kind(docs, "Deployment")["fw-api"])
    broken["spec"]["template"]["spec"]["containers"][0]["readinesProbe"] = {}
    with pytest.raises(kv.ValidationError):
        kv.validate(broken, K8S_VERSION, strict=True)


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


def test_overrides_existing_secret_no_cameras_no_autoscaling() -> None:
    values = copy.deepcopy(chart_values())
    values["secrets"].update(create=False, existingSecret="site-secrets")
    values["ingest"]["cameraNetworks"] = []
    values["ingest"]["replicaCount"] = 3
    values["encoder"]["autoscaling"]["enabled"] = False
    values["networkPolicy"]["kafka"]["to"] = []
    docs = render_docs(values)
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
