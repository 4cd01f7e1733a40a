"""Registry operations shared by the API and the role runners (cameras, rules, tokens).

Validation that needs the config (camera URL policy) or other rows (rule cross-checks,
camera references) lives here, so the API and any other caller enforce the same rules.
"""

from __future__ import annotations

import base64
import binascii
from datetime import UTC, datetime
from typing import Any

from sqlmodel import Session, col, func, select

from flashwatch.api.errors import ApiError, field_error
from flashwatch.api.schemas import (
    CameraCreate,
    CameraPublic,
    CameraStatusPublic,
    CameraUpdate,
    RuleCreate,
    RulePublic,
    RuleUpdate,
    check_rule_consistency,
)
from flashwatch.config import AlertsConfig
from flashwatch.db.models import ApiToken, Camera, CameraCredential, Rule
from flashwatch.security import (
    WEBHOOK_HINTS,
    NetworkPolicy,
    UrlPolicyError,
    hash_token,
    new_token,
    validate_camera_url,
    validate_webhook_url,
)


def webhook_policy(cfg: AlertsConfig) -> NetworkPolicy:
    return NetworkPolicy(
        allow_loopback=cfg.webhook_allow_private,
        allow_private=cfg.webhook_allow_private,
        hints=WEBHOOK_HINTS,
    )


# ---------------------------------------------------------------- cursors


def encode_cursor(last_id: int) -> str:
    return base64.urlsafe_b64encode(f"id:{last_id}".encode()).decode().rstrip("=")


def decode_cursor(cursor: str | None) -> int | None:
    if cursor is None:
        return None
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        if not raw.startswith("id:"):
            raise ValueError
        value = int(raw[3:])
        if value < 0 or value > 2**62:
            raise ValueError
        return value
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise field_error("query.cursor", "not a cursor returned by this API") from None


# ---------------------------------------------------------------- cameras


def camera_public(cam: Camera, has_credentials: bool) -> CameraPublic:
    assert cam.id is not None
    return CameraPublic(
        id=cam.id,
        name=cam.name,
        url=cam.url,
        has_credentials=has_credentials,
        sample_interval_s=cam.sample_interval_s,
        pyramid_levels=cam.pyramid_levels,
        enabled=cam.enabled,
        labels=cam.labels,
        timezone=cam.timezone,
        source_start_at=cam.source_start_at,
        created_at=cam.created_at,
        updated_at=cam.updated_at,
    )


def camera_status(cam: Camera) -> CameraStatusPublic:
    assert cam.id is not None
    return CameraStatusPublic(
        id=cam.id,
        name=cam.name,
        enabled=cam.enabled,
        state=cam.state if cam.enabled else "disabled",
        last_error=cam.last_error,
        last_frame_at=cam.last_frame_at,
        epoch=cam.epoch,
        reconnects=cam.reconnects,
        status_at=cam.status_at,
    )


def has_credentials(session: Session, camera_id: int) -> bool:
    cred = session.get(CameraCredential, camera_id)
    return cred is not None and (cred.username is not None or cred.password is not None)


def _check_url(
    url: str, policy: NetworkPolicy, username: str | None, password: str | None
) -> tuple[str, str | None, str | None]:
    try:
        parsed = validate_camera_url(url, policy, username=username, password=password)
    except UrlPolicyError as exc:
        raise field_error("body.url", str(exc)) from None
    return parsed.url, parsed.username, parsed.password


def _check_source_start(url: str, start: datetime | None) -> None:
    is_file = url.lower().startswith("file:")
    if is_file and start is None:
        raise field_error(
            "body.source_start_at", "a file:// source needs the wall-clock time of its first frame"
        )
    if not is_file and start is not None:
        raise field_error("body.source_start_at", "only file:// sources have a start time")


def _name_taken(
    session: Session, model: type[Camera] | type[Rule], name: str, own: int | None
) -> bool:
    row = session.exec(select(model).where(model.name == name)).first()
    return row is not None and getattr(row, "id", None) != own


def create_camera(session: Session, data: CameraCreate, policy: NetworkPolicy) -> Camera:
    password = data.password.get_secret_value() if data.password is not None else None
    url, username, password = _check_url(data.url, policy, data.username, password)
    if _name_taken(session, Camera, data.name, None):
        raise ApiError(409, "conflict", f"a camera named {data.name!r} already exists")
    _check_source_start(url, data.source_start_at)
    cam = Camera(
        name=data.name,
        url=url,
        source_start_at=data.source_start_at,
        sample_interval_s=data.sample_interval_s,
        pyramid_levels=data.pyramid_levels,
        enabled=data.enabled,
        labels=data.labels,
        timezone=data.timezone,
    )
    session.add(cam)
    session.flush()
    assert cam.id is not None
    if username is not None or password is not None:
        session.add(CameraCredential(camera_id=cam.id, username=username, password=password))
    session.commit()
    return cam


def update_camera(
    session: Session, cam: Camera, data: CameraUpdate, policy: NetworkPolicy
) -> Camera:
    assert cam.id is not None
    fields = data.model_dump(exclude_unset=True)
    for key in ("name", "sample_interval_s", "pyramid_levels", "enabled", "labels", "timezone"):
        if key in fields and fields[key] is None:
            raise field_error(f"body.{key}", "may not be null")
    if "name" in fields and _name_taken(session, Camera, fields["name"], cam.id):
        raise ApiError(409, "conflict", f"a camera named {fields['name']!r} already exists")
    cred = session.get(CameraCredential, cam.id)
    touches_creds = {"url", "username", "password"} & fields.keys()
    if touches_creds:
        username = fields.get("username", cred.username if cred else None)
        password_secret = data.password if "password" in fields else None
        password = (
            password_secret.get_secret_value()
            if password_secret is not None
            else (None if "password" in fields else (cred.password if cred else None))
        )
        url = fields.get("url") or cam.url
        url, username, password = _check_url(url, policy, username, password)
        cam.url = url
        if cred is None:
            cred = CameraCredential(camera_id=cam.id)
        cred.username, cred.password = username, password
        session.add(cred)
    if touches_creds or "source_start_at" in fields:
        _check_source_start(cam.url, fields.get("source_start_at", cam.source_start_at))
    keys = ("name", "sample_interval_s", "pyramid_levels", "enabled", "labels", "timezone")
    for key in (*keys, "source_start_at"):
        if key in fields:
            setattr(cam, key, fields[key])
    cam.updated_at = datetime.now(UTC)
    session.add(cam)
    session.commit()
    return cam


def delete_camera(session: Session, cam: Camera) -> None:
    """Delete a camera, its credentials and alerts (cascade), and its rules.

    A rule that names only this camera goes with it; a rule naming several keeps the others.
    """
    assert cam.id is not None
    for rule in session.exec(select(Rule).where(col(Rule.camera_ids).is_not(None))).all():
        ids = list(rule.camera_ids or [])
        if cam.id in ids:
            ids.remove(cam.id)
            if ids:
                rule.camera_ids = ids
                session.add(rule)
            else:
                session.delete(rule)
    session.delete(cam)  # credentials and alerts go by ON DELETE CASCADE
    session.commit()


# ---------------------------------------------------------------- rules


RULE_DEFAULT_KEYS = (
    "window_s",
    "step_s",
    "threshold",
    "hysteresis_k",
    "hysteresis_n",
    "cooldown_s",
)


def rule_public(rule: Rule) -> RulePublic:
    return RulePublic.model_validate(rule, from_attributes=True)


def _validate_rule_values(
    session: Session, values: dict[str, Any], cfg: AlertsConfig, policy: NetworkPolicy
) -> None:
    ids = values.get("camera_ids")
    intervals: list[float] = []
    if ids:
        cams = session.exec(select(Camera).where(col(Camera.id).in_(ids))).all()
        missing = sorted(set(ids) - {c.id for c in cams})
        if missing:
            raise field_error("body.camera_ids", f"unknown camera ids {missing[:20]}")
        intervals = [c.sample_interval_s for c in cams]
    min_window = 4 * max(intervals, default=1.0)
    try:
        check_rule_consistency(values, min_window_s=min_window)
    except ValueError as exc:
        raise field_error("body", str(exc)) from None
    for i, sink in enumerate(values.get("sinks") or []):
        if sink["type"] == "webhook":
            if not cfg.webhook_enabled:
                raise field_error(
                    f"body.sinks.{i}", "webhook sinks are disabled (alerts.webhook_enabled)"
                )
            try:
                validate_webhook_url(sink["url"], policy, allow_http=cfg.webhook_allow_http)
            except UrlPolicyError as exc:
                raise field_error(f"body.sinks.{i}.url", str(exc)) from None


def create_rule(session: Session, data: RuleCreate, cfg: AlertsConfig, *, max_rules: int) -> Rule:
    if _name_taken(session, Rule, data.name, None):
        raise ApiError(409, "conflict", f"a rule named {data.name!r} already exists")
    values = data.model_dump(mode="json")
    defaults = {
        "window_s": cfg.default_window_s,
        "step_s": cfg.default_step_s,
        "threshold": cfg.default_threshold,
        "hysteresis_k": cfg.hysteresis_k,
        "hysteresis_n": cfg.hysteresis_n,
        "cooldown_s": cfg.default_cooldown_s,
        "mode": "alert",
        "severity": "medium",
        "all_cameras": False,
        "sinks": [],
        "enabled": True,
    }
    for key, default in defaults.items():
        if values.get(key) is None:
            values[key] = default
    _validate_rule_values(session, values, cfg, webhook_policy(cfg))
    count = session.exec(select(func.count()).select_from(Rule)).one()
    if count >= max_rules:
        raise ApiError(409, "limit_reached", f"the registry holds the maximum of {max_rules} rules")
    rule = Rule(**values)
    session.add(rule)
    session.commit()
    return rule


def update_rule(session: Session, rule: Rule, data: RuleUpdate, cfg: AlertsConfig) -> Rule:
    changes = data.model_dump(mode="json", exclude_unset=True)
    nullable = {"camera_ids", "camera_labels", "active_hours"}
    for key, value in changes.items():
        if value is None and key not in nullable:
            raise field_error(f"body.{key}", "may not be null")
    if "name" in changes and _name_taken(session, Rule, changes["name"], rule.id):
        raise ApiError(409, "conflict", f"a rule named {changes['name']!r} already exists")
    values = rule.model_dump() | changes
    selection = [
        values.get("camera_ids") is not None,
        values.get("camera_labels") is not None,
        bool(values.get("all_cameras")),
    ]
    if sum(selection) != 1:
        raise field_error(
            "body", "choose cameras with exactly one of camera_ids, camera_labels or all_cameras"
        )
    _validate_rule_values(session, values, cfg, webhook_policy(cfg))
    for key, value in changes.items():
        setattr(rule, key, value)
    rule.updated_at = datetime.now(UTC)
    session.add(rule)
    session.commit()
    return rule


# ---------------------------------------------------------------- tokens


def create_token(
    session: Session, name: str, role: str, value: str | None = None
) -> tuple[ApiToken, str]:
    """Store a new token's hash; returns the row and the token (shown once)."""
    token = value or new_token()
    row = ApiToken(name=name, role=role, token_hash=hash_token(token), prefix=token[:8])
    session.add(row)
    session.commit()
    session.refresh(row)  # loaded now, so the row stays readable after the session closes
    return row, token


def ensure_token(session: Session, name: str, role: str, value: str) -> ApiToken:
    """Make sure a token with this value exists (bootstrap admin token from config)."""
    digest = hash_token(value)
    row = session.exec(select(ApiToken).where(ApiToken.token_hash == digest)).first()
    if row is not None:
        return row
    row, _ = create_token(session, name, role, value)
    return row
