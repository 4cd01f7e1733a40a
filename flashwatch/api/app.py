"""The FastAPI application factory: routers, error handlers, limits, metrics."""

from __future__ import annotations

from fastapi import FastAPI

from flashwatch import __version__
from flashwatch.api import (
    routes_alerts,
    routes_cameras,
    routes_queries,
    routes_rules,
    routes_system,
    routes_tokens,
)
from flashwatch.api.deps import AppState
from flashwatch.api.errors import install_error_handlers
from flashwatch.api.middleware import ApiMetrics, BodyLimitMiddleware, MetricsMiddleware

DESCRIPTION = """FlashWatch keeps a re-queryable visual memory per camera and evaluates
standing natural-language rules on it. Every route except `/v1/health` and `/v1/ready`
needs `Authorization: Bearer <token>`; roles are viewer < operator < admin."""


def create_app(state: AppState, *, public_api: bool = True) -> FastAPI:
    """The API app; with `public_api=False` only health, readiness and metrics (the probe
    and scrape endpoints of a role process that serves no users: ingest, encoder, ...)."""
    app = FastAPI(
        title="FlashWatch",
        version=__version__,
        description=DESCRIPTION,
        openapi_url="/v1/openapi.json",
        docs_url="/v1/docs",
        redoc_url=None,
    )
    app.state.fw = state
    app.state.metrics = ApiMetrics()
    install_error_handlers(app)
    modules = [routes_system]
    if public_api:
        modules += [routes_cameras, routes_rules, routes_alerts, routes_queries, routes_tokens]
    for module in modules:
        app.include_router(module.router)
    if public_api:
        from alerts.api import router as alerts_router

        app.include_router(alerts_router)
    app.add_middleware(BodyLimitMiddleware, max_bytes=state.settings.api.max_body_bytes)
    app.add_middleware(MetricsMiddleware, metrics=app.state.metrics)
    return app
