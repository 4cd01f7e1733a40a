"""Migrations: up from empty on SQLite and PostgreSQL, idempotent, and matching the models."""

from __future__ import annotations

from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlmodel import SQLModel

from flashwatch.db.engine import create_db_engine, current_revision, head_revision, upgrade
from tests.apiharness import fresh_db

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
def test_upgrade_from_empty_matches_models(
    kind: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    pg = request.getfixturevalue("pg_server_url") if kind == "postgres" else None
    with fresh_db(kind, tmp_path, pg) as url:
        engine = create_db_engine(url or f"sqlite:///{tmp_path / 'reg.db'}")
        try:
            assert current_revision(engine) is None
            upgrade(engine)
            upgrade(engine)  # idempotent
            assert current_revision(engine) == head_revision()
            tables = set(sa.inspect(engine).get_table_names())
            assert {"camera", "camera_credential", "rule", "alert", "api_token"} <= tables
            with engine.connect() as conn:
                diff = compare_metadata(
                    MigrationContext.configure(conn, opts={"compare_type": True}),
                    SQLModel.metadata,
                )
            assert diff == [], f"models and migrations disagree: {diff}"
        finally:
            engine.dispose()
