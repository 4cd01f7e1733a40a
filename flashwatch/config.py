"""Typed configuration: one pydantic-settings root with a section per component.

Sources, highest priority first: explicit keyword arguments, environment variables
(`FW_` prefix, `__` between section and field, e.g. `FW_API__PORT=9000`), an optional
TOML or YAML file (`FW_CONFIG=/path/flashwatch.toml` or `--config`), then defaults.
A few common settings also have short env aliases (`FW_DB_URL`, `FW_REDIS_URL`,
`FW_KAFKA_BOOTSTRAP`) because deployment tooling expects them.

Every field has a default, a bound and a description; unknown keys are errors (a typo
in a config file or a `FW_` variable must not be silently ignored); secrets are
`SecretStr` so `repr` and `config show` never print them.
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

ENV_PREFIX = "FW_"
# Short aliases accepted for the most common deployment settings.
ENV_ALIASES: dict[str, tuple[str, str]] = {
    "FW_DB_URL": ("db", "url"),
    "FW_REDIS_URL": ("memory", "redis_url"),
    "FW_KAFKA_BOOTSTRAP": ("bus", "kafka_bootstrap"),
    "FW_DATA_DIR": ("data_dir", ""),
    "FW_CONFIG": ("", ""),  # the file path itself, not a setting
}


class ConfigError(Exception):
    """A configuration problem, already phrased as one line per field for the operator."""


class Section(BaseModel):
    """Base for config sections: unknown keys are errors, assignments are validated."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class ApiConfig(Section):
    host: str = Field("127.0.0.1", min_length=1, max_length=255, description="Bind address.")
    port: int = Field(8080, ge=1, le=65535, description="TCP port of the REST API.")
    max_body_bytes: int = Field(
        1_048_576, ge=1024, le=64 * 1_048_576, description="Largest accepted request body."
    )
    default_page_size: int = Field(50, ge=1, le=1000, description="Page size when none given.")
    max_page_size: int = Field(500, ge=1, le=10_000, description="Largest page size accepted.")
    max_query_range_s: float = Field(
        7 * 86400.0, gt=0, le=366 * 86400.0, description="Longest time range a query may span."
    )
    max_rules: int = Field(
        10_000, ge=1, le=1_000_000, description="Most rules the registry accepts in total."
    )
    max_concurrent_queries: int = Field(
        4, ge=1, le=1024, description="Queries admitted at once; more get 429 + Retry-After."
    )
    bootstrap_admin_token: SecretStr | None = Field(
        None,
        description=(
            "If set, an admin token with this value exists at start-up. If unset and no token "
            "exists, `serve` writes a new one to <data_dir>/admin.token (mode 0600)."
        ),
    )
    metrics_public: bool = Field(
        False, description="Serve /metrics without a token (only on a private network)."
    )
    sse_poll_s: float = Field(
        1.0, gt=0, le=60, description="How often the alert stream checks for new alerts."
    )


class DbConfig(Section):
    url: SecretStr | None = Field(
        None,
        description=(
            "SQLAlchemy URL of the registry, e.g. postgresql+psycopg://user:pw@host/db. "
            "Default: SQLite file <data_dir>/flashwatch.db."
        ),
    )
    pool_size: int = Field(5, ge=1, le=100, description="Connection pool size (PostgreSQL).")
    echo: bool = Field(False, description="Log SQL statements (debugging only).")


class BusConfig(Section):
    kind: Literal["inprocess", "kafka"] = Field(
        "inprocess", description="Message bus: in-process queues or Kafka."
    )
    queue_size: int = Field(
        1024, ge=1, le=1_000_000, description="In-process queue bound; oldest dropped beyond."
    )
    kafka_bootstrap: str = Field(
        "127.0.0.1:9092", min_length=3, max_length=1024, description="Kafka bootstrap servers."
    )
    kafka_sasl_username: str | None = Field(None, max_length=256, description="SASL user.")
    kafka_sasl_password: SecretStr | None = Field(None, description="SASL password.")
    clips_topic: str = Field("fw.clips", min_length=1, max_length=249, description="Clip topic.")
    clips_partitions: int = Field(
        12, ge=1, le=1024, description="Partitions of the clip topic when FlashWatch creates it."
    )
    alerts_topic: str = Field(
        "fw.alerts", min_length=1, max_length=249, description="Alert event topic."
    )
    dead_letter_topic: str = Field(
        "fw.dead-letter", min_length=1, max_length=249, description="Undecodable messages."
    )

    @model_validator(mode="after")
    def _sasl_pair(self) -> BusConfig:
        if (self.kafka_sasl_username is None) != (self.kafka_sasl_password is None):
            raise ValueError("kafka_sasl_username and kafka_sasl_password must be set together")
        return self


class IngestConfig(Section):
    level0_interval_s: float = Field(
        1.0, ge=0.05, le=60, description="Level-0 sampling interval s0 (seconds of stream)."
    )
    pyramid_levels: int = Field(
        3, ge=1, le=6, description="Levels emitted; level k samples every s0*4^k seconds."
    )
    open_timeout_s: float = Field(10.0, gt=0, le=120, description="RTSP open timeout.")
    read_timeout_s: float = Field(5.0, gt=0, le=120, description="RTSP read timeout.")
    stall_timeout_s: float = Field(
        10.0, gt=0, le=600, description="No frame for this long restarts the reader."
    )
    backoff_initial_s: float = Field(1.0, gt=0, le=60, description="First reconnect delay.")
    backoff_max_s: float = Field(60.0, gt=0, le=3600, description="Reconnect delay cap.")
    stable_uptime_s: float = Field(
        60.0, gt=0, le=86400, description="Uptime after which the backoff resets."
    )
    allow_loopback: bool = Field(False, description="Allow camera URLs on loopback addresses.")
    allow_link_local: bool = Field(
        False, description="Allow cameras on link-local addresses (metadata stays refused)."
    )
    allow_private: bool = Field(
        False, description="Allow cameras on any private network (or list them in networks)."
    )
    camera_networks: list[str] = Field(
        default_factory=list,
        max_length=256,
        description="CIDRs where cameras live; allowed even when private.",
    )
    allow_file_sources: bool = Field(
        False, description="Allow file:// sources (importing footage, the demo)."
    )
    file_realtime: bool = Field(
        False,
        description="Replay file sources at their own frame rate, like a live camera (the "
        "demo); off: import as fast as they decode.",
    )
    thumb_width: int = Field(320, ge=32, le=1920, description="Thumbnail width in pixels.")
    jpeg_quality: int = Field(90, ge=30, le=100, description="JPEG quality of encoder frames.")
    replica_index: int = Field(0, ge=0, le=1023, description="This ingest replica's index.")
    replica_count: int = Field(1, ge=1, le=1024, description="Number of ingest replicas.")

    @model_validator(mode="after")
    def _check(self) -> IngestConfig:
        if self.replica_index >= self.replica_count:
            raise ValueError(
                f"replica_index {self.replica_index} must be < replica_count {self.replica_count}"
            )
        if self.backoff_initial_s > self.backoff_max_s:
            raise ValueError(
                f"backoff_initial_s {self.backoff_initial_s} exceeds "
                f"backoff_max_s {self.backoff_max_s}"
            )
        return self


class EncoderConfig(Section):
    backend: Literal["torch", "onnxruntime", "tensorrt"] = Field(
        "torch", description="Encoder backend."
    )
    model_dir: Path | None = Field(
        None, description="VideoChat-Flash model directory (default: the bundled tiny model)."
    )
    device: str = Field("cpu", pattern=r"^(cpu|cuda(:\d+)?)$", description="Torch device.")
    dtype: Literal["fp32", "fp16", "bf16"] = Field("fp32", description="Compute precision.")
    max_batch: int = Field(8, ge=1, le=256, description="Most clips encoded in one call.")
    batch_timeout_ms: int = Field(50, ge=0, le=10_000, description="Longest wait to fill a batch.")
    engine_cache_dir: Path | None = Field(
        None, description="Where ONNX files and TensorRT engines are cached (default data_dir)."
    )


class MemoryConfig(Section):
    backend: Literal["embedded", "redis"] = Field(
        "embedded", description="Token store: embedded SQLite or Redis."
    )
    redis_url: SecretStr | None = Field(
        None, description="Redis URL (redis:// or rediss://); selects the Redis backend."
    )
    token_dtype: Literal["fp16", "int8"] = Field(
        "fp16", description="Storage precision of clip tokens (int8 uses per-token scales)."
    )
    retention_hours: list[float] = Field(
        default_factory=lambda: [6.0, 48.0, 168.0],
        min_length=1,
        max_length=6,
        description="Retention per level; the last value applies to higher levels.",
    )

    @model_validator(mode="after")
    def _check(self) -> MemoryConfig:
        bad = [h for h in self.retention_hours if not 0 < h <= 24 * 3660]
        if bad:
            raise ValueError(f"retention_hours values must be in (0, 87840], got {bad}")
        if self.redis_url is not None and self.backend == "embedded":
            self.backend = "redis"
        if self.backend == "redis" and self.redis_url is None:
            raise ValueError("backend 'redis' needs redis_url (FW_REDIS_URL)")
        return self


class ReasonerConfig(Section):
    model_dir: Path | None = Field(
        None, description="VideoChat-Flash model directory (default: the bundled tiny model)."
    )
    url: str | None = Field(
        None, max_length=2048, description="Remote reasoner service URL (distributed mode)."
    )
    device: str = Field("cpu", pattern=r"^(cpu|cuda(:\d+)?)$", description="Torch device.")
    dtype: Literal["fp32", "fp16", "bf16"] = Field("fp32", description="Compute precision.")
    drop_mode: Literal["none", "uniform", "attention", "uniform0_attention"] = Field(
        "uniform0_attention", description="Progressive visual-token dropping mode."
    )
    drop_layers: list[int] = Field(
        default_factory=lambda: [4, 18], max_length=16, description="Layers where tokens drop."
    )
    drop_ratios: list[float] = Field(
        default_factory=lambda: [1.0, 0.75, 0.25],
        max_length=17,
        description="Kept fraction before the first drop layer and after each drop layer.",
    )
    frame_budget: int = Field(
        512, ge=64, le=4096, description="Most frames one query feeds the model."
    )
    max_new_tokens: int = Field(128, ge=1, le=2048, description="Answer length cap.")
    timeout_s: float = Field(60.0, gt=0, le=600, description="Remote reasoner call timeout.")
    service_token: SecretStr | None = Field(
        None, description="Bearer token between the API/alerts roles and the reasoner service."
    )

    @model_validator(mode="after")
    def _check(self) -> ReasonerConfig:
        if self.drop_mode != "none" and len(self.drop_ratios) != len(self.drop_layers) + 1:
            raise ValueError(
                f"drop_ratios needs len(drop_layers)+1 = {len(self.drop_layers) + 1} values, "
                f"got {len(self.drop_ratios)}"
            )
        if any(not 0 < r <= 1 for r in self.drop_ratios):
            raise ValueError(f"drop_ratios must be in (0, 1], got {self.drop_ratios}")
        if sorted(self.drop_layers) != self.drop_layers or len(set(self.drop_layers)) != len(
            self.drop_layers
        ):
            raise ValueError(f"drop_layers must be strictly increasing, got {self.drop_layers}")
        return self


class AlertsConfig(Section):
    default_window_s: float = Field(64.0, ge=4, le=3600, description="Default rule window.")
    default_step_s: float = Field(8.0, ge=1, le=3600, description="Default evaluation step.")
    default_threshold: float = Field(0.5, ge=0, le=1, description="Default P(yes) threshold.")
    hysteresis_k: int = Field(2, ge=1, le=100, description="Fire when k of the last n pass.")
    hysteresis_n: int = Field(3, ge=1, le=100, description="Evaluations considered.")
    default_cooldown_s: float = Field(300.0, ge=0, le=86400 * 7, description="Default cooldown.")
    webhook_enabled: bool = Field(
        False, description="Allow webhook sinks (then webhook_secret is required)."
    )
    webhook_secret: SecretStr | None = Field(
        None, description="HMAC-SHA256 key signing every webhook request."
    )
    webhook_timeout_s: float = Field(5.0, gt=0, le=60, description="Webhook request timeout.")
    webhook_max_retries: int = Field(6, ge=0, le=50, description="Retries before failure.")
    webhook_allow_http: bool = Field(False, description="Allow plain-http webhook URLs.")
    webhook_allow_private: bool = Field(
        False, description="Allow webhook targets on private or loopback addresses."
    )
    mqtt_host: str | None = Field(
        None, max_length=255, description="MQTT broker for mqtt sinks (none: mqtt sinks off)."
    )
    mqtt_port: int = Field(1883, ge=1, le=65535, description="MQTT broker port.")
    shards: int = Field(
        1,
        ge=1,
        le=1024,
        description=(
            "Rule shards (camera -> shard by a stable hash). Each shard is scheduled by exactly "
            "one alerts replica (PostgreSQL advisory lock); set at least the replica count, the "
            "same on every replica."
        ),
    )
    leadership_poll_s: float = Field(
        2.0,
        ge=0.1,
        le=60,
        description=(
            "How often an alerts replica checks its shard locks and takes free shards "
            "(failover takes about one period; a partitioned replica stops after three)."
        ),
    )

    @model_validator(mode="after")
    def _check(self) -> AlertsConfig:
        if self.hysteresis_k > self.hysteresis_n:
            raise ValueError(
                f"hysteresis_k {self.hysteresis_k} exceeds hysteresis_n {self.hysteresis_n}"
            )
        if self.default_step_s > self.default_window_s:
            raise ValueError(
                f"default_step_s {self.default_step_s} exceeds "
                f"default_window_s {self.default_window_s}"
            )
        if self.webhook_enabled and self.webhook_secret is None:
            raise ValueError(
                "webhook_secret is required while webhook_enabled is true "
                "(set FW_ALERTS__WEBHOOK_SECRET or webhook_enabled=false)"
            )
        return self


class Settings(BaseSettings):
    """The effective FlashWatch configuration."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter="__",
        extra="forbid",
        validate_default=True,
        case_sensitive=False,
    )

    data_dir: Path = Field(
        Path("data"), description="Directory for the SQLite registry, memory and caches."
    )
    mode: Literal["embedded", "distributed"] = Field(
        "embedded", description="embedded: all roles in one process; distributed: one per process."
    )
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(
        "INFO", description="Log level."
    )
    log_json: bool = Field(False, description="Structured JSON logs.")
    api: ApiConfig = Field(default_factory=ApiConfig, description="REST API.")
    db: DbConfig = Field(default_factory=DbConfig, description="SQL registry.")
    bus: BusConfig = Field(default_factory=BusConfig, description="Message bus.")
    ingest: IngestConfig = Field(default_factory=IngestConfig, description="Camera ingest.")
    encoder: EncoderConfig = Field(default_factory=EncoderConfig, description="Clip encoder.")
    memory: MemoryConfig = Field(default_factory=MemoryConfig, description="Token memory.")
    reasoner: ReasonerConfig = Field(default_factory=ReasonerConfig, description="Reasoner.")
    alerts: AlertsConfig = Field(default_factory=AlertsConfig, description="Alert rules.")

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (
            init_settings,
            env_settings,
            _AliasEnvSource(settings_cls),
            _FileSource(settings_cls),
        )

    @property
    def db_url(self) -> str:
        """The registry URL with the SQLite default resolved (a secret: do not log it)."""
        if self.db.url is not None:
            return self.db.url.get_secret_value()
        return f"sqlite:///{(self.data_dir / 'flashwatch.db').resolve()}"


class _AliasEnvSource(PydanticBaseSettingsSource):
    """Maps the short env aliases (FW_DB_URL, ...) onto their nested fields."""

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for name, (section, key) in ENV_ALIASES.items():
            if not section or name not in os.environ:
                continue
            if key:
                out.setdefault(section, {})[key] = os.environ[name]
            else:
                out[section] = os.environ[name]
        return out


class _FileSource(PydanticBaseSettingsSource):
    """Reads the TOML or YAML file named by FW_CONFIG (or load_settings(config_file=...))."""

    path: Path | None = None

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        raw = _FileSource.path or os.environ.get("FW_CONFIG")
        if not raw:
            return {}
        return read_config_file(Path(raw))


def read_config_file(path: Path) -> dict[str, Any]:
    """Parse a TOML (.toml) or YAML (.yaml/.yml) config file into a mapping."""
    if not path.is_file():
        raise ConfigError(f"config file {path}: not found")
    text = path.read_text(encoding="utf-8")
    try:
        if path.suffix == ".toml":
            data: Any = tomllib.loads(text)
        elif path.suffix in (".yaml", ".yml"):
            data = yaml.safe_load(text) or {}
        else:
            raise ConfigError(f"config file {path}: use a .toml, .yaml or .yml file")
    except (tomllib.TOMLDecodeError, yaml.YAMLError) as exc:
        raise ConfigError(f"config file {path}: cannot parse: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path}: the top level must be a mapping")
    return data


def _known_env_names() -> set[str]:
    names = {ENV_PREFIX + name.upper() for name in Settings.model_fields}
    for name, field in Settings.model_fields.items():
        ann = field.annotation
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            names |= {f"{ENV_PREFIX}{name}__{sub}".upper() for sub in ann.model_fields}
    return names | set(ENV_ALIASES)


def unknown_env_vars(environ: dict[str, str] | None = None) -> list[str]:
    """FW_ variables that match no setting: typos that would otherwise be ignored."""
    env = os.environ if environ is None else environ
    known = _known_env_names()
    ignored = {"FW_TEST_REDIS_URL", "FW_TEST_PG_URL", "FW_TEST_MQTT", "FW_CI_PYTEST_ARGS"}
    return sorted(
        k
        for k in env
        if k.upper().startswith(ENV_PREFIX)
        and k.upper() not in known
        and k.upper() not in ignored
        and not k.upper().startswith("FW_TEST_")
    )


def format_validation_error(exc: ValidationError) -> str:
    """One line per problem, naming the dotted field and the bound that failed."""
    lines = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"]) or "(root)"
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = "unknown setting"
        lines.append(f"config error: {loc}: {msg}")
    return "\n".join(lines)


def load_settings(config_file: Path | None = None, **overrides: Any) -> Settings:
    """Build the effective settings or raise ConfigError with one line per bad field."""
    unknown = unknown_env_vars()
    if unknown:
        raise ConfigError(
            "\n".join(f"config error: environment variable {k}: unknown setting" for k in unknown)
        )
    _FileSource.path = config_file
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc)) from None
    finally:
        _FileSource.path = None


def redacted_dump(settings: Settings) -> dict[str, Any]:
    """The effective config as plain data with every secret shown as '**********'."""
    return settings.model_dump(mode="json")


__all__ = [
    "AlertsConfig",
    "ApiConfig",
    "BusConfig",
    "ConfigError",
    "DbConfig",
    "EncoderConfig",
    "IngestConfig",
    "MemoryConfig",
    "ReasonerConfig",
    "Settings",
    "load_settings",
    "read_config_file",
    "redacted_dump",
]
