"""Migration 0002 (alert state, outbox, backfill) upgrades a registry at 0001 that already
holds data, on SQLite and PostgreSQL, and cascades with rule/camera deletion."""

from __future__ import annotations

import secrets
from datetime import UTC, datetime
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic import command
from sqlalchemy.engine import Engine

from flashwatch.db.engine import (
    _alembic_config,
    create_db_engine,
    current_revision,
    head_revision,
    upgrade,
)
from tests import services

pytestmark = pytest.mark.integration
NOW = datetime(2026, 11, 26, tzinfo=UTC)


def _check(engine: Engine) -> None:
    upgrade(engine, "0001")
    with engine.begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO camera (id, name, url, sample_interval_s, pyramid_levels, enabled,"
                " labels, timezone, state, epoch, reconnects, created_at, updated_at) VALUES"
                " (1, 'c', 'rtsp://h/x', 1, 3, true, '{}', 'UTC', 'pending', 0, 0, :t, :t)"
            ),
            {"t": NOW},
        )
        conn.execute(
            sa.text(
                "INSERT INTO rule (id, name, text, mode, all_cameras, window_s, step_s, threshold,"
                " hysteresis_k, hysteresis_n, cooldown_s, severity, sinks, enabled, backfill_s,"
                " created_at, updated_at) VALUES (1, 'r', 'q?', 'alert', true, 64, 8, 0.5, 2, 3,"
                " 0, 'high', '[]', true, 0, :t, :t)"
            ),
            {"t": NOW},
        )
    upgrade(engine)
    assert current_revision(engine) == head_revision()
    tables = set(sa.inspect(engine).get_table_names())
    assert {"alert_rule_state", "alert_delivery", "alert_backfill"} <= tables
    with engine.begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO alert_rule_state (rule_id, camera_id, last_end, history, evaluations,"
                " skipped, updated_at) VALUES (1, 1, 1700000000.5, '[true]', 1, 0, :t)"
            ),
            {"t": NOW},
        )
        assert conn.execute(sa.text("SELECT last_end FROM alert_rule_state")).scalar() == (
            1700000000.5  # double precision: window ends must round-trip exactly
        )
        conn.execute(sa.text("DELETE FROM rule WHERE id = 1"))
        assert conn.execute(sa.text("SELECT count(*) FROM alert_rule_state")).scalar() == 0
    command.downgrade(_alembic_config(engine), "0001")  # the downgrade path works too
    assert "alert_delivery" not in set(sa.inspect(engine).get_table_names())


def test_upgrade_from_0001_on_sqlite(tmp_path: Path) -> None:
    _check(create_db_engine(f"sqlite:///{tmp_path / 'r.db'}"))


def test_upgrade_from_0001_on_postgresql(pg_server_url: str) -> None:
    name = f"fw_alerts_mig_{secrets.token_hex(4)}"  # its own database: starts empty at 0001
    engine = create_db_engine(services.create_pg_database(pg_server_url, name))
    try:
        _check(engine)
    finally:
        engine.dispose()
        services.drop_pg_database(pg_server_url, name)


def test_outbox_and_dedup_on_postgresql(pg_server_url: str) -> None:
    """The scheduler's transaction and the worker's claim (FOR UPDATE SKIP LOCKED) on PG."""
    from alerts.delivery import DeliveryConfig, DeliveryWorker
    from alerts.sinks import WebhookSink
    from alerts.store import AlertDraft, commit_window
    from tests.integration.alerts.helpers import SECRET, WebhookReceiver, add_camera, add_rule

    name = f"fw_alerts_pg_{secrets.token_hex(4)}"
    engine = create_db_engine(services.create_pg_database(pg_server_url, name))
    recv = WebhookReceiver()
    try:
        upgrade(engine)
        cam = add_camera(engine, 7)
        rule = add_rule(engine, "fence", [7], sinks=[{"type": "webhook", "url": recv.url}])
        draft = AlertDraft(rule, cam, "alert", 1_700_000_000.0, 1_700_000_016.0, 0.9)
        assert len(commit_window(engine, [], [draft])) == 1
        assert commit_window(engine, [], [draft]) == []  # replay: same key, nothing new
        worker = DeliveryWorker(engine, {"webhook": WebhookSink(SECRET)},
                                config=DeliveryConfig(poll_interval_s=0.05))  # fmt: skip
        assert worker.run_once() == 1
        assert worker.run_once() == 0
        worker.stop()
        assert list(recv.processed) == [draft.dedup_key]
    finally:
        recv.down()
        engine.dispose()
        services.drop_pg_database(pg_server_url, name)
