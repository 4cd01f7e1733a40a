"""Registry tables (sqlmodel): cameras, their credentials, rules, alerts, API tokens.

Credentials live in their own table so no query that builds a public camera view can
reach them by accident; `CameraPublic` (in `flashwatch.api.schemas`) has no credential
field at all (STYLE.md §8). Times are stored as timezone-aware UTC on every backend.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.types import TypeDecorator
from sqlmodel import Field, SQLModel


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on SQLite too (which would hand back naive ones)."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime stored in the registry; use timezone-aware UTC")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Camera(SQLModel, table=True):
    __tablename__ = "camera"

    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(max_length=100, unique=True, index=True)
    url: str = Field(max_length=2048, description="Stream URL without userinfo.")
    sample_interval_s: float = 1.0
    pyramid_levels: int = 3
    enabled: bool = True
    labels: dict[str, str] = Field(default_factory=dict, sa_type=sa.JSON)
    timezone: str = Field(default="UTC", max_length=64)
    source_start_at: datetime | None = Field(
        default=None, sa_type=UTCDateTime, description="Wall-clock time of a file's first frame."
    )
    # Status, written by ingest.
    state: str = Field(default="pending", max_length=16)
    last_error: str | None = Field(default=None, max_length=500)
    last_frame_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    epoch: int = 0
    reconnects: int = 0
    status_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    updated_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)


class CameraCredential(SQLModel, table=True):
    """Username/password of a camera, apart from its URL and never serialised to users."""

    __tablename__ = "camera_credential"

    camera_id: int = Field(
        sa_column=sa.Column(
            sa.Integer, sa.ForeignKey("camera.id", ondelete="CASCADE"), primary_key=True
        )
    )
    username: str | None = Field(default=None, max_length=256)
    password: str | None = Field(default=None, max_length=256)

    def __repr__(self) -> str:
        return f"CameraCredential(camera_id={self.camera_id}, username=***, password=***)"

    __str__ = __repr__


class Rule(SQLModel, table=True):
    __tablename__ = "rule"

    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(max_length=100, unique=True, index=True)
    text: str = Field(max_length=1000)
    mode: str = Field(default="alert", max_length=8)
    camera_ids: list[int] | None = Field(default=None, sa_type=sa.JSON)
    camera_labels: dict[str, str] | None = Field(default=None, sa_type=sa.JSON)
    all_cameras: bool = False
    window_s: float = 64.0
    step_s: float = 8.0
    threshold: float = 0.5
    hysteresis_k: int = 2
    hysteresis_n: int = 3
    cooldown_s: float = 300.0
    severity: str = Field(default="medium", max_length=8)
    active_hours: list[dict[str, Any]] | None = Field(default=None, sa_type=sa.JSON)
    sinks: list[dict[str, Any]] = Field(default_factory=list, sa_type=sa.JSON)
    enabled: bool = True
    backfill_s: float = 0.0
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    updated_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)


class Alert(SQLModel, table=True):
    __tablename__ = "alert"
    __table_args__ = (sa.Index("ix_alert_camera_created", "camera_id", "created_at"),)

    id: int | None = Field(default=None, primary_key=True)
    dedup_key: str = Field(max_length=200, unique=True)
    rule_id: int = Field(
        sa_column=sa.Column(
            sa.Integer, sa.ForeignKey("rule.id", ondelete="CASCADE"), nullable=False, index=True
        )
    )
    camera_id: int = Field(
        sa_column=sa.Column(
            sa.Integer, sa.ForeignKey("camera.id", ondelete="CASCADE"), nullable=False, index=True
        )
    )
    kind: str = Field(default="alert", max_length=8)
    severity: str = Field(default="medium", max_length=8)
    window_start: datetime = Field(sa_type=UTCDateTime)
    window_end: datetime = Field(sa_type=UTCDateTime)
    score: float = 0.0
    reason: str = Field(default="", max_length=2000)
    evidence: list[float] = Field(default_factory=list, sa_type=sa.JSON)
    thumbnail: bytes | None = Field(default=None, sa_type=sa.LargeBinary)
    backfilled: bool = False
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime, index=True)
    acknowledged_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    acknowledged_by: str | None = Field(default=None, max_length=100)
    resolved_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    resolved_by: str | None = Field(default=None, max_length=100)


class ApiToken(SQLModel, table=True):
    """A bearer token: only its SHA-256 is stored; `prefix` identifies it to people."""

    __tablename__ = "api_token"

    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(max_length=100)
    token_hash: str = Field(max_length=64, unique=True, index=True)
    prefix: str = Field(max_length=16)
    role: str = Field(max_length=8)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    last_used_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    revoked_at: datetime | None = Field(default=None, sa_type=UTCDateTime)

    def __repr__(self) -> str:
        return (
            f"ApiToken(id={self.id}, name={self.name!r}, prefix={self.prefix!r}, role={self.role})"
        )

    __str__ = __repr__


ROLES = ("viewer", "operator", "admin")
CAMERA_STATES = ("pending", "connecting", "online", "offline", "auth_failed", "error", "disabled")


# ------------------------------------------------------------------------------ alerts state
# Written by the alerts component (migration 0002). Window times are UNIX seconds (floats):
# the scheduler aligns them arithmetically to step boundaries, and they match memory's clip
# times exactly; wall-clock times stay timezone-aware UTC like everywhere else.


def _rule_fk() -> Any:
    return sa.Column(sa.Integer, sa.ForeignKey("rule.id", ondelete="CASCADE"), primary_key=True)


def _camera_fk() -> Any:
    return sa.Column(sa.Integer, sa.ForeignKey("camera.id", ondelete="CASCADE"), primary_key=True)


class AlertRuleState(SQLModel, table=True):
    """Evaluation state of one (rule, camera): where it got to, its recent pass/fail results
    and its cooldown, so a restarted scheduler resumes without losing or repeating alerts."""

    __tablename__ = "alert_rule_state"

    rule_id: int = Field(sa_column=_rule_fk())
    camera_id: int = Field(sa_column=_camera_fk())
    last_end: float | None = None
    history: list[bool] = Field(default_factory=list, sa_type=sa.JSON)
    last_fired_end: float | None = None
    cooldown_until: float | None = None
    last_p_yes: float | None = None
    evaluations: int = 0
    skipped: int = 0
    last_skip_end: float | None = None
    last_skip_reason: str | None = Field(default=None, max_length=200)
    updated_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)


class AlertDelivery(SQLModel, table=True):
    """Outbox: one row per (alert, sink), written in the alert's transaction and drained by
    the delivery worker, so a crash between the two never loses a notification."""

    __tablename__ = "alert_delivery"
    __table_args__ = (
        sa.UniqueConstraint("alert_id", "sink_index", name="uq_alert_delivery_sink"),
        sa.Index("ix_alert_delivery_due", "status", "next_attempt_at"),
    )

    id: int | None = Field(default=None, primary_key=True)
    alert_id: int = Field(
        sa_column=sa.Column(
            sa.Integer, sa.ForeignKey("alert.id", ondelete="CASCADE"), nullable=False, index=True
        )
    )
    sink_index: int = 0
    sink_type: str = Field(max_length=8)
    target: str = Field(max_length=2048, description="Webhook URL or topic, fixed at firing.")
    status: str = Field(default="pending", max_length=10)
    attempts: int = 0
    next_attempt_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    last_error: str | None = Field(default=None, max_length=500)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    delivered_at: datetime | None = Field(default=None, sa_type=UTCDateTime)


class AlertBackfill(SQLModel, table=True):
    """Progress of a rule's backfill over one camera's stored history (resumable)."""

    __tablename__ = "alert_backfill"

    rule_id: int = Field(sa_column=_rule_fk())
    camera_id: int = Field(sa_column=_camera_fk())
    t_from: float
    t_to: float
    next_end: float
    status: str = Field(default="pending", max_length=10)
    windows_total: int = 0
    windows_done: int = 0
    skipped: int = 0
    alerts: int = 0
    history: list[bool] = Field(default_factory=list, sa_type=sa.JSON)
    cooldown_until: float | None = None
    last_error: str | None = Field(default=None, max_length=500)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    updated_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
