"""Backfill over stored history (resumable, low priority, progress visible through the API)
with a rule created through the real API, real Redis memory and a `ScriptedReasoner`."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry
from sqlmodel import Session, select

from alerts.api import router
from alerts.backfill import backfill_range
from alerts.delivery import DeliveryConfig, DeliveryWorker
from alerts.metrics import AlertMetrics
from alerts.scheduler import AlertScheduler
from alerts.store import AlertDraft, commit_window
from flashwatch.db.models import AlertDelivery, Camera, Rule
from memory.redis_store import RedisStore
from tests.apiharness import Api, make_api, settings_for
from tests.integration.alerts.helpers import T0, ScriptedReasoner, alerts, feed

pytestmark = pytest.mark.integration


@pytest.fixture
def api(tmp_path: Path) -> Api:
    api = make_api(settings_for(tmp_path, None))
    api.client.app.include_router(router)  # type: ignore[attr-defined]
    return api


@pytest.fixture
def memory(redis_url: str) -> Iterator[RedisStore]:
    store = RedisStore(redis_url, [1e6], namespace=f"fwtest-alerts-{secrets.token_hex(4)}")
    yield store
    store.close()


def test_backfill_range_stops_before_live() -> None:
    first, last, count = backfill_range(T0 + 28, 8, 16, 200)
    assert (first, last, count) == (T0 - 168, T0 + 16, 24)
    assert backfill_range(T0 + 28, 8, 16, 10)[2] == 0  # shorter than one window


def test_backfill_finds_past_events_resumably_and_shows_progress(
    api: Api, memory: RedisStore
) -> None:
    cam = api.camera("yard")["id"]
    feed(memory, cam, T0 - 200, T0 + 24)
    rule = api.rule(
        "fence",
        [cam],
        window_s=16,
        step_s=8,
        hysteresis_k=1,
        hysteresis_n=1,
        cooldown_s=0,
        backfill_s=200,
        sinks=[{"type": "kafka", "topic": "fw.alerts"}],
    )
    reasoner = ScriptedReasoner(lambda _r, end: 0.9 if T0 - 120 <= end <= T0 - 104 else 0.1)

    def sched() -> AlertScheduler:
        return AlertScheduler(
            api.state.engine,
            memory,
            reasoner,
            metrics=AlertMetrics(CollectorRegistry()),
            clock=lambda: T0 + 30,
        )

    first = sched()
    assert first.run_once() == 1  # live first: the newest window, no backfill in that pass
    assert [c.window.t_to for c in reasoner.calls] == [T0 + 24]
    first.run_once()  # idle pass: 2 backfill windows
    progress = api.client.get(f"/v1/rules/{rule['id']}/backfill", headers=api.h("viewer")).json()
    assert progress[0]["status"] == "running" and progress[0]["windows_done"] == 2
    assert progress[0]["windows_total"] == 24
    second = sched()  # a restart: resumes where the first stopped
    while second.run_once():
        pass
    progress = api.client.get(f"/v1/rules/{rule['id']}/backfill", headers=api.h("viewer")).json()
    assert progress == [progress[0]] and progress[0]["status"] == "done"
    assert progress[0]["fraction_done"] == 1.0 and progress[0]["alerts"] == 3
    ends = [c.window.t_to for c in reasoner.score_calls()[1:]]
    assert ends == [T0 - 168 + 8 * i for i in range(24)]  # each window once, oldest first
    past = alerts(api.state.engine, backfilled=True)
    assert [a.window_end.timestamp() for a in past] == [T0 - 120, T0 - 112, T0 - 104]
    with Session(api.state.engine) as s:  # history does not page anyone (backfill_notify off)
        assert s.exec(select(AlertDelivery)).all() == []
    deliveries = api.client.get(f"/v1/alerts/{past[0].id}/deliveries", headers=api.h("viewer"))
    assert deliveries.status_code == 200 and deliveries.json() == []
    ev = api.client.get(f"/v1/rules/{rule['id']}/evaluation", headers=api.h("viewer")).json()
    assert ev[0]["camera_id"] == cam and ev[0]["last_end"] == T0 + 24 and ev[0]["evaluations"] == 1
    failed = api.client.get("/v1/alert-deliveries", headers=api.h("viewer"))
    assert failed.status_code == 200 and failed.json() == []
    bad = api.client.get("/v1/alert-deliveries?status=lost", headers=api.h("viewer"))
    assert bad.status_code == 422
    assert api.client.get(f"/v1/rules/{rule['id']}/backfill").status_code == 401
    assert api.client.get("/v1/rules/999/backfill", headers=api.h("viewer")).status_code == 404


def test_final_delivery_failures_are_visible(api: Api) -> None:
    cam_id = api.camera("door")["id"]
    rule_id = api.rule("door", [cam_id], sinks=[{"type": "kafka", "topic": "fw.alerts"}])["id"]
    with Session(api.state.engine, expire_on_commit=False) as s:
        rule, cam = s.get(Rule, rule_id), s.get(Camera, cam_id)
    assert rule is not None and cam is not None
    (alert,) = commit_window(
        api.state.engine, [], [AlertDraft(rule, cam, "alert", T0, T0 + 64, 0.8)]
    )
    worker = DeliveryWorker(api.state.engine, {}, config=DeliveryConfig(max_retries=0),
                            metrics=AlertMetrics(CollectorRegistry()))  # fmt: skip
    assert worker.run_once() == 1
    worker.stop()
    (row,) = api.client.get("/v1/alert-deliveries", headers=api.h("viewer")).json()
    assert row["alert_id"] == alert.id and row["status"] == "failed" and row["attempts"] == 1
    assert "no 'kafka' sink" in row["last_error"] and "target" not in row
    per_alert = api.client.get(f"/v1/alerts/{alert.id}/deliveries", headers=api.h("viewer"))
    assert per_alert.json() == [row]
