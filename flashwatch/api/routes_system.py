"""Health (public), readiness (public, for orchestrators) and Prometheus metrics."""

from __future__ import annotations

import sqlalchemy as sa
from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from flashwatch import __version__
from flashwatch.api.deps import StateDep, authenticate, bearer_from
from flashwatch.api.errors import responses
from flashwatch.api.schemas import Health, Readiness

router = APIRouter(tags=["system"])


@router.get("/v1/health", response_model=Health)
def health() -> Health:
    """Liveness: the process answers. Public."""
    return Health(status="ok", version=__version__)


@router.get("/v1/ready", response_model=Readiness, responses={503: {"model": Readiness}})
def ready(state: StateDep) -> JSONResponse:
    """Readiness: the registry and every attached dependency answer. Public."""
    checks: dict[str, bool] = {}
    try:
        with state.engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))
        checks["db"] = True
    except sa.exc.SQLAlchemyError:
        checks["db"] = False
    for name, check in state.ready_checks.items():
        try:
            checks[name] = bool(check())
        except Exception:
            checks[name] = False
    body = Readiness(ready=all(checks.values()), checks=checks)
    return JSONResponse(body.model_dump(), status_code=200 if body.ready else 503)


@router.get(
    "/metrics",
    response_class=Response,
    responses={
        200: {"content": {CONTENT_TYPE_LATEST: {}}, "description": "Prometheus text."},
        **responses(401),
    },
)
def metrics(request: Request, state: StateDep) -> Response:
    """Prometheus metrics; needs a token unless api.metrics_public is set."""
    if not state.settings.api.metrics_public:
        authenticate(state, bearer_from(request))
    registries = [request.app.state.metrics.registry, *state.metrics_registries]
    body = b"".join(generate_latest(r) for r in registries)
    return Response(body, media_type=CONTENT_TYPE_LATEST)
