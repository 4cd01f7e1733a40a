"""Sinks and the delivery worker against real receivers: an HTTP server on loopback that
verifies the HMAC, the tansu Kafka-API broker, and Mosquitto."""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client import CollectorRegistry
from sqlalchemy.engine import Engine
from sqlmodel import Session, select

from alerts.delivery import DeliveryConfig, DeliveryWorker
from alerts.metrics import AlertMetrics
from alerts.sinks import DeliveryError, KafkaSink, MqttSink, WebhookSink, mqtt_topic
from flashwatch.db.models import AlertDelivery
from flashwatch.messages import AlertEvent, decode
from flashwatch.security import NetworkPolicy
from tests.integration.alerts.helpers import (
    SECRET,
    T0,
    WebhookReceiver,
    add_camera,
    add_rule,
    fire,
    registry,
)

pytestmark = pytest.mark.integration
CAM = 920_001


@pytest.fixture
def engine(tmp_path: Path) -> Engine:
    eng = registry(tmp_path / "registry.db")
    add_camera(eng, CAM)
    return eng


@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    recv = WebhookReceiver()
    yield recv
    recv.hold.clear()
    recv.down()


def worker(engine: Engine, sinks: dict, **cfg: float) -> DeliveryWorker:
    config = DeliveryConfig(**{"backoff_base_s": 0.05, "backoff_cap_s": 0.2, **cfg})  # type: ignore[arg-type]
    return DeliveryWorker(
        engine, sinks, config=config, metrics=AlertMetrics(CollectorRegistry()), jitter=lambda: 0.0
    )


def deliveries(engine: Engine) -> list[AlertDelivery]:
    with Session(engine) as s:
        return list(s.exec(select(AlertDelivery).order_by(AlertDelivery.id)).all())  # type: ignore[arg-type]


def drain(w: DeliveryWorker, engine: Engine, timeout_s: float = 10.0) -> list[AlertDelivery]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        w.run_once()
        rows = deliveries(engine)
        if all(r.status != "pending" for r in rows):
            return rows
        time.sleep(0.02)
    return deliveries(engine)


def event(**kw: object) -> AlertEvent:
    base: dict = dict(alert_id=1, dedup_key="fw-r1-c1-0-64000", rule_id=1, rule_name="fence",
                      camera_id=1, camera_name="gate", window_start=T0 - 64, window_end=T0,
                      score=0.9, created_at=T0)  # fmt: skip
    return AlertEvent(**{**base, **kw})


def test_webhook_is_signed_and_carries_the_idempotency_key(
    engine: Engine, receiver: WebhookReceiver
) -> None:
    rule = add_rule(engine, "fence", [CAM], sinks=[{"type": "webhook", "url": receiver.url}])
    alert = fire(engine, rule, CAM, T0 + 16, evidence=[T0 + 4.0])
    w = worker(engine, {"webhook": WebhookSink(SECRET)})
    (row,) = drain(w, engine)
    w.stop()
    assert row.status == "delivered" and row.attempts == 1
    (seen,) = receiver.seen
    assert seen.verified and seen.key == alert.dedup_key
    assert seen.body["rule_name"] == "fence" and seen.body["camera_name"] == f"cam-{CAM}"
    assert seen.body["evidence"] == [T0 + 4.0] and seen.body["window_end"] == T0 + 16


def test_webhook_refuses_to_follow_redirects(receiver: WebhookReceiver) -> None:
    receiver.status = 302
    sink = WebhookSink(SECRET)
    with pytest.raises(DeliveryError) as err:
        sink.send(receiver.url, event())
    sink.close()
    assert not err.value.retry and "redirect" in str(err.value)
    assert len(receiver.seen) == 1  # nothing followed


def test_webhook_wrong_secret_is_rejected_by_receiver(receiver: WebhookReceiver) -> None:
    sink = WebhookSink(b"not-the-secret")
    with pytest.raises(DeliveryError) as err:
        sink.send(receiver.url, event())
    assert "401" in str(err.value) and not err.value.retry
    assert receiver.processed == {}


def test_webhook_policy_is_checked_at_send_time() -> None:
    sink = WebhookSink(SECRET, policy=NetworkPolicy())  # loopback not allowed
    with pytest.raises(DeliveryError) as err:
        sink.send("https://127.0.0.1:9/hook", event())
    assert not err.value.retry and "loopback" in str(err.value)


def test_webhook_timeout_is_retryable() -> None:
    def slow(_request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("timed out")

    sink = WebhookSink(SECRET, transport=httpx.MockTransport(slow))
    with pytest.raises(DeliveryError) as err:
        sink.send("https://hooks.example.com/x", event())
    assert err.value.retry


def test_kafka_sink_publishes_alert_events(engine: Engine, kafka_bootstrap: str) -> None:
    from kafka import KafkaConsumer, TopicPartition
    from kafka.admin import KafkaAdminClient, NewTopic
    from kafka.errors import TopicAlreadyExistsError

    admin = KafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    with contextlib.suppress(TopicAlreadyExistsError):
        admin.create_topics([NewTopic("fw.alerts", 1, 1)])
    admin.close()
    rule = add_rule(engine, "fence", [CAM], sinks=[{"type": "kafka", "topic": "fw.alerts"}])
    alert = fire(engine, rule, CAM, T0 + 16)
    w = worker(engine, {"kafka": KafkaSink(kafka_bootstrap)})
    (row,) = drain(w, engine, timeout_s=30)
    w.stop()
    assert row.status == "delivered", row.last_error
    consumer = KafkaConsumer(
        bootstrap_servers=kafka_bootstrap, group_id=None, auto_offset_reset="earliest",
        consumer_timeout_ms=10_000, session_timeout_ms=6000, heartbeat_interval_ms=1000,
    )  # fmt: skip
    consumer.assign([TopicPartition("fw.alerts", 0)])
    consumer.seek_to_beginning()
    got = next((r for r in consumer if r.key == alert.dedup_key.encode()), None)
    consumer.close()
    assert got is not None, "the alert never reached fw.alerts"
    ev = decode(got.value, AlertEvent)
    assert ev.alert_id == alert.id and ev.rule_name == "fence"


def test_mqtt_sink_publishes_per_camera_and_rule(
    engine: Engine, mqtt_addr: tuple[str, int]
) -> None:
    import paho.mqtt.client as mqtt

    received: list[tuple[str, bytes]] = []
    subscribed = threading.Event()
    sub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
    sub.on_message = lambda _c, _u, msg: received.append((msg.topic, msg.payload))
    sub.on_subscribe = lambda *_a: subscribed.set()
    sub.connect(*mqtt_addr)
    sub.loop_start()
    sub.subscribe("fwtest/#", qos=1)
    assert subscribed.wait(5)
    rule = add_rule(engine, "fence climb", [CAM], sinks=[{"type": "mqtt", "topic": "fwtest"}])
    alert = fire(engine, rule, CAM, T0 + 16)
    w = worker(engine, {"mqtt": MqttSink(*mqtt_addr)})
    (row,) = drain(w, engine)
    w.stop()
    deadline = time.monotonic() + 5
    while not received and time.monotonic() < deadline:
        time.sleep(0.02)
    sub.loop_stop()
    sub.disconnect()
    assert row.status == "delivered", row.last_error
    assert [t for t, _ in received] == [f"fwtest/cam-{CAM}/fence climb"]
    assert json.loads(received[0][1])["dedup_key"] == alert.dedup_key


def test_mqtt_topic_template() -> None:
    assert mqtt_topic("flashwatch", "gate", "climb") == "flashwatch/gate/climb"
    assert mqtt_topic("home/{camera}/alerts/{rule}", "a/b", "x+#") == "home/a_b/alerts/x__"


def test_missing_sink_is_retried_then_failed(engine: Engine) -> None:
    rule = add_rule(engine, "fence", [CAM], sinks=[{"type": "mqtt", "topic": "t"}])
    fire(engine, rule, CAM, T0 + 16)
    (row,) = drain(worker(engine, {}, max_retries=2), engine)
    assert row.status == "failed" and row.attempts == 3
    assert row.last_error is not None and "no 'mqtt' sink" in row.last_error
