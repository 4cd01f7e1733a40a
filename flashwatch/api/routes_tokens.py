"""API tokens (admin only). A token is shown once at creation; only its hash is kept."""

from __future__ import annotations

from datetime import UTC, datetime

from fastapi import APIRouter, Depends
from sqlmodel import col, select

from flashwatch import registry
from flashwatch.api.deps import AdminDep, IdPath, SessionDep, reject_unknown_query
from flashwatch.api.errors import ApiError, not_found, responses
from flashwatch.api.schemas import TokenCreate, TokenCreated, TokenPublic
from flashwatch.db.models import ApiToken

router = APIRouter(
    prefix="/v1/tokens",
    tags=["tokens"],
    responses=responses(400, 401, 403, 422),
    dependencies=[Depends(reject_unknown_query)],
)


def token_public(row: ApiToken) -> TokenPublic:
    return TokenPublic.model_validate(row, from_attributes=True)


@router.post("", status_code=201, response_model=TokenCreated, responses=responses(413))
def create_token(body: TokenCreate, session: SessionDep, _: AdminDep) -> TokenCreated:
    row, token = registry.create_token(session, body.name, body.role)
    return TokenCreated(**token_public(row).model_dump(), token=token)


@router.get("", response_model=list[TokenPublic])
def list_tokens(session: SessionDep, _: AdminDep) -> list[TokenPublic]:
    rows = session.exec(select(ApiToken).order_by(col(ApiToken.id)).limit(10_000)).all()
    return [token_public(r) for r in rows]


@router.post("/{token_id}/revoke", response_model=TokenPublic, responses=responses(404, 409))
def revoke_token(token_id: IdPath, session: SessionDep, principal: AdminDep) -> TokenPublic:
    row = session.get(ApiToken, token_id)
    if row is None:
        raise not_found("token", token_id)
    if row.id == principal.token_id:
        raise ApiError(409, "conflict", "a token cannot revoke itself")
    if row.revoked_at is None:
        row.revoked_at = datetime.now(UTC)
        session.add(row)
        session.commit()
    return token_public(row)
