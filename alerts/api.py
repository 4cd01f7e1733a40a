"""Read-only API routes over the alerts component's own tables: backfill progress, evaluation
state per camera (including skipped windows and why), each alert's deliveries, and a list of
deliveries by state (final failures stay visible there). Viewer role; the composition root
includes `router` in the app.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Query
from pydantic import BaseModel
from sqlmodel import col, select

from alerts.backfill import progress
from flashwatch.api.deps import IdPath, SessionDep, ViewerDep, reject_unknown_query
from flashwatch.api.errors import not_found, responses
from flashwatch.db.models import Alert, AlertDelivery, AlertRuleState, Rule

router = APIRouter(
    tags=["alerts"],
    responses=responses(401, 403, 404, 422),
    dependencies=[Depends(reject_unknown_query)],
)


class BackfillPublic(BaseModel):
    camera_id: int
    status: str
    t_from: float
    t_to: float
    next_end: float
    windows_total: int
    windows_done: int
    skipped: int
    alerts: int
    fraction_done: float
    last_error: str | None


class EvaluationPublic(BaseModel):
    camera_id: int
    last_end: float | None
    history: list[bool]
    cooldown_until: float | None
    last_p_yes: float | None
    evaluations: int
    skipped: int
    last_skip_end: float | None
    last_skip_reason: str | None
    updated_at: datetime


class DeliveryPublic(BaseModel):
    id: int
    alert_id: int
    sink_index: int
    sink_type: str
    status: str
    attempts: int
    next_attempt_at: datetime
    last_error: str | None
    created_at: datetime
    delivered_at: datetime | None


def _rule(session: SessionDep, rule_id: int) -> Rule:
    rule = session.get(Rule, rule_id)
    if rule is None:
        raise not_found("rule", rule_id)
    return rule


@router.get("/v1/rules/{rule_id}/backfill", response_model=list[BackfillPublic])
def rule_backfill(rule_id: IdPath, session: SessionDep, _: ViewerDep) -> list[BackfillPublic]:
    """Backfill progress of a rule, one entry per camera (empty: no backfill asked or yet)."""
    _rule(session, rule_id)
    return [
        BackfillPublic(
            camera_id=b.camera_id,
            status=b.status,
            t_from=b.t_from,
            t_to=b.t_to,
            next_end=b.next_end,
            windows_total=b.windows_total,
            windows_done=b.windows_done,
            skipped=b.skipped,
            alerts=b.alerts,
            last_error=b.last_error,
            fraction_done=1.0 if b.windows_total == 0 else b.windows_done / b.windows_total,
        )
        for b in progress(session, rule_id)
    ]


@router.get("/v1/rules/{rule_id}/evaluation", response_model=list[EvaluationPublic])
def rule_evaluation(rule_id: IdPath, session: SessionDep, _: ViewerDep) -> list[EvaluationPublic]:
    """Where live evaluation of a rule stands on each camera, including skipped windows."""
    _rule(session, rule_id)
    rows = session.exec(
        select(AlertRuleState)
        .where(AlertRuleState.rule_id == rule_id)
        .order_by(col(AlertRuleState.camera_id))
    ).all()
    return [
        EvaluationPublic.model_validate(r, from_attributes=True).model_copy(
            update={"history": [bool(x) for x in r.history]}
        )
        for r in rows
    ]


@router.get("/v1/alerts/{alert_id}/deliveries", response_model=list[DeliveryPublic])
def alert_deliveries(alert_id: IdPath, session: SessionDep, _: ViewerDep) -> list[DeliveryPublic]:
    """Notification attempts of an alert per sink (target not shown: URLs may hold tokens)."""
    if session.get(Alert, alert_id) is None:
        raise not_found("alert", alert_id)
    rows = session.exec(
        select(AlertDelivery)
        .where(AlertDelivery.alert_id == alert_id)
        .order_by(col(AlertDelivery.sink_index))
    ).all()
    return [DeliveryPublic.model_validate(r, from_attributes=True) for r in rows]


@router.get("/v1/alert-deliveries", response_model=list[DeliveryPublic])
def list_deliveries(
    session: SessionDep,
    _: ViewerDep,
    status: Annotated[Literal["pending", "delivered", "failed"], Query()] = "failed",
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> list[DeliveryPublic]:
    """Newest deliveries in one state; by default the final failures an operator should see."""
    rows = session.exec(
        select(AlertDelivery)
        .where(AlertDelivery.status == status)
        .order_by(col(AlertDelivery.id).desc())
        .limit(limit)
    ).all()
    return [DeliveryPublic.model_validate(r, from_attributes=True) for r in rows]
