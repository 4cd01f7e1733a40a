"""Request and response models of the REST API (STYLE.md §8 layering).

`*Create` / `*Update` are what a client may send: unknown or read-only fields are 422.
`*Public` are the allow-list of what leaves the server; `CameraPublic` has no credential
field at all, only `has_credentials`.
"""

from __future__ import annotations

import re
import zoneinfo
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SecretStr,
    StringConstraints,
    field_validator,
    model_validator,
)

Name = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=100)]


def _iso_only(value: object) -> object:
    if isinstance(value, int | float) or (isinstance(value, str) and _NUMBER.fullmatch(value)):
        raise ValueError("use an ISO-8601 time with offset, e.g. 2026-11-26T09:00:00Z")
    return value


_NUMBER = re.compile(r"\s*[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?\s*")
IsoDatetime = Annotated[datetime, BeforeValidator(_iso_only)]
RowId = Annotated[int, Field(ge=1, le=2**31 - 1)]
LABEL_KEY = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,62}$")
HHMM = re.compile(r"^([01]\d|2[0-3]):[0-5]\d$")
Severity = Literal["info", "low", "medium", "high", "critical"]
Role = Literal["viewer", "operator", "admin"]


def _check_labels(labels: dict[str, str] | None) -> dict[str, str] | None:
    if labels is None:
        return None
    if len(labels) > 32:
        raise ValueError(f"at most 32 labels, got {len(labels)}")
    for k, v in labels.items():
        if not LABEL_KEY.match(k):
            raise ValueError(f"label key {k[:70]!r} must match [a-z0-9][a-z0-9_.-]{{0,62}}")
        if len(v) > 63:
            raise ValueError(f"label {k!r}: value longer than 63 characters")
    return labels


def _check_timezone(tz: str | None) -> str | None:
    if tz is None:
        return None
    try:
        zoneinfo.ZoneInfo(tz)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown IANA time zone {tz[:64]!r}") from None
    return tz


Labels = Annotated[dict[str, str], AfterValidator(_check_labels)]
TimeZone = Annotated[str, StringConstraints(max_length=64), AfterValidator(_check_timezone)]


class StrictModel(BaseModel):
    model_config = ConfigDict(extra="forbid", str_max_length=4096)


# ---------------------------------------------------------------- errors


class FieldError(BaseModel):
    field: str = Field(description="Dotted location, e.g. body.url or query.limit.")
    message: str


class ErrorResponse(BaseModel):
    """Every non-2xx answer has this shape."""

    code: str = Field(description="Stable machine-readable error code.")
    message: str = Field(description="What went wrong, for people.")
    errors: list[FieldError] = Field(default_factory=list)


# ---------------------------------------------------------------- cameras


class CameraCreate(StrictModel):
    name: Name
    url: str = Field(
        min_length=1,
        max_length=2048,
        description="rtsp:// or rtsps:// URL. Userinfo is split off and stored as credentials.",
    )
    username: str | None = Field(None, max_length=256)
    password: SecretStr | None = Field(None, max_length=256)
    sample_interval_s: float = Field(1.0, ge=0.05, le=60)
    pyramid_levels: int = Field(3, ge=1, le=6)
    enabled: bool = True
    labels: Labels = Field(default_factory=dict)
    timezone: TimeZone = "UTC"
    source_start_at: IsoDatetime | None = Field(
        None,
        description="For file:// sources (imported footage): the wall-clock time of the "
        "file's first frame. Required for files, refused for live cameras.",
    )


class CameraUpdate(StrictModel):
    name: Name | None = None
    url: str | None = Field(None, min_length=1, max_length=2048)
    username: str | None = Field(None, max_length=256)
    password: SecretStr | None = Field(None, max_length=256)
    sample_interval_s: float | None = Field(None, ge=0.05, le=60)
    pyramid_levels: int | None = Field(None, ge=1, le=6)
    enabled: bool | None = None
    labels: Labels | None = None
    timezone: TimeZone | None = None
    source_start_at: IsoDatetime | None = None


class CameraPublic(BaseModel):
    id: int
    name: str
    url: str
    has_credentials: bool
    sample_interval_s: float
    pyramid_levels: int
    enabled: bool
    labels: dict[str, str]
    timezone: str
    source_start_at: datetime | None
    created_at: datetime
    updated_at: datetime


class CameraStatusPublic(BaseModel):
    id: int
    name: str
    enabled: bool
    state: str
    last_error: str | None
    last_frame_at: datetime | None
    epoch: int
    reconnects: int
    status_at: datetime | None


# ---------------------------------------------------------------- rules


class WebhookSink(StrictModel):
    type: Literal["webhook"]
    url: str = Field(min_length=1, max_length=2048)


class KafkaSink(StrictModel):
    type: Literal["kafka"]
    topic: str = Field(min_length=1, max_length=249, pattern=r"^[A-Za-z0-9._-]+$")


class MqttSink(StrictModel):
    type: Literal["mqtt"]
    topic: str = Field(min_length=1, max_length=256, pattern=r"^[^#+\x00]+$")


Sink = Annotated[WebhookSink | KafkaSink | MqttSink, Field(discriminator="type")]


class ActiveWindow(StrictModel):
    """Hours when a rule is active, in the camera's local time zone."""

    days: list[Annotated[int, Field(ge=0, le=6)]] = Field(
        default_factory=lambda: list(range(7)),
        min_length=1,
        max_length=7,
        description="0 = Monday ... 6 = Sunday.",
    )
    start: str = Field(pattern=HHMM.pattern, description="HH:MM, inclusive.")
    end: str = Field(pattern=HHMM.pattern, description="HH:MM, exclusive; before start wraps.")


class _RuleFields(StrictModel):
    text: str | None = Field(None, min_length=1, max_length=1000)
    mode: Literal["alert", "report"] | None = None
    camera_ids: list[RowId] | None = Field(None, max_length=1000)
    camera_labels: Labels | None = None
    all_cameras: bool | None = None
    window_s: float | None = Field(None, ge=4, le=3600)
    step_s: float | None = Field(None, ge=1, le=3600)
    threshold: float | None = Field(None, ge=0, le=1)
    hysteresis_k: int | None = Field(None, ge=1, le=100)
    hysteresis_n: int | None = Field(None, ge=1, le=100)
    cooldown_s: float | None = Field(None, ge=0, le=7 * 86400)
    severity: Severity | None = None
    active_hours: list[ActiveWindow] | None = Field(None, max_length=14)
    sinks: list[Sink] | None = Field(None, max_length=16)
    enabled: bool | None = None


class RuleCreate(_RuleFields):
    name: Name
    text: str = Field(min_length=1, max_length=1000)
    backfill_s: float = Field(
        0, ge=0, le=7 * 86400, description="Evaluate over this much stored history at creation."
    )

    @model_validator(mode="after")
    def _selection(self) -> RuleCreate:
        chosen = [
            self.camera_ids is not None,
            self.camera_labels is not None,
            bool(self.all_cameras),
        ]
        if sum(chosen) != 1:
            raise ValueError(
                "choose cameras with exactly one of camera_ids, camera_labels or all_cameras"
            )
        return self


class RuleUpdate(_RuleFields):
    name: Name | None = None


class RulePublic(BaseModel):
    id: int
    name: str
    text: str
    mode: str
    camera_ids: list[int] | None
    camera_labels: dict[str, str] | None
    all_cameras: bool
    window_s: float
    step_s: float
    threshold: float
    hysteresis_k: int
    hysteresis_n: int
    cooldown_s: float
    severity: str
    active_hours: list[ActiveWindow] | None
    sinks: list[Sink]
    enabled: bool
    backfill_s: float
    created_at: datetime
    updated_at: datetime


def check_rule_consistency(values: dict[str, Any], *, min_window_s: float) -> None:
    """Cross-field rule checks on the merged (stored + update) values; raises ValueError."""
    if values["step_s"] > values["window_s"]:
        raise ValueError(f"step_s {values['step_s']} exceeds window_s {values['window_s']}")
    if values["window_s"] < min_window_s:
        raise ValueError(
            f"window_s {values['window_s']} is shorter than 4 sampled frames "
            f"({min_window_s} s at the cameras' sample interval)"
        )
    if values["hysteresis_k"] > values["hysteresis_n"]:
        raise ValueError(
            f"hysteresis_k {values['hysteresis_k']} exceeds hysteresis_n {values['hysteresis_n']}"
        )


# ---------------------------------------------------------------- alerts


class AlertPublic(BaseModel):
    id: int
    rule_id: int
    camera_id: int
    kind: str
    severity: str
    window_start: datetime
    window_end: datetime
    score: float
    reason: str
    evidence: list[float]
    has_thumbnail: bool
    backfilled: bool
    created_at: datetime
    acknowledged_at: datetime | None
    acknowledged_by: str | None
    resolved_at: datetime | None
    resolved_by: str | None


class AlertPage(BaseModel):
    items: list[AlertPublic]
    next_cursor: str | None = Field(description="Pass as `cursor` to get the next page.")


class CameraPage(BaseModel):
    items: list[CameraPublic]
    next_cursor: str | None


class RulePage(BaseModel):
    items: list[RulePublic]
    next_cursor: str | None


# ---------------------------------------------------------------- queries


class QueryCreate(StrictModel):
    question: str = Field(min_length=1, max_length=4000)
    camera_ids: list[RowId] = Field(min_length=1, max_length=16)
    since: IsoDatetime
    until: IsoDatetime | None = Field(None, description="Default: now.")
    strategy: Literal["auto", "pyramid", "zoom", "sparse"] = "auto"

    @field_validator("since", "until")
    @classmethod
    def _aware(cls, v: datetime | None) -> datetime | None:
        if v is not None and v.tzinfo is None:
            raise ValueError("timestamps need a time zone offset, e.g. 2026-11-26T09:00:00Z")
        return v


class AnswerTimePublic(BaseModel):
    text: str = Field(description="The time as the answer wrote it.")
    at: datetime = Field(description="That moment in wall-clock time.")
    camera_id: int


class QueryResult(BaseModel):
    answer: str
    times: list[AnswerTimePublic] = Field(description="Times the answer mentions, resolved.")
    evidence: list[datetime] = Field(description="Clips the model attended to most.")
    strategy: str = Field(description="pyramid, zoom or sparse: how the range was read.")
    level: int = Field(description="Memory pyramid level read (0: one frame per s0).")
    frames: int
    duration_s: float = Field(description="Duration stated to the model.")
    tokens_visual: int = Field(description="Visual tokens in the prompt.")
    tokens_kept: int = Field(description="Visual tokens left after progressive dropping.")
    timings: dict[str, float] = Field(description="Seconds per stage (plan, fetch, prefill ...).")
    latency_s: float


# ---------------------------------------------------------------- tokens


class TokenCreate(StrictModel):
    name: Name
    role: Role


class TokenPublic(BaseModel):
    id: int
    name: str
    prefix: str
    role: str
    created_at: datetime
    last_used_at: datetime | None
    revoked_at: datetime | None


class TokenCreated(TokenPublic):
    token: str = Field(description="The bearer token. Shown once; only its hash is stored.")


class Health(BaseModel):
    status: Literal["ok"]
    version: str


class Readiness(BaseModel):
    ready: bool
    checks: dict[str, bool]
