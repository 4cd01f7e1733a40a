"""Composition root: build the shared state from settings and run roles (DESIGN.md §6).

`flashwatch serve` runs every role that exists in one process; `flashwatch run <role>`
runs one. Roles whose components are not built yet are reported and skipped, never
faked.
"""

from __future__ import annotations

import logging
import os
import signal
from pathlib import Path
from typing import Any

from sqlmodel import Session, select

from flashwatch import registry
from flashwatch.api import create_app
from flashwatch.api.deps import AppState
from flashwatch.api.serving import ApiServer
from flashwatch.config import Settings
from flashwatch.db.engine import create_db_engine, upgrade
from flashwatch.db.models import ApiToken
from flashwatch.pipeline import Pipeline

log = logging.getLogger("flashwatch")
ROLES = ("api", "ingest", "encoder", "reasoner", "alerts")
ADMIN_TOKEN_FILE = "admin.token"  # noqa: S105 (a file name, not a secret)
BUNDLED_MODEL = Path(__file__).resolve().parents[1] / "models" / "tiny"


def with_bundled_model(settings: Settings, bundled: Path = BUNDLED_MODEL) -> Settings:
    """`serve` without any model configured runs the bundled tiny synthetic-world model.

    Only the all-in-one `serve` does this (and says so): a distributed role without a model
    directory is a configuration mistake and must not quietly run a toy model.
    """
    if settings.encoder.model_dir or settings.reasoner.model_dir or settings.reasoner.url:
        return settings
    if not (bundled / "config.json").is_file():
        return settings
    log.warning(
        "no model directory configured: using the bundled tiny model %s, trained only on "
        "synthetic scenes (set encoder.model_dir and reasoner.model_dir for VideoChat-Flash)",
        bundled,
    )
    return settings.model_copy(
        update={
            "encoder": settings.encoder.model_copy(update={"model_dir": bundled}),
            "reasoner": settings.reasoner.model_copy(update={"model_dir": bundled}),
        }
    )


def build_state(settings: Settings, *, migrate: bool = True) -> AppState:
    """Engine (migrated), bootstrap admin token, and the components available so far."""
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    engine = create_db_engine(
        settings.db_url, pool_size=settings.db.pool_size, echo=settings.db.echo
    )
    if migrate:
        upgrade(engine)
    return AppState(settings=settings, engine=engine)


def ensure_admin_token(state: AppState) -> Path | None:
    """Guarantee a way in: the configured bootstrap token, or a new one written to a file.

    The token is never logged; when generated it goes to <data_dir>/admin.token (0600)
    and only the file's path is printed.
    """
    settings = state.settings
    with Session(state.engine) as session:
        if settings.api.bootstrap_admin_token is not None:
            registry.ensure_token(
                session,
                "bootstrap-admin",
                "admin",
                settings.api.bootstrap_admin_token.get_secret_value(),
            )
            return None
        if session.exec(select(ApiToken).where(ApiToken.role == "admin")).first() is not None:
            return None
        _, token = registry.create_token(session, "admin", "admin")
    path = settings.data_dir / ADMIN_TOKEN_FILE
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(token + "\n")
    return path


def serve(settings: Settings, roles: tuple[str, ...] = ROLES) -> None:
    """Run the given roles in this process until SIGINT/SIGTERM, then stop them in order."""
    if roles == ROLES:
        settings = with_bundled_model(settings)
    state = build_state(settings)
    token_file = ensure_admin_token(state) if "api" in roles else None
    if token_file is not None:
        log.warning(
            "created an admin API token; it is in %s (readable by this user only)", token_file
        )
    pipeline = Pipeline(state, roles)
    pipeline.start()
    try:
        if "api" not in roles and not set(roles) & set(pipeline.started):
            log.error(
                "nothing to run: %s", "; ".join(f"{r}: {w}" for r, w in pipeline.skipped.items())
            )
            raise SystemExit(3)
        what = "API" if "api" in roles else "health/metrics"
        log.info(
            "%s on http://%s:%d/v1 (data in %s)",
            what,
            settings.api.host,
            settings.api.port,
            settings.data_dir,
        )
        # uvicorn returns on SIGINT/SIGTERM and then re-raises the signal to the handler that
        # was installed before it: make that a no-op so `finally` drains the pipeline and the
        # process exits 0 instead of dying by the signal.
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: None)
        server = ApiServer(
            _role_app(state, pipeline, roles),
            host=settings.api.host,
            port=settings.api.port,
            closing=state.closing,
        )
        server.run()
        if not server.started:  # as uvicorn.run: a failed start is not a clean exit
            log.error("the server did not start on %s:%d", settings.api.host, settings.api.port)
            raise SystemExit(3)
    finally:
        pipeline.stop()


def _role_app(state: AppState, pipeline: Pipeline, roles: tuple[str, ...]) -> Any:
    """The HTTP app of this process: the user API, the reasoner service, or just probes."""
    if "api" in roles:
        return create_app(state)
    if "reasoner" in roles and pipeline.reasoner_service is not None:
        from reasoner.service import create_app as reasoner_app

        cfg = state.settings.reasoner
        token = cfg.service_token.get_secret_value() if cfg.service_token else None
        from flashwatch.api import routes_system
        from flashwatch.api.middleware import ApiMetrics

        app = reasoner_app(pipeline.reasoner_service, token=token)
        app.include_router(routes_system.router)  # readiness and metrics beside the service
        app.state.fw, app.state.metrics = state, ApiMetrics()
        return app
    return create_app(state, public_api=False)
