"""Alembic environment: runs against the engine FlashWatch hands in (no alembic.ini)."""

from __future__ import annotations

from alembic import context
from sqlalchemy.engine import Connection
from sqlmodel import SQLModel

import flashwatch.db.models  # noqa: F401  (registers the tables on SQLModel.metadata)

target_metadata = SQLModel.metadata


def run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()
    connection.commit()


given = context.config.attributes.get("connection")
if given is not None:  # the caller holds the migration lock on this connection
    run(given)
else:
    with context.config.attributes["engine"].connect() as conn:
        run(conn)
