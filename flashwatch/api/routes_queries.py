"""Questions over past footage, answered by the reasoner.

Admission control: at most `api.max_concurrent_queries` run at once; the rest get 429
with Retry-After, so a query flood cannot starve alert evaluation (which does not go
through this route). Without a reasoner the route answers 503, never a made-up answer.
"""

from __future__ import annotations

from datetime import UTC, datetime

from fastapi import APIRouter, Depends
from fastapi.concurrency import run_in_threadpool
from sqlmodel import col, select

from flashwatch.api.deps import SessionDep, StateDep, ViewerDep, reject_unknown_query
from flashwatch.api.errors import ApiError, field_error, responses
from flashwatch.api.schemas import AnswerTimePublic, QueryCreate, QueryResult
from flashwatch.db.models import Camera
from flashwatch.messages import CameraWindow, QueryRequest
from flashwatch.protocols import ReasonerBusy

router = APIRouter(
    prefix="/v1/queries",
    tags=["queries"],
    responses=responses(400, 401, 403, 422),
    dependencies=[Depends(reject_unknown_query)],
)


@router.post("", response_model=QueryResult, responses=responses(404, 413, 429, 503))
async def ask(body: QueryCreate, session: SessionDep, state: StateDep, _: ViewerDep) -> QueryResult:
    until = body.until or datetime.now(UTC)
    span = (until - body.since).total_seconds()
    if span <= 0:
        raise field_error("body.since", "must be before until")
    limit = state.settings.api.max_query_range_s
    if span > limit:
        raise field_error("body.until", f"the range spans {span:.0f} s; at most {limit:.0f} s")
    ids = sorted(set(body.camera_ids))
    cams = {c.id: c for c in session.exec(select(Camera).where(col(Camera.id).in_(ids))).all()}
    missing = [i for i in ids if i not in cams]
    if missing:
        raise ApiError(404, "not_found", f"unknown camera ids {missing}")
    if state.reasoner is None:
        raise ApiError(
            503,
            "reasoner_unavailable",
            "no reasoner is configured in this deployment; queries cannot be answered yet",
            headers={"Retry-After": "30"},
        )
    if not state.query_slots.acquire(blocking=False):
        raise ApiError(
            429,
            "too_many_queries",
            f"{state.settings.api.max_concurrent_queries} queries are already running",
            headers={"Retry-After": "2"},
        )
    try:
        request = QueryRequest(
            question=body.question,
            windows=[
                CameraWindow(
                    camera_id=i,
                    camera_name=cams[i].name,
                    t_from=body.since.timestamp(),
                    t_to=until.timestamp(),
                )
                for i in ids
            ],
            strategy=body.strategy,
        )
        answer = await run_in_threadpool(state.reasoner.query, request)
    except LookupError as exc:  # the reasoner's NoFootage: nothing stored in the range
        raise ApiError(404, "no_footage", str(exc) or "no footage in that range") from None
    except ReasonerBusy as exc:
        raise ApiError(
            429,
            "reasoner_busy",
            str(exc) or "the reasoner is busy",
            headers={"Retry-After": str(max(1, round(exc.retry_after_s)))},
        ) from None
    finally:
        state.query_slots.release()
    return QueryResult(
        answer=answer.answer,
        times=[
            AnswerTimePublic(
                text=t.text, at=datetime.fromtimestamp(t.t, UTC), camera_id=t.camera_id
            )
            for t in answer.times
        ],
        evidence=[datetime.fromtimestamp(t, UTC) for t in answer.evidence],
        strategy=answer.strategy,
        level=answer.level,
        frames=answer.frames,
        duration_s=answer.duration_s,
        tokens_visual=answer.tokens_visual,
        tokens_kept=answer.tokens_kept,
        timings=answer.timings,
        latency_s=answer.latency_s,
    )
