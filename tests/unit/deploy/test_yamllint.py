"""yamllint over the hand-written YAML in deploy/ (skipped where yamllint is not installed)."""

from __future__ import annotations

from pathlib import Path

import pytest

DEPLOY = Path(__file__).resolve().parents[3] / "deploy"
CONFIG = """
extends: default
rules:
  line-length: {max: 140}
  document-start: disable
  truthy: {check-keys: false}
  braces: {max-spaces-inside: 1}
  comments: {min-spaces-from-content: 1}
"""


@pytest.mark.parametrize(
    "rel", ["compose.yaml", "helm/flashwatch/Chart.yaml", "helm/flashwatch/values.yaml"]
)
def test_yamllint_clean(rel: str) -> None:
    linter = pytest.importorskip("yamllint.linter")
    from yamllint.config import YamlLintConfig

    path = DEPLOY / rel
    problems = list(linter.run(path.read_text(), YamlLintConfig(CONFIG), str(path)))
    assert not problems, [f"{rel}:{p.line}:{p.column} {p.desc}" for p in problems]
