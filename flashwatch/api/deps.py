"""Request dependencies: the app state, a DB session, and the authenticated principal.

Deny by default: every router except the health routes is mounted with `require(role)`.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import Depends, Path, Query, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from prometheus_client import CollectorRegistry
from sqlalchemy.engine import Engine
from sqlmodel import Session, select

from flashwatch.api.errors import ApiError
from flashwatch.api.schemas import FieldError
from flashwatch.config import Settings
from flashwatch.db.models import ApiToken
from flashwatch.protocols import CameraMemory, Reasoner
from flashwatch.security import hash_token

MAX_ID = 2**31 - 1  # registry ids are 32-bit integers on PostgreSQL
IdPath = Annotated[int, Path(ge=1, le=MAX_ID)]
IdQuery = Annotated[int | None, Query(ge=1, le=MAX_ID)]
ROLE_RANK = {"viewer": 0, "operator": 1, "admin": 2}
LAST_USED_EVERY_S = 60.0


@dataclass
class AppState:
    """Everything a request handler may need, built once by the composition root."""

    settings: Settings
    engine: Engine
    reasoner: Reasoner | None = None
    memory: CameraMemory | None = None
    ready_checks: dict[str, Callable[[], bool]] = field(default_factory=dict)
    metrics_registries: list[CollectorRegistry] = field(default_factory=list)
    query_slots: threading.BoundedSemaphore = field(init=False)
    # Set when the server starts to stop: open alert streams end (`api.serving`).
    closing: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        self.query_slots = threading.BoundedSemaphore(self.settings.api.max_concurrent_queries)


@dataclass(frozen=True)
class Principal:
    token_id: int
    name: str
    role: str

    def __repr__(self) -> str:
        return f"Principal(token_id={self.token_id}, name={self.name!r}, role={self.role})"


def get_state(request: Request) -> AppState:
    state: AppState = request.app.state.fw
    return state


StateDep = Annotated[AppState, Depends(get_state)]


def get_session(state: StateDep) -> Iterator[Session]:
    with Session(state.engine, expire_on_commit=False) as session:
        yield session


SessionDep = Annotated[Session, Depends(get_session)]
_bearer = HTTPBearer(auto_error=False, description="API token: `Authorization: Bearer fw_...`")


def authenticate(
    state: StateDep,
    creds: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Principal:
    unauthorized = ApiError(
        401,
        "unauthorized",
        "missing or invalid bearer token",
        headers={"WWW-Authenticate": "Bearer"},
    )
    if creds is None or creds.scheme.lower() != "bearer" or not creds.credentials:
        raise unauthorized
    if len(creds.credentials) > 256:
        raise unauthorized
    digest = hash_token(creds.credentials)
    with Session(state.engine) as session:
        token = session.exec(select(ApiToken).where(ApiToken.token_hash == digest)).first()
        if token is None or token.revoked_at is not None or token.id is None:
            raise unauthorized
        now = datetime.now(UTC)
        if (
            token.last_used_at is None
            or (now - token.last_used_at).total_seconds() > LAST_USED_EVERY_S
        ):
            token.last_used_at = now
            session.add(token)
            session.commit()
        return Principal(token_id=token.id, name=token.name, role=token.role)


def reject_unknown_query(request: Request) -> None:
    """Unknown query parameters are errors, like unknown body fields (a typo must not be
    silently ignored, e.g. `?camera=3` instead of `?camera_id=3`)."""
    route = request.scope.get("route")
    dependant = getattr(route, "dependant", None)
    if dependant is None:
        return
    known = {p.alias for p in _all_query_params(dependant)}
    unknown = sorted(k for k in request.query_params if k not in known)
    if unknown:
        raise ApiError(
            422,
            "validation_error",
            f"query.{unknown[0]}: unknown query parameter",
            errors=[
                FieldError(field=f"query.{k}", message="unknown query parameter") for k in unknown
            ],
        )


def _all_query_params(dependant: Any) -> list[Any]:
    params = list(dependant.query_params)
    for sub in dependant.dependencies:
        params += _all_query_params(sub)
    return params


def bearer_from(request: Request) -> HTTPAuthorizationCredentials | None:
    """The bearer credentials of a request, for routes that authenticate conditionally."""
    scheme, _, value = request.headers.get("Authorization", "").partition(" ")
    if not scheme or not value:
        return None
    return HTTPAuthorizationCredentials(scheme=scheme, credentials=value.strip())


def require(role: str) -> Callable[..., Principal]:
    """A dependency admitting principals with at least `role`."""
    need = ROLE_RANK[role]

    def _check(principal: Annotated[Principal, Depends(authenticate)]) -> Principal:
        if ROLE_RANK.get(principal.role, -1) < need:
            raise ApiError(403, "forbidden", f"this action needs the {role} role")
        return principal

    _check.__name__ = f"require_{role}"
    return _check


ViewerDep = Annotated[Principal, Depends(require("viewer"))]
OperatorDep = Annotated[Principal, Depends(require("operator"))]
AdminDep = Annotated[Principal, Depends(require("admin"))]


def page_size(state: AppState, limit: int | None) -> int:
    """The page size to use, refusing sizes over the configured maximum with a 422."""
    api = state.settings.api
    if limit is None:
        return api.default_page_size
    if limit > api.max_page_size:
        raise ApiError(
            422,
            "validation_error",
            f"query.limit: must be at most {api.max_page_size}",
            errors=[
                FieldError(field="query.limit", message=f"must be at most {api.max_page_size}")
            ],
        )
    return limit
