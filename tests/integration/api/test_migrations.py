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


def test_concurrent_first_starts_on_postgresql_do_not_race(
    tmp_path: Path, pg_server_url: str
) -> None:
    """Every role migrates at start; two at once on an empty database must both succeed."""
    import threading

    with fresh_db("postgres", tmp_path, pg_server_url) as url:
        assert url is not None
        engines = [create_db_engine(url) for _ in range(3)]
        errors: list[BaseException] = []

        def migrate(e: sa.engine.Engine) -> None:
            try:
                upgrade(e)
            except BaseException as exc:  # surfaced by the assertion below
                errors.append(exc)

        threads = [threading.Thread(target=migrate, args=(e,)) for e in engines]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        try:
            assert errors == []
            assert current_revision(engines[0]) == head_revision()
        finally:
            for e in engines:
                e.dispose()
