"""Alerts: filtered cursor-paginated list, acknowledge/resolve, thumbnails, live stream.

The stream (server-sent events) polls the registry for alerts newer than the last one
sent, so it works the same in one process and behind several API replicas.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Depends, Header, Query, Request, Response
from fastapi.responses import StreamingResponse
from sqlmodel import Session, col, select

from flashwatch import registry
from flashwatch.api.deps import (
    IdPath,
    IdQuery,
    OperatorDep,
    SessionDep,
    StateDep,
    ViewerDep,
    page_size,
    reject_unknown_query,
)
from flashwatch.api.errors import ApiError, field_error, not_found, responses
from flashwatch.api.schemas import AlertPage, AlertPublic, IsoDatetime
from flashwatch.db.models import Alert

router = APIRouter(
    prefix="/v1/alerts",
    tags=["alerts"],
    responses=responses(400, 401, 403, 422),
    dependencies=[Depends(reject_unknown_query)],
)


def alert_public(a: Alert) -> AlertPublic:
    assert a.id is not None
    return AlertPublic(
        id=a.id,
        rule_id=a.rule_id,
        camera_id=a.camera_id,
        kind=a.kind,
        severity=a.severity,
        window_start=a.window_start,
        window_end=a.window_end,
        score=a.score,
        reason=a.reason,
        evidence=a.evidence,
        has_thumbnail=a.thumbnail is not None,
        backfilled=a.backfilled,
        created_at=a.created_at,
        acknowledged_at=a.acknowledged_at,
        acknowledged_by=a.acknowledged_by,
        resolved_at=a.resolved_at,
        resolved_by=a.resolved_by,
    )


def _get(session: Session, alert_id: int) -> Alert:
    alert = session.get(Alert, alert_id)
    if alert is None:
        raise not_found("alert", alert_id)
    return alert


@router.get("", response_model=AlertPage)
def list_alerts(
    session: SessionDep,
    state: StateDep,
    _: ViewerDep,
    camera_id: IdQuery = None,
    rule_id: IdQuery = None,
    since: Annotated[IsoDatetime | None, Query(description="Created at or after.")] = None,
    until: Annotated[IsoDatetime | None, Query(description="Created before.")] = None,
    acknowledged: bool | None = None,
    limit: Annotated[int | None, Query(ge=1, le=10_000)] = None,
    cursor: Annotated[str | None, Query(max_length=64)] = None,
) -> AlertPage:
    """Newest first."""
    size = page_size(state, limit)
    before = registry.decode_cursor(cursor)
    for name, value in (("since", since), ("until", until)):
        if value is not None and value.tzinfo is None:
            raise field_error(f"query.{name}", "needs a time zone offset, e.g. Z")
    stmt = select(Alert).order_by(col(Alert.id).desc()).limit(size + 1)
    if before is not None:
        stmt = stmt.where(col(Alert.id) < before)
    if camera_id is not None:
        stmt = stmt.where(Alert.camera_id == camera_id)
    if rule_id is not None:
        stmt = stmt.where(Alert.rule_id == rule_id)
    if since is not None:
        stmt = stmt.where(col(Alert.created_at) >= since)
    if until is not None:
        stmt = stmt.where(col(Alert.created_at) < until)
    if acknowledged is not None:
        ack = col(Alert.acknowledged_at)
        stmt = stmt.where(ack.is_not(None) if acknowledged else ack.is_(None))
    rows = list(session.exec(stmt).all())
    more = len(rows) > size
    rows = rows[:size]
    next_cursor = registry.encode_cursor(rows[-1].id or 0) if more and rows else None
    return AlertPage(items=[alert_public(a) for a in rows], next_cursor=next_cursor)


@router.get(
    "/stream",
    response_class=StreamingResponse,
    responses={200: {"content": {"text/event-stream": {}}, "description": "Alert events."}},
)
async def stream_alerts(
    request: Request,
    state: StateDep,
    _: ViewerDep,
    camera_id: IdQuery = None,
    after_id: Annotated[int | None, Query(ge=0, description="Start after this alert id.")] = None,
    last_event_id: Annotated[str | None, Header(max_length=20)] = None,
) -> StreamingResponse:
    """Server-sent events: one `alert` event per new alert; resumes from Last-Event-ID."""
    start = after_id
    if last_event_id is not None:
        if not last_event_id.isdigit():
            raise field_error("header.last-event-id", "must be an alert id")
        start = int(last_event_id)
    if start is None:
        with Session(state.engine) as session:
            newest = session.exec(select(col(Alert.id)).order_by(col(Alert.id).desc())).first()
        start = newest or 0
    poll_s = state.settings.api.sse_poll_s

    async def events() -> AsyncIterator[bytes]:
        last = start
        idle = 0.0
        # The start position as the stream's first event id (an id with no data dispatches
        # nothing): a client that loses the connection before any alert resumes from here.
        yield f": connected\nid: {start}\n\n".encode()
        while not state.closing.is_set() and not await request.is_disconnected():
            rows = await asyncio.to_thread(_newer, state, last, camera_id)
            for a in rows:
                last = a.id or last
                body = json.dumps(alert_public(a).model_dump(mode="json"))
                yield f"id: {a.id}\nevent: alert\ndata: {body}\n\n".encode()
            if rows:
                idle = 0.0
            else:
                idle += poll_s
                if idle >= 15:
                    idle = 0.0
                    yield b": keepalive\n\n"
                await asyncio.sleep(poll_s)

    return StreamingResponse(
        events(),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


def _newer(state: StateDep, after: int, camera_id: int | None) -> list[Alert]:
    with Session(state.engine) as session:
        stmt = select(Alert).where(col(Alert.id) > after).order_by(col(Alert.id)).limit(100)
        if camera_id is not None:
            stmt = stmt.where(Alert.camera_id == camera_id)
        return list(session.exec(stmt).all())


@router.get("/{alert_id}", response_model=AlertPublic, responses=responses(404))
def get_alert(alert_id: IdPath, session: SessionDep, _: ViewerDep) -> AlertPublic:
    return alert_public(_get(session, alert_id))


@router.get(
    "/{alert_id}/thumbnail",
    response_class=Response,
    responses={
        200: {"content": {"image/jpeg": {}}, "description": "Evidence JPEG."},
        **responses(404),
    },
)
def get_alert_thumbnail(alert_id: IdPath, session: SessionDep, _: ViewerDep) -> Response:
    alert = _get(session, alert_id)
    if alert.thumbnail is None:
        raise ApiError(404, "not_found", f"alert {alert_id} has no thumbnail")
    return Response(content=alert.thumbnail, media_type="image/jpeg")


@router.post("/{alert_id}/ack", response_model=AlertPublic, responses=responses(404))
def acknowledge_alert(alert_id: IdPath, session: SessionDep, principal: OperatorDep) -> AlertPublic:
    alert = _get(session, alert_id)
    if alert.acknowledged_at is None:
        alert.acknowledged_at = datetime.now(UTC)
        alert.acknowledged_by = principal.name
        session.add(alert)
        session.commit()
    return alert_public(alert)


@router.post("/{alert_id}/resolve", response_model=AlertPublic, responses=responses(404))
def resolve_alert(alert_id: IdPath, session: SessionDep, principal: OperatorDep) -> AlertPublic:
    alert = _get(session, alert_id)
    now = datetime.now(UTC)
    if alert.acknowledged_at is None:
        alert.acknowledged_at, alert.acknowledged_by = now, principal.name
    if alert.resolved_at is None:
        alert.resolved_at, alert.resolved_by = now, principal.name
    session.add(alert)
    session.commit()
    return alert_public(alert)
