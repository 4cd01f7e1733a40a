"""SQL registry: tables, engine creation and Alembic migrations."""
