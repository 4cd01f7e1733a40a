"""Round trips against every real test server, proving the conftest fixtures work."""

from __future__ import annotations

import secrets
import threading
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration


def test_redis_set_get(redis_url: str) -> None:
    import redis

    assert not redis_url.endswith("/0")
    client = redis.Redis.from_url(redis_url, socket_timeout=5)
    try:
        key = f"fw:test:{secrets.token_hex(4)}"
        client.set(key, b"\x00payload\xff", ex=60)
        assert client.get(key) == b"\x00payload\xff"
        assert client.connection_pool.connection_kwargs["db"] != 0
    finally:
        client.close()


def test_postgres_roundtrip(pg_url: str) -> None:
    from sqlalchemy import create_engine, text

    assert "/fw_test_" in pg_url
    engine = create_engine(pg_url)
    try:
        with engine.begin() as conn:
            conn.execute(text("CREATE TABLE svc_probe (id serial PRIMARY KEY, name text NOT NULL)"))
            conn.execute(
                text("INSERT INTO svc_probe (name) VALUES (:a), (:b)"), {"a": "cam1", "b": "cam2"}
            )
        with engine.connect() as conn:
            rows = conn.execute(text("SELECT name FROM svc_probe ORDER BY id")).scalars().all()
            assert rows == ["cam1", "cam2"]
            db = conn.execute(text("SELECT current_database()")).scalar_one()
            assert db == pg_url.rsplit("/", 1)[1]
            conn.execute(text("DROP TABLE svc_probe"))
            conn.commit()
    finally:
        engine.dispose()


def test_kafka_produce_consume_commit(kafka_bootstrap: str) -> None:
    from kafka import KafkaConsumer, KafkaProducer, TopicPartition
    from kafka.admin import KafkaAdminClient, NewTopic

    topic = f"fw-svc-{secrets.token_hex(4)}"
    admin = KafkaAdminClient(bootstrap_servers=kafka_bootstrap, request_timeout_ms=10_000)
    try:
        admin.create_topics([NewTopic(topic, num_partitions=1, replication_factor=1)])
    finally:
        admin.close()

    producer = KafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all", linger_ms=5)
    try:
        for i in range(10):
            producer.send(topic, key=b"cam1", value=f"msg-{i}".encode())
        producer.flush(timeout=10)
    finally:
        producer.close(timeout=5)

    consumer = KafkaConsumer(
        topic,
        bootstrap_servers=kafka_bootstrap,
        group_id=f"{topic}-group",
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        # kafka-python's default 45 s session timeout makes tansu's join take ~23 s; 6 s -> ~3 s
        session_timeout_ms=6000,
        heartbeat_interval_ms=1000,
    )
    got: list[bytes] = []
    try:
        deadline = time.monotonic() + 15  # tansu's group join takes ~3 s (see above)
        while len(got) < 10 and time.monotonic() < deadline:
            for records in consumer.poll(timeout_ms=500).values():
                got.extend(r.value for r in records)
        assert got == [f"msg-{i}".encode() for i in range(10)]
        consumer.commit()
        assert consumer.committed(TopicPartition(topic, 0)) == 10
    finally:
        consumer.close()


def test_mqtt_pub_sub(mqtt_addr: tuple[str, int]) -> None:
    import paho.mqtt.client as mqtt

    host, port = mqtt_addr
    topic = f"fw/test/{secrets.token_hex(4)}"
    subscribed, received = threading.Event(), threading.Event()
    payloads: list[bytes] = []

    def on_message(_c: mqtt.Client, _u: object, msg: mqtt.MQTTMessage) -> None:
        payloads.append(msg.payload)
        received.set()

    sub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"fw-sub-{topic[-8:]}")
    sub.on_message = on_message
    sub.on_subscribe = lambda *_a: subscribed.set()
    pub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"fw-pub-{topic[-8:]}")
    sub.connect(host, port, keepalive=10)
    sub.loop_start()
    try:
        sub.subscribe(topic, qos=1)
        assert subscribed.wait(5), "no SUBACK"
        pub.connect(host, port, keepalive=10)
        pub.loop_start()
        pub.publish(topic, b'{"alert": "person"}', qos=1).wait_for_publish(timeout=5)
        assert received.wait(5), "message not delivered"
        assert payloads == [b'{"alert": "person"}']
    finally:
        pub.loop_stop()
        pub.disconnect()
        sub.loop_stop()
        sub.disconnect()


def _decode_frames(url: str, want: int) -> list[object]:
    import av

    frames: list[object] = []
    with av.open(
        url, options={"rtsp_transport": "tcp", "timeout": "3000000"}, timeout=(5.0, 5.0)
    ) as container:
        stream = container.streams.video[0]
        for frame in container.decode(stream):
            frames.append(frame)
            if len(frames) >= want:
                break
    return frames


def test_rtsp_file_and_test_mounts(rtsp_server, h264_clip: Path) -> None:
    server = rtsp_server({"/clip": h264_clip, "/live": "test"})
    for mount in ("/clip", "/live"):
        frames = _decode_frames(server.url(mount), want=10)
        assert len(frames) >= 10, mount
        assert (frames[-1].width, frames[-1].height) == (320, 240)
        pts = [f.pts for f in frames if f.pts is not None]  # the first pts may be None
        assert pts == sorted(pts)
