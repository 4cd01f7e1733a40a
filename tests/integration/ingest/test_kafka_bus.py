"""KafkaBus against a real Kafka-API broker (tansu): keyed clips round trip with manual
commits and rewind, dead letters (D4), buffering while the broker is down (D1).

tansu quirks (environment notes §5): a group join takes ~5 s, and end offsets are wrong,
so the tests poll until they have what they expect and never ask for end offsets."""

from __future__ import annotations

import time
import uuid
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

import pytest
from kafka import KafkaConsumer, TopicPartition

from flashwatch.bus import Consumer, Record
from flashwatch.messages import Clip, MessageError, decode, encode
from flashwatch.security import NetworkPolicy
from ingest import CameraSpec, Supervisor, WorkerSettings, clip_publisher
from ingest.kafka_bus import KafkaBus, MessageTooLargeError
from ingest.ledger import Ledger
from tests import services

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def clip(camera: int, i: int) -> Clip:
    t0 = 1_700_000_000.0 + 4 * i
    return Clip(
        camera_id=camera,
        level=0,
        epoch=1,
        t=(t0, t0 + 1, t0 + 2, t0 + 3),
        frames=[b"j" * 1000] * 4,
        thumb=b"th",
    )


def poll_until(consumer: Consumer, n: int, timeout: float = 25.0) -> list[Record]:
    out: list[Record] = []
    deadline = time.monotonic() + timeout
    while len(out) < n and time.monotonic() < deadline:
        out += consumer.poll(max_records=500, timeout_s=0.5)
    return out


def test_clips_round_trip_keyed_with_commit_and_rewind(kafka_bootstrap: str) -> None:
    topic, group = f"clips-{uuid.uuid4().hex[:8]}", "enc"
    ledger = Ledger()
    bus = KafkaBus(kafka_bootstrap, on_delivery=ledger.delivery)
    try:
        bus.ensure_topics({topic: 4})
        bus.ensure_topics({topic: 4})  # idempotent
        publish = ledger.wrap(clip_publisher(bus, topic))
        for i in range(30):
            for cam in (1, 2, 3):
                publish(clip(cam, i))
        bus.flush(timeout_s=20)
        assert bus.stats.sent == 90 and bus.stats.dropped == 0
        assert len(ledger.produced) == 90 and ledger.unacked() == set()

        c1 = bus.consumer(topic, group)
        got = poll_until(c1, 90)
        assert len(got) == 90
        partitions: dict[int, set[int]] = defaultdict(set)
        per_camera: dict[int, list[float]] = defaultdict(list)
        for r in got:
            c = decode(r.value, Clip)
            assert r.key == str(c.camera_id).encode()
            partitions[c.camera_id].add(r.partition)
            per_camera[c.camera_id].append(c.t[0])
        assert all(len(p) == 1 for p in partitions.values())  # one camera, one partition (D5)
        assert all(ts == sorted(ts) and len(ts) == 30 for ts in per_camera.values())

        # Commit the first half of each partition; rewind: exactly the other half comes back.
        by_partition: dict[int, list[Record]] = defaultdict(list)
        for r in got:
            by_partition[r.partition].append(r)
        done = [r for rs in by_partition.values() for r in rs[: len(rs) // 2]]
        rest = sorted((r.partition, r.offset) for r in got if r not in done)
        c1.commit(done)
        c1.rewind()
        again = poll_until(c1, len(rest))
        assert sorted((r.partition, r.offset) for r in again) == rest
        c1.close()

        # A new member of the group resumes at the committed offsets.
        c2 = bus.consumer(topic, group)
        resumed = poll_until(c2, len(rest))
        assert sorted((r.partition, r.offset) for r in resumed) == rest
        c2.commit(resumed)
        c2.close()
    finally:
        bus.close()


def test_poison_messages_go_to_the_dead_letter_topic(kafka_bootstrap: str) -> None:
    """ACCEPTANCE D4: bad schema version and truncated payload -> dead letter with the reason;
    offsets advance; the good record still gets through."""
    suffix = uuid.uuid4().hex[:8]
    topic, dlq = f"clips-{suffix}", f"dead-{suffix}"
    bus = KafkaBus(kafka_bootstrap, dead_letter_topic=dlq)
    try:
        bus.ensure_topics({topic: 1, dlq: 1})
        good = encode(clip(9, 0))
        bad_schema = encode(clip(9, 1)).replace(b"\xa6schema\x01", b"\xa6schema\x63", 1)
        assert bad_schema != good
        for value in (bad_schema, good[: len(good) // 2], good):
            bus.publish(topic, value, key=b"9")
        bus.flush(timeout_s=20)

        consumer = bus.consumer(topic, "enc-dlq")
        records = poll_until(consumer, 3)
        decoded = []
        for r in records:
            try:
                decoded.append(decode(r.value, Clip))
            except MessageError as exc:
                bus.dead_letter(r, str(exc))
            consumer.commit([r])
        bus.flush(timeout_s=20)
        assert len(decoded) == 1 and bus.stats.dead_lettered == 2
        consumer.close()

        raw = KafkaConsumer(bootstrap_servers=kafka_bootstrap, enable_auto_commit=False)
        tp = TopicPartition(dlq, 0)
        raw.assign([tp])
        raw.seek_to_beginning(tp)
        dead = []
        deadline = time.monotonic() + 15
        while len(dead) < 2 and time.monotonic() < deadline:
            for recs in raw.poll(timeout_ms=500).values():
                dead += recs
        raw.close()
        reasons = [dict(d.headers)["fw-reason"].decode() for d in dead]
        assert any("schema version 99" in r for r in reasons), reasons
        assert any(
            "MalformedMessage" in r or "truncated" in r.lower() or "Clip" in r for r in reasons
        )
        assert all(dict(d.headers)["fw-topic"] == topic.encode() for d in dead)
        # The offset advanced past all three (OffsetFetch: no group join needed).
        probe = KafkaConsumer(
            bootstrap_servers=kafka_bootstrap, group_id="enc-dlq", enable_auto_commit=False
        )
        assert probe.committed(TopicPartition(topic, 0)) == 3
        probe.close()
    finally:
        bus.close()


def test_oversized_records_are_refused_before_sending() -> None:
    bus = KafkaBus("127.0.0.1:1", max_message_bytes=10_000)
    try:
        with pytest.raises(MessageTooLargeError):
            bus.publish("t", b"x" * 20_000)
        assert bus.stats.published == 0
    finally:
        bus.close(timeout_s=0.1)


def test_buffers_while_the_broker_is_down_and_resumes(tmp_path: Path) -> None:
    """ACCEPTANCE D1 in small: the broker is down at first; publish never blocks, the buffer
    keeps the newest `buffer_records`, and everything buffered arrives once it is up."""
    port = services.free_port()
    bus = KafkaBus(
        f"127.0.0.1:{port}",
        buffer_records=20,
        retry_backoff_s=0.2,
        request_timeout_s=2,
        delivery_timeout_s=4,
    )
    proc = None
    try:
        t0 = time.monotonic()
        for i in range(25):
            bus.publish("d1", encode(clip(4, i)), key=b"4")
        assert time.monotonic() - t0 < 0.5  # never blocked
        with pytest.raises(TimeoutError):
            bus.flush(timeout_s=1.0)
        assert bus.stats.dropped == 5 and bus.buffered == 20

        proc, bootstrap = services.start_tansu(tmp_path, port=port)
        t_up = time.monotonic()
        bus.flush(timeout_s=40)
        print(f"D1-lite: 20 buffered records drained {time.monotonic() - t_up:.1f} s after start")
        got = read_all(bootstrap, "d1", 20)
        times = sorted(decode(v, Clip).t[0] for v in got)
        assert times == [1_700_000_000.0 + 4 * i for i in range(5, 25)]  # oldest 5 dropped
    finally:
        bus.close(timeout_s=1)
        services.stop(proc)


def read_all(bootstrap: str, topic: str, n: int, timeout: float = 15.0) -> list[bytes]:
    raw = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    try:
        tps = [TopicPartition(topic, p) for p in raw.partitions_for_topic(topic) or {0}]
        raw.assign(tps)
        raw.seek_to_beginning(*tps)
        got: list[bytes] = []
        deadline = time.monotonic() + timeout
        while len(got) < n and time.monotonic() < deadline:
            for recs in raw.poll(timeout_ms=500).values():
                got += [r.value for r in recs]
        return got
    finally:
        raw.close()


def test_broker_killed_mid_stream_then_restarted(tmp_path: Path) -> None:
    """ACCEPTANCE D1 in small: kill -9 the broker after some records, keep publishing, restart
    it on the same port: everything published after the kill is delivered (the in-memory
    broker lost the earlier ones with its storage; the acceptance test uses durable storage).
    Also covers kafka-python's idempotent producer not surviving a broker that forgot its
    producer id: the bus replaces the producer."""
    port = services.free_port()
    proc, bootstrap = services.start_tansu(tmp_path, port=port)
    bus = KafkaBus(bootstrap, retry_backoff_s=0.2, request_timeout_s=2, delivery_timeout_s=4)
    try:
        for i in range(10):
            bus.publish("d1k", b"a%d" % i, key=b"7")
        bus.flush(timeout_s=15)
        proc.kill()
        proc.wait()
        for i in range(10):
            bus.publish("d1k", b"b%d" % i, key=b"7")
        time.sleep(1.0)
        proc, bootstrap = services.start_tansu(tmp_path, port=port)
        t_up = time.monotonic()
        bus.flush(timeout_s=40)
        print(f"D1-kill: caught up {time.monotonic() - t_up:.1f} s after the restart")
        got = read_all(bootstrap, "d1k", 10)
        assert sorted(got) == sorted(b"b%d" % i for i in range(10))
        assert bus.stats.dropped == 0
    finally:
        bus.close(timeout_s=1)
        services.stop(proc)


def test_rtsp_camera_to_kafka_at_every_level(
    kafka_bootstrap: str, rtsp_server: Callable[..., services.RtspServer], h264_clip: Path
) -> None:
    """Supervisor -> KafkaBus -> consumer group: clips of every level arrive, keyed, decodable."""
    server = rtsp_server({"/cam": h264_clip})
    topic = f"clips-{uuid.uuid4().hex[:8]}"
    settings = WorkerSettings(
        level0_interval_s=0.25,
        pyramid_levels=2,
        frame_size=32,
        network_policy=NetworkPolicy(allow_loopback=True),
    )
    cams = [CameraSpec(id=77, name="k", url=server.url("/cam"))]
    bus = KafkaBus(kafka_bootstrap)
    sup = Supervisor(lambda: cams, clip_publisher(bus, topic), settings)
    try:
        bus.ensure_topics({topic: 2})
        consumer = bus.consumer(topic, "enc-e2e")
        sup.start()
        got: list[Clip] = []
        deadline = time.monotonic() + 30
        while {c.level for c in got} != {0, 1} and time.monotonic() < deadline:
            records = consumer.poll(max_records=100, timeout_s=0.5)
            got += [decode(r.value, Clip) for r in records]
            assert all(r.key == b"77" for r in records)
            consumer.commit(records)
        consumer.close()
        assert {c.level for c in got} == {0, 1}
        assert all(c.camera_id == 77 and len(c.frames) == 4 for c in got)
    finally:
        sup.stop(timeout_s=8)
        bus.close()
