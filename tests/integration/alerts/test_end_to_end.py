"""Scheduler and delivery worker running as threads, wired as the composition root would:
footage lands in Redis, the rule fires, the signed webhook reaches a real HTTP receiver once;
a control camera with the same rule stays silent."""

from __future__ import annotations

import secrets
import time
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from alerts import AlertMetrics, AlertScheduler, DeliveryConfig, DeliveryWorker, SchedulerConfig
from alerts.sinks import WebhookSink
from flashwatch.messages import ScoreAnswer, ScoreRequest
from memory.redis_store import RedisStore
from tests.integration.alerts.helpers import (
    SECRET,
    T0,
    ScriptedReasoner,
    WebhookReceiver,
    add_camera,
    add_rule,
    alerts,
    feed,
    registry,
)

pytestmark = pytest.mark.integration
CAM, CONTROL = 940_001, 940_002


class OneCameraEvent(ScriptedReasoner):
    """Scripted: the event shows on CAM in windows ending at T0+32 or later, never elsewhere."""

    def score(self, request: ScoreRequest) -> ScoreAnswer:
        on = request.window.camera_id == CAM and request.window.t_to >= T0 + 32
        self.script = lambda _r, _e: 0.9 if on else 0.1
        return super().score(request)


def test_footage_to_webhook(tmp_path: Path, redis_url: str) -> None:
    engine = registry(tmp_path / "registry.db")
    add_camera(engine, CAM)
    add_camera(engine, CONTROL)
    recv = WebhookReceiver()
    memory = RedisStore(redis_url, [1e6], namespace=f"fwtest-alerts-{secrets.token_hex(4)}")
    add_rule(engine, "fence", [CAM, CONTROL], sinks=[{"type": "webhook", "url": recv.url}])
    reasoner = OneCameraEvent(lambda _r, _e: 0.0)
    metrics = AlertMetrics(CollectorRegistry())
    sched = AlertScheduler(engine, memory, reasoner, metrics=metrics,
                           config=SchedulerConfig(poll_interval_s=0.05))  # fmt: skip
    worker = DeliveryWorker(engine, {"webhook": WebhookSink(SECRET)}, metrics=metrics,
                            config=DeliveryConfig(poll_interval_s=0.05))  # fmt: skip
    sched.start()
    worker.start()
    try:
        for cam in (CAM, CONTROL):
            feed(memory, cam, T0, T0 + 24)
        fed_at: dict[float, float] = {}
        for end in (T0 + 32, T0 + 40, T0 + 48):
            for cam in (CAM, CONTROL):
                feed(memory, cam, end - 8, end)
            fed_at[end] = time.monotonic()
            time.sleep(0.5)
        deadline = time.monotonic() + 10
        while not recv.processed and time.monotonic() < deadline:
            time.sleep(0.02)
    finally:
        sched.stop()
        worker.stop()
        for cam in (CAM, CONTROL):
            memory.delete_camera(cam)
        memory.close()
        recv.down()
    assert len(recv.processed) == 1 and all(s.verified for s in recv.seen)
    (event,) = recv.processed.values()
    assert event["camera_id"] == CAM and event["window_end"] == T0 + 40  # 2 of 3: 32, 40
    latency = recv.seen[0].at - fed_at[T0 + 40]
    print(f"last clip of the firing window stored -> webhook received: {latency:.3f} s")
    assert latency < 8.0  # well within one step
    assert [a.camera_id for a in alerts(engine)] == [CAM]  # nothing on the control camera
    assert metrics.registry.get_sample_value("fw_alert_deliveries_total", {"sink": "webhook"}) == 1
