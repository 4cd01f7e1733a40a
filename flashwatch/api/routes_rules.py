"""Standing rules: CRUD. Writes need the operator role, reads the viewer role."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query, Response
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
from flashwatch.api.errors import not_found, responses
from flashwatch.api.schemas import RuleCreate, RulePage, RulePublic, RuleUpdate
from flashwatch.db.models import Rule

router = APIRouter(
    prefix="/v1/rules",
    tags=["rules"],
    responses=responses(400, 401, 403, 422),
    dependencies=[Depends(reject_unknown_query)],
)


def _get(session: Session, rule_id: int) -> Rule:
    rule = session.get(Rule, rule_id)
    if rule is None:
        raise not_found("rule", rule_id)
    return rule


@router.post("", status_code=201, response_model=RulePublic, responses=responses(409, 413))
def create_rule(
    body: RuleCreate, session: SessionDep, state: StateDep, _: OperatorDep
) -> RulePublic:
    rule = registry.create_rule(
        session, body, state.settings.alerts, max_rules=state.settings.api.max_rules
    )
    return registry.rule_public(rule)


@router.get("", response_model=RulePage)
def list_rules(
    session: SessionDep,
    state: StateDep,
    _: ViewerDep,
    camera_id: IdQuery = None,
    limit: Annotated[int | None, Query(ge=1, le=10_000)] = None,
    cursor: Annotated[str | None, Query(max_length=64)] = None,
) -> RulePage:
    size = page_size(state, limit)
    after = registry.decode_cursor(cursor)
    stmt = select(Rule).order_by(col(Rule.id))
    if after is not None:
        stmt = stmt.where(col(Rule.id) > after)
    items: list[Rule] = []
    # camera_id filtering looks inside a JSON list, so it is done here, page by page.
    for rule in session.exec(stmt.limit(None if camera_id else size + 1)).all():
        if camera_id is not None and camera_id not in (rule.camera_ids or []):
            continue
        items.append(rule)
        if len(items) > size:
            break
    more = len(items) > size
    items = items[:size]
    next_cursor = registry.encode_cursor(items[-1].id or 0) if more and items else None
    return RulePage(items=[registry.rule_public(r) for r in items], next_cursor=next_cursor)


@router.get("/{rule_id}", response_model=RulePublic, responses=responses(404))
def get_rule(rule_id: IdPath, session: SessionDep, _: ViewerDep) -> RulePublic:
    return registry.rule_public(_get(session, rule_id))


@router.patch("/{rule_id}", response_model=RulePublic, responses=responses(404, 409, 413))
def update_rule(
    rule_id: IdPath, body: RuleUpdate, session: SessionDep, state: StateDep, _: OperatorDep
) -> RulePublic:
    rule = registry.update_rule(session, _get(session, rule_id), body, state.settings.alerts)
    return registry.rule_public(rule)


@router.delete("/{rule_id}", status_code=204, responses=responses(404))
def delete_rule(rule_id: IdPath, session: SessionDep, _: OperatorDep) -> Response:
    session.delete(_get(session, rule_id))
    session.commit()
    return Response(status_code=204)
