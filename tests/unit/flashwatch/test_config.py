"""Config: defaults load, bad input gives one line naming the field, secrets stay hidden."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from flashwatch.cli import app
from flashwatch.config import ConfigError, load_settings, redacted_dump


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in list(__import__("os").environ):
        if key.upper().startswith("FW_") and not key.upper().startswith("FW_TEST_"):
            monkeypatch.delenv(key)


def one_line(exc: pytest.ExceptionInfo[ConfigError]) -> str:
    text = str(exc.value)
    assert "\n" not in text, text
    return text


def test_defaults_are_valid_and_embedded() -> None:
    s = load_settings()
    assert (s.mode, s.bus.kind, s.memory.backend, s.api.port) == (
        "embedded",
        "inprocess",
        "embedded",
        8080,
    )
    assert s.db_url.startswith("sqlite:///") and s.db_url.endswith("flashwatch.db")
    assert s.reasoner.drop_layers == [4, 18] and s.reasoner.drop_ratios == [1.0, 0.75, 0.25]


def test_env_nested_and_short_aliases(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FW_API__PORT", "9001")
    monkeypatch.setenv("FW_DB_URL", "postgresql+psycopg://fw:hunter22@db/fw")
    monkeypatch.setenv("FW_REDIS_URL", "redis://:pw@redis:6379/0")
    s = load_settings()
    assert s.api.port == 9001
    assert s.db_url == "postgresql+psycopg://fw:hunter22@db/fw"
    assert s.memory.backend == "redis"
    assert "hunter22" not in repr(s) and "hunter22" not in str(redacted_dump(s))


def test_unknown_env_setting_is_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FW_API__PROT", "9001")
    with pytest.raises(ConfigError) as exc:
        load_settings()
    assert one_line(exc) == "config error: environment variable FW_API__PROT: unknown setting"


def test_bad_bound_names_field_and_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FW_API__PORT", "70000")
    with pytest.raises(ConfigError) as exc:
        load_settings()
    assert one_line(exc) == "config error: api.port: Input should be less than or equal to 65535"


def test_missing_secret_names_field(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FW_ALERTS__WEBHOOK_ENABLED", "true")
    with pytest.raises(ConfigError) as exc:
        load_settings()
    line = one_line(exc)
    assert line.startswith("config error: alerts:") and "webhook_secret is required" in line
    monkeypatch.setenv("FW_ALERTS__WEBHOOK_SECRET", "s" * 32)
    assert load_settings().alerts.webhook_enabled


@pytest.mark.parametrize(
    ("name", "text"),
    [
        ("fw.toml", "[api]\nport = 9\nprot = 1\n"),
        ("fw.yaml", "api:\n  port: 9\n  prot: 1\n"),
    ],
)
def test_unknown_key_in_file(tmp_path: Path, name: str, text: str) -> None:
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(ConfigError) as exc:
        load_settings(config_file=path)
    assert one_line(exc) == "config error: api.prot: unknown setting"


def test_file_values_and_env_precedence(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "fw.toml"
    path.write_text('[api]\nport = 9100\nhost = "0.0.0.0"\n[ingest]\npyramid_levels = 2\n')
    monkeypatch.setenv("FW_API__PORT", "9200")
    s = load_settings(config_file=path)
    assert (s.api.host, s.api.port, s.ingest.pyramid_levels) == ("0.0.0.0", 9200, 2)


def test_cross_field_checks_quote_the_numbers() -> None:
    with pytest.raises(ConfigError) as exc:
        load_settings(reasoner={"drop_layers": [4, 18], "drop_ratios": [1.0, 0.5]})
    assert "drop_ratios needs len(drop_layers)+1 = 3 values, got 2" in one_line(exc)
    with pytest.raises(ConfigError) as exc:
        load_settings(ingest={"replica_index": 2, "replica_count": 2})
    assert "replica_index 2 must be < replica_count 2" in one_line(exc)


def test_config_show_redacts_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FW_DB_URL", "postgresql+psycopg://fw:hunter22@db/fw")
    monkeypatch.setenv("FW_API__BOOTSTRAP_ADMIN_TOKEN", "fw_bootstrap_secret_value")
    for args in (["config", "show"], ["config", "show", "--json"]):
        result = CliRunner().invoke(app, args)
        assert result.exit_code == 0, result.output
        assert "hunter22" not in result.output and "fw_bootstrap_secret_value" not in result.output
        assert "**********" in result.output


def test_cli_config_error_exit_code(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FW_API__PORT", "0")
    result = CliRunner().invoke(app, ["config", "show"])
    assert result.exit_code == 3
    assert "api.port" in result.output
