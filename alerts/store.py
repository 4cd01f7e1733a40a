"""Registry access for the alerts component: which rules watch which camera, evaluation state,
alert rows and their delivery outbox.

Every outcome of one window (state of each rule, any alert, one outbox row per sink) is written
in ONE transaction. So after a crash either nothing of that window happened (it is evaluated
again and, being the same window, gets the same dedup key) or all of it did; an alert can never
exist without its pending notifications, and a notification never exists without its alert.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from alerts.policy import RuleState
from flashwatch.db.models import Alert, AlertDelivery, AlertRuleState, Camera, Rule, utcnow
from flashwatch.messages import AlertEvent

SEVERITIES = ("info", "low", "medium", "high", "critical")

log = logging.getLogger("flashwatch.alerts")


def ts(t: float) -> datetime:
    """UNIX seconds as an aware UTC datetime (how the registry stores times)."""
    return datetime.fromtimestamp(t, UTC)


def rule_selects(rule: Rule, camera: Camera) -> bool:
    """Whether `rule` watches `camera`: listed by id, matched by every label, or all."""
    if rule.all_cameras:
        return True
    if rule.camera_ids is not None:
        return camera.id in rule.camera_ids
    if rule.camera_labels is not None:
        labels = camera.labels or {}
        return all(labels.get(k) == v for k, v in rule.camera_labels.items())
    return False


def watch_plan(session: Session) -> list[tuple[Camera, list[Rule]]]:
    """Enabled cameras with the enabled rules watching each (cameras without rules left out)."""
    cameras = session.exec(select(Camera).where(col(Camera.enabled)).order_by(col(Camera.id)))
    rules = list(session.exec(select(Rule).where(col(Rule.enabled)).order_by(col(Rule.id))))
    plan: list[tuple[Camera, list[Rule]]] = []
    for cam in cameras:
        mine = [r for r in rules if rule_selects(r, cam)]
        if mine:
            plan.append((cam, mine))
    return plan


def load_states(session: Session, camera_id: int, rule_ids: Iterable[int]) -> dict[int, RuleState]:
    ids = list(rule_ids)
    rows = session.exec(
        select(AlertRuleState).where(
            AlertRuleState.camera_id == camera_id, col(AlertRuleState.rule_id).in_(ids)
        )
    )
    return {
        r.rule_id: RuleState(
            last_end=r.last_end,
            history=tuple(bool(x) for x in r.history),
            last_fired_end=r.last_fired_end,
            cooldown_until=r.cooldown_until,
        )
        for r in rows
    }


@dataclass
class AlertDraft:
    """An alert (or report) ready to persist; nothing is written until `commit_window`."""

    rule: Rule
    camera: Camera
    kind: str
    window_start: float
    window_end: float
    score: float
    reason: str = ""
    evidence: list[float] = field(default_factory=list)
    thumbnail: bytes | None = None
    backfilled: bool = False
    notify: bool = True
    needs_text: bool = False
    """The reason (or report answer) is still to be generated (see scheduler)."""
    hold_s: float = 0.0
    """Hold notifications this long for that text; `set_text` releases them earlier."""

    @property
    def dedup_key(self) -> str:
        from alerts.policy import dedup_key

        assert self.rule.id is not None and self.camera.id is not None
        return dedup_key(self.rule.id, self.camera.id, self.window_start, self.window_end)


@dataclass
class StateUpdate:
    """The new state of one (rule, camera) after one window, evaluated or skipped."""

    rule_id: int
    camera_id: int
    state: RuleState
    p_yes: float | None = None
    skip_reason: str | None = None
    skipped: int = 1
    """Windows this skip stands for (several when a lagging scheduler drops old windows)."""


def _apply_state(session: Session, up: StateUpdate, now: datetime) -> None:
    row = session.get(AlertRuleState, (up.rule_id, up.camera_id))
    if row is None:
        row = AlertRuleState(rule_id=up.rule_id, camera_id=up.camera_id)
    row.last_end = up.state.last_end
    row.history = list(up.state.history)
    row.last_fired_end = up.state.last_fired_end
    row.cooldown_until = up.state.cooldown_until
    if up.skip_reason is None:
        row.evaluations += 1
        row.last_p_yes = up.p_yes
    else:
        row.skipped += up.skipped
        row.last_skip_end = up.state.last_end
        row.last_skip_reason = up.skip_reason[:200]
    row.updated_at = now
    session.add(row)


def insert_alert(session: Session, draft: AlertDraft, now: datetime) -> Alert | None:
    """Add the alert and its outbox rows; None when the dedup key already exists (replay)."""
    key = draft.dedup_key
    if session.exec(select(Alert.id).where(Alert.dedup_key == key)).first() is not None:
        return None
    assert draft.rule.id is not None and draft.camera.id is not None
    alert = Alert(
        dedup_key=key,
        rule_id=draft.rule.id,
        camera_id=draft.camera.id,
        kind=draft.kind,
        severity=draft.rule.severity,
        window_start=ts(draft.window_start),
        window_end=ts(draft.window_end),
        score=float(draft.score),
        reason=draft.reason[:2000],
        evidence=list(draft.evidence),
        thumbnail=draft.thumbnail,
        backfilled=draft.backfilled,
        created_at=now,
    )
    session.add(alert)
    session.flush()  # assigns alert.id for the outbox rows
    assert alert.id is not None
    if draft.notify:
        for i, sink in enumerate(draft.rule.sinks or []):
            session.add(outbox_row(alert.id, i, sink, now + timedelta(seconds=draft.hold_s)))
    return alert


def outbox_row(alert_id: int, index: int, sink: dict[str, Any], now: datetime) -> AlertDelivery:
    kind = str(sink.get("type", ""))
    target = str(sink.get("url") if kind == "webhook" else sink.get("topic", ""))
    return AlertDelivery(
        alert_id=alert_id,
        sink_index=index,
        sink_type=kind[:8],
        target=target[:2048],
        next_attempt_at=now,
        created_at=now,
    )


def commit_window(
    engine: Engine, updates: Sequence[StateUpdate], drafts: Sequence[AlertDraft]
) -> list[Alert]:
    """Persist one window's outcome atomically; returns the alerts that were new.

    If another scheduler committed the same window first (two alerts roles during a
    rollout), the unique state and dedup keys make this transaction fail whole: nothing is
    written twice, and the window counts as done.
    """
    now = utcnow()
    created: list[Alert] = []
    with Session(engine, expire_on_commit=False) as session:
        try:
            for up in updates:
                _apply_state(session, up, now)
            for draft in drafts:
                alert = insert_alert(session, draft, now)
                if alert is not None:
                    created.append(alert)
            session.commit()
        except IntegrityError:
            session.rollback()
            log.info("window already committed by another scheduler; skipped")
            return []
    return created


def set_text(engine: Engine, alert_id: int, text: str) -> None:
    """Store a late reason/answer and release the alert's held notifications now."""
    now = utcnow()
    with Session(engine, expire_on_commit=False) as session:
        alert = session.get(Alert, alert_id)
        if alert is None:
            return
        if text:
            alert.reason = text[:2000]
            session.add(alert)
        held = session.exec(
            select(AlertDelivery).where(
                AlertDelivery.alert_id == alert_id,
                AlertDelivery.status == "pending",
                AlertDelivery.attempts == 0,
            )
        )
        for row in held:
            row.next_attempt_at = min(row.next_attempt_at, now)
            session.add(row)
        session.commit()


def alert_event(alert: Alert, rule_name: str, camera_name: str) -> AlertEvent:
    """The wire form of an alert for sinks (webhook JSON, Kafka msgpack, MQTT JSON)."""
    assert alert.id is not None
    severity = alert.severity if alert.severity in SEVERITIES else "medium"
    kind: Literal["alert", "report"] = "report" if alert.kind == "report" else "alert"
    return AlertEvent(
        alert_id=alert.id,
        dedup_key=alert.dedup_key,
        rule_id=alert.rule_id,
        rule_name=rule_name,
        camera_id=alert.camera_id,
        camera_name=camera_name,
        kind=kind,
        severity=severity,  # type: ignore[arg-type]  # checked against SEVERITIES above
        window_start=alert.window_start.timestamp(),
        window_end=alert.window_end.timestamp(),
        score=min(1.0, max(0.0, alert.score)),
        reason=alert.reason,
        evidence=[float(t) for t in alert.evidence],
        backfilled=alert.backfilled,
        created_at=alert.created_at.timestamp(),
    )
