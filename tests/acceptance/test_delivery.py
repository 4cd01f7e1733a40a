"""Acceptance D1, D2, D4, D5 (shared/ACCEPTANCE.md) against real servers on loopback: a gst
RTSP server, a tansu Kafka-API broker, Redis, and the encoder worker with a tiny random UMT.

N values: two live 160x120@10 cameras sampled every 0.25 s (a level-0 clip per second, a
level-1 clip every 4 s); the broker is down for `OUTAGE_S` = 3 s; the bus buffer holds 1000
records (nothing may be dropped in that outage).

The broker runs with tansu's in-memory storage (the only engine of this build that needs no
extra server; environment notes §5), so a restart forgets topics, records and group offsets.
D1 therefore (a) kills the broker right after memory caught up with every acknowledged clip,
(b) recreates the topic after the restart (the encoder and its consumer group member keep
running across the outage and rejoin by themselves), and (c) reports as `broker_lost` any
clip that only the killed broker acknowledged and never delivered (its storage died with it;
a durable broker keeps them).
`broker_lost` is bounded by the race window of (a); everything else must arrive. Ingest (the
camera workers and their `KafkaBus`) runs through the whole outage untouched.

Memory is a private redis-server per module: the shared test db is FLUSHDB'd by every pytest
session that starts on the machine, which wiped clips mid-scenario in early runs.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from kafka import KafkaConsumer, TopicPartition

from encoder_trt.backends import create_backend
from encoder_trt.modeling_umt import UMTClipEncoder
from encoder_trt.preprocess import encode_jpeg
from encoder_trt.testing import randomize_, tiny_config
from encoder_trt.worker import EncoderWorker
from flashwatch.messages import Clip, ClipTokens, encode
from flashwatch.security import NetworkPolicy
from ingest import CameraSpec, Supervisor, WorkerSettings, clip_publisher
from ingest.kafka_bus import KafkaBus
from ingest.ledger import ClipId, Ledger
from memory.codec import encode_tokens
from memory.layout import Keys
from memory.redis_store import RedisStore
from memory.store import MemoryBackpressure, MemoryUnavailable
from memory.testing import RedisServer
from tests import services
from tests.acceptance.checker import check, memory_dump, missing
from tests.waiting import wait_for

pytestmark = [pytest.mark.acceptance, pytest.mark.integration, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
SIZE = tiny_config().image_size  # clips must match the encoder input (96 px)
MODEL_SEED = 11
OUTAGE_S = 3.0
LEVELS = (0, 1)
SETTINGS = WorkerSettings(
    level0_interval_s=0.25,
    pyramid_levels=len(LEVELS),
    frame_size=SIZE,
    open_timeout_s=3.0,
    read_timeout_s=1.5,
    stall_timeout_s=3.0,
    backoff_initial_s=0.1,
    backoff_max_s=0.8,
    network_policy=NetworkPolicy(allow_loopback=True),
)


def fast_bus(bootstrap: str, **kw: Any) -> KafkaBus:
    """A KafkaBus that notices a dead broker and retries within seconds."""
    return KafkaBus(
        bootstrap, retry_backoff_s=0.2, request_timeout_s=2.0, delivery_timeout_s=4.0, **kw
    )


@pytest.fixture(scope="module")
def private_redis() -> Iterator[str]:
    """A redis-server of this module's own: the shared test db is FLUSHDB'd by every pytest
    session that starts on this machine, which would wipe memory mid-scenario."""
    try:
        server = RedisServer().start()
    except FileNotFoundError as exc:
        pytest.skip(str(exc))
    yield server.url
    server.stop()


def tiny_encoder() -> object:
    torch.manual_seed(0)
    return create_backend("torch", model=randomize_(UMTClipEncoder(tiny_config()), seed=MODEL_SEED))


class RecordingStore:
    """The real store, plus the ids of every write in order (redeliveries show up twice)."""

    def __init__(self, inner: RedisStore) -> None:
        self.inner = inner
        self.writes: list[ClipId] = []
        self._lock = threading.Lock()

    def put_many(self, cts: list[ClipTokens]) -> None:
        self.inner.put_many(cts)
        with self._lock:
            self.writes += [c.clip_id for c in cts]


class EncoderThread:
    """An EncoderWorker consuming `topic` from Kafka on its own thread, as the encoder role."""

    def __init__(self, bus: KafkaBus, topic: str, group: str, encoder: object, store: object):
        self.consumer = bus.consumer(topic, group)
        self.worker = EncoderWorker(
            self.consumer,
            encoder,  # type: ignore[arg-type]
            store,  # type: ignore[arg-type]
            quantise=encode_tokens,
            token_dtype="int8",
            max_batch=8,
            batch_timeout_s=0.1,
            retryable=(MemoryBackpressure, MemoryUnavailable),
        )
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.worker.run, args=(self.stop,), daemon=True)
        self.thread.start()

    def close(self) -> None:  # idempotent
        if self.stop.is_set():
            return
        self.stop.set()
        self.thread.join(15)
        self.consumer.close()


# ---- D1 (+ D5 on the same run) -------------------------------------------------------------


@dataclass
class D1Run:
    ledger: Ledger
    memory: list[ClipTokens]
    broker_lost: set[ClipId]
    acked_before_kill: int
    buffered_at_restart: int
    dropped: int
    send_failures: int
    outage_s: float
    drain_s: float
    memory_catch_up_s: float
    encoder_alive: bool


@pytest.fixture(scope="module")
def d1_run(private_redis: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[D1Run]:
    tmp = tmp_path_factory.mktemp("d1")
    port = services.free_port()
    broker, bootstrap = services.start_tansu(tmp, port=port)
    rtsp = services.start_rtsp_server(
        {"/a": "test:160x120@10", "/b": "test:160x120@10"}, log_path=tmp / "rtsp.log"
    )
    cams = [
        CameraSpec(id=5101, name="a", url=f"{rtsp.base_url}/a"),  # type: ignore[attr-defined]
        CameraSpec(id=5102, name="b", url=f"{rtsp.base_url}/b"),  # type: ignore[attr-defined]
    ]
    topic = f"fw.clips.d1-{uuid.uuid4().hex[:6]}"
    ledger = Ledger(path=tmp / "ledger.jsonl")
    bus = fast_bus(bootstrap, on_delivery=ledger.delivery, buffer_records=1000)
    enc_bus = fast_bus(bootstrap)  # the encoder role's own client
    store = RedisStore(private_redis, [24.0, 24.0], namespace=f"d1-{uuid.uuid4().hex[:6]}")
    sup = Supervisor(lambda: cams, ledger.wrap(clip_publisher(bus, topic)), SETTINGS)
    encoder: EncoderThread | None = None

    def held() -> list[ClipTokens]:
        return memory_dump(store, [c.id for c in cams], LEVELS)

    try:
        bus.ensure_topics({topic: 2})
        model = tiny_encoder()
        encoder = EncoderThread(enc_bus, topic, "d1-encoders", model, store)
        sup.start()
        # Stream until every camera has clips at every level in memory.
        wait_for(
            lambda: (
                {(c.camera_id, c.level) for c in held()}
                >= {(cam.id, lvl) for cam in cams for lvl in LEVELS}
            ),
            40,
            "clips of every camera and level in memory",
            step=0.2,
        )

        # Kill -9 the broker right after memory caught up with everything acknowledged (a new
        # clip is ~0.4 s away: see the module docstring).
        seen, deadline = len(held()), time.monotonic() + 20
        while True:
            ids = {c.clip_id for c in held()}
            if len(ids) > seen and set(ledger.acked) <= ids:
                break
            assert time.monotonic() < deadline, f"memory lags: {set(ledger.acked) - ids}"
            seen = len(ids)
            time.sleep(0.02)
        broker.kill()
        t_kill = time.monotonic()
        broker.wait()
        acked_before = Counter(ledger.acked)
        time.sleep(OUTAGE_S)  # ingest keeps streaming into the bus buffer
        buffered = bus.buffered
        broker, _ = services.start_tansu(tmp, port=port)
        t_up = time.monotonic()
        bus.ensure_topics({topic: 2})  # in-memory storage: the topic died with the broker
        bus.flush(timeout_s=30)
        drain_s = time.monotonic() - t_up
        # Live clips keep flowing after the catch-up.
        n_up = len(ledger.produced)
        wait_for(lambda: len(ledger.produced) >= n_up + 4, 20, "new clips after the restart")
        sup.stop(timeout_s=8)
        bus.flush(timeout_s=30)

        # Only the killed broker acknowledged these, and they never reached memory.
        def broker_lost() -> set[ClipId]:
            have = {c.clip_id for c in held()}
            return {
                cid
                for cid, n in acked_before.items()
                if ledger.acked.get(cid, 0) == n and cid not in have
            }

        def caught_up() -> bool:
            have = {c.clip_id for c in held()}
            return set(ledger.acked) - have <= broker_lost()

        catch_up_s = wait_for(caught_up, 60, "memory to hold every acknowledged clip", 0.2)
        yield D1Run(
            ledger=ledger,
            memory=held(),
            broker_lost=broker_lost(),
            acked_before_kill=len(acked_before),
            buffered_at_restart=buffered,
            dropped=bus.stats.dropped,
            send_failures=bus.stats.send_failures,
            outage_s=t_up - t_kill,
            drain_s=drain_s,
            memory_catch_up_s=catch_up_s + drain_s,
            encoder_alive=encoder.thread.is_alive(),
        )
    finally:
        sup.stop(timeout_s=8)
        if encoder is not None:
            encoder.close()
        bus.close(timeout_s=1)
        enc_bus.close(timeout_s=1)
        store.close()
        ledger.close()
        services.stop(broker)
        services.stop(rtsp)


def test_d1_broker_killed_mid_stream_loses_nothing(d1_run: D1Run) -> None:
    r = d1_run
    report = check(r.ledger, r.memory)
    print(report.line("D1"))
    print(
        f"D1: outage {r.outage_s:.1f} s, {r.buffered_at_restart} records buffered at restart, "
        f"bus drained {r.drain_s:.1f} s after restart, memory caught up "
        f"{r.memory_catch_up_s:.1f} s after restart; acked before kill {r.acked_before_kill}, "
        f"send failures {r.send_failures}, dropped {r.dropped}, broker_lost {len(r.broker_lost)}"
    )
    lost = [cid for cid in missing(r.ledger, r.memory) if cid not in r.broker_lost]
    assert lost == [], f"lost {len(lost)}: {lost[:5]}"
    assert report.duplicated == 0 and report.unexpected == 0
    assert report.aborted == 0 and r.dropped == 0  # a 3 s outage fits the bounded buffer
    assert report.gaps <= len(r.broker_lost)
    assert len(r.broker_lost) <= 2  # the race window of the synchronised kill
    assert r.buffered_at_restart >= 3  # clips really were produced during the outage
    assert r.encoder_alive


def test_d5_memory_timelines_are_ordered_at_every_level(d1_run: D1Run) -> None:
    """D5 on D1's memory (with its redeliveries): per camera and level, clips are strictly
    ordered and non-overlapping; each clip's frames are increasing."""
    report = check(d1_run.ledger, d1_run.memory)
    per = Counter((c.camera_id, c.level) for c in d1_run.memory)
    print(f"D5: clips per (camera, level) {dict(sorted(per.items()))}, disorder={report.disorder}")
    assert report.disorder == 0
    assert len(per) == 4 and min(per.values()) >= 2
    for (cam, lvl), n in per.items():
        starts = [c.t[0] for c in d1_run.memory if (c.camera_id, c.level) == (cam, lvl)]
        assert starts == sorted(starts) and len(set(starts)) == n


# ---- D2 and D4: synthetic clips straight onto the bus -----------------------------------------

T0 = 1_791_000_000.0


def make_clip(camera_id: int, i: int) -> Clip:
    rng = np.random.default_rng(camera_id * 1000 + i)
    frames = [encode_jpeg(rng.integers(0, 255, (SIZE, SIZE, 3), dtype=np.uint8)) for _ in range(4)]
    t = (T0 + 4 * i, T0 + 4 * i + 1, T0 + 4 * i + 2, T0 + 4 * i + 3)
    return Clip(camera_id=camera_id, level=0, epoch=1, t=t, frames=frames)


CRASHING_ENCODER = """
import json, os, signal, sys, threading
sys.path.insert(0, {root!r})
from encoder_trt.worker import EncoderWorker
from ingest.kafka_bus import KafkaBus
from memory.codec import encode_tokens
from memory.redis_store import RedisStore
from tests.acceptance.test_delivery import tiny_encoder

bootstrap, topic, group, redis_url, namespace, out = sys.argv[1:7]
store = RedisStore(redis_url, [24.0], namespace=namespace)
consumer = KafkaBus(bootstrap).consumer(topic, group)
commits = []


class Store:
    def put_many(self, cts):
        store.put_many(cts)
        self.last = [list(c.clip_id) for c in cts]


class Consumer:
    def poll(self, max_records=64, timeout_s=1.0):
        return consumer.poll(max_records, timeout_s)

    def commit(self, records):
        if commits:  # the second batch: written to memory, now die before committing it
            with open(out, "w") as fh:
                json.dump({{"committed": commits[0], "crashed": sink.last}}, fh)
            os.kill(os.getpid(), signal.SIGKILL)
        consumer.commit(records)
        commits.append(sink.last)

    def rewind(self):
        consumer.rewind()


sink = Store()
worker = EncoderWorker(Consumer(), tiny_encoder(), sink, quantise=encode_tokens,
                       token_dtype="int8", max_batch=4, batch_timeout_s=0.5)
while True:
    worker.step()
"""


def test_d2_encoder_killed_between_memory_write_and_commit(
    kafka_bootstrap: str, private_redis: str, tmp_path: Path
) -> None:
    """The encoder process writes a batch to memory and is SIGKILLed before its offset commit;
    the next group member gets the batch again and rewrites the same keys."""
    topic, group = f"fw.clips.d2-{uuid.uuid4().hex[:6]}", "d2-encoders"
    namespace = f"d2-{uuid.uuid4().hex[:6]}"
    ledger = Ledger()
    bus = KafkaBus(kafka_bootstrap, on_delivery=ledger.delivery)
    store = RedisStore(private_redis, [24.0], namespace=namespace)
    n, cam = 12, 5201
    try:
        bus.ensure_topics({topic: 1})
        publish = ledger.wrap(clip_publisher(bus, topic))
        for i in range(n):
            publish(make_clip(cam, i))
        bus.flush(timeout_s=20)
        out = tmp_path / "crash.json"
        script = CRASHING_ENCODER.format(root=str(ROOT))
        argv = [sys.executable, "-c", script, kafka_bootstrap, topic, group, private_redis]
        t0 = time.monotonic()
        proc = subprocess.run([*argv, namespace, str(out)], timeout=90, capture_output=True)
        assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()[-2000:]
        crash = json.loads(out.read_text())
        committed = {tuple(c) for c in crash["committed"]}
        crashed = {tuple(c) for c in crash["crashed"]}
        in_memory = {c.clip_id for c in memory_dump(store, [cam], [0])}
        assert crashed and crashed <= in_memory  # written before the kill
        t_crash = time.monotonic() - t0

        recorder = RecordingStore(store)
        encoder = EncoderThread(bus, topic, group, tiny_encoder(), recorder)
        try:
            took = wait_for(
                lambda: len(set(recorder.writes) | committed) >= n, 45, "the rest of the topic"
            )
        finally:
            encoder.close()
        memory = memory_dump(store, [cam], [0])
        report = check(ledger, memory)
        rewritten = crashed & set(recorder.writes)
        print(report.line("D2"))
        print(
            f"D2: crashed process exited {proc.returncode} after {t_crash:.1f} s, committed "
            f"{len(committed)}, written-not-committed {len(crashed)}, rewritten by the next "
            f"member {len(rewritten)} ({took:.1f} s after it started)"
        )
        assert rewritten == crashed  # redelivered and rewritten under the same keys
        assert not committed & set(recorder.writes)  # committed clips did not come back
        assert report.lost == 0 and report.duplicated == 0 and report.unexpected == 0
        assert report.in_memory == n and len(memory) == n  # exactly one entry per clip id
        # The raw index too: one member per clip id, the rewrite replaced its own entry.
        assert store.raw_client().zcard(Keys(namespace).index(cam, 0)) == n
    finally:
        bus.close(timeout_s=1)
        store.close()


def test_d4_poison_messages_are_dead_lettered_and_consumption_goes_on(
    kafka_bootstrap: str, private_redis: str
) -> None:
    suffix = uuid.uuid4().hex[:6]
    topic, dlq = f"fw.clips.d4-{suffix}", f"fw.dead-letter.d4-{suffix}"
    bus = KafkaBus(kafka_bootstrap, dead_letter_topic=dlq)
    store = RedisStore(private_redis, [24.0], namespace=f"d4-{suffix}")
    ledger = Ledger()
    cam = 5301
    try:
        bus.ensure_topics({topic: 1, dlq: 1})
        publish = ledger.wrap(clip_publisher(bus, topic), acked_on_return=True)
        good = encode(make_clip(cam, 1))
        bad_schema = good.replace(b"\xa6schema\x01", b"\xa6schema\x63", 1)
        assert bad_schema != good
        publish(make_clip(cam, 0))
        bus.publish(topic, bad_schema, key=str(cam).encode())
        bus.publish(topic, good[: len(good) // 2], key=str(cam).encode())  # truncated
        for i in range(2, 5):
            publish(make_clip(cam, i))
        bus.flush(timeout_s=20)

        encoder = EncoderThread(bus, topic, "d4-encoders", tiny_encoder(), store)
        # As the pipeline wires it: the worker hands the poison record to the bus's dead letter.
        encoder.worker.dead_letter = bus.dead_letter
        try:
            wait_for(lambda: len(memory_dump(store, [cam], [0])) >= 4, 30, "the good clips")
            dead = read_topic(kafka_bootstrap, dlq, 2)
            stats = encoder.worker.stats
        finally:
            encoder.close()
        bus.flush(timeout_s=10)
        probe = KafkaConsumer(
            bootstrap_servers=kafka_bootstrap, group_id="d4-encoders", enable_auto_commit=False
        )
        committed = probe.committed(TopicPartition(topic, 0))
        probe.close()
        report = check(ledger, memory_dump(store, [cam], [0]))
        reasons = [dict(d.headers)["fw-reason"].decode() for d in dead]
        print(report.line("D4"))
        print(f"D4: dead letters {len(dead)} reasons {reasons}; committed offset {committed}")
        assert len(dead) == 2 and stats.dead_letters == 2
        assert any("schema version 99" in r for r in reasons), reasons
        assert any("MalformedMessage" in r or "truncated" in r.lower() for r in reasons), reasons
        assert committed == 6  # past both poison records and every good clip
        assert report.lost == 0 and report.in_memory == 4 and report.duplicated == 0
    finally:
        bus.close(timeout_s=1)
        store.close()


def read_topic(bootstrap: str, topic: str, n: int, timeout: float = 15.0) -> list[Any]:
    raw = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    try:
        tp = TopicPartition(topic, 0)
        raw.assign([tp])
        raw.seek_to_beginning(tp)
        got: list[Any] = []
        deadline = time.monotonic() + timeout
        while len(got) < n and time.monotonic() < deadline:
            for recs in raw.poll(timeout_ms=300).values():
                got += recs
        return got
    finally:
        raw.close()


def test_checker_counts_what_it_must() -> None:
    """The checker itself can fail: a lost, a duplicated, an aborted and a disordered clip."""
    ledger = Ledger()
    publish = ledger.wrap(lambda clip: None)
    clips = [make_clip(5901, i) for i in range(5)]
    for c in clips:
        publish(c)
    for c in clips[:4]:  # the fifth is never acknowledged
        ledger.delivery("t", None, encode(c), ok=True)

    def tokens(c: Clip, t: tuple[float, ...] | None = None) -> ClipTokens:
        x = np.ones((4, 8), np.float32)
        return encode_tokens(x, "int8", camera_id=c.camera_id, level=0, epoch=1, t=t or c.t)

    held = [tokens(clips[0]), tokens(clips[0]), tokens(clips[2]), tokens(clips[3])]
    report = check(ledger, held)
    print(report.line("self-test"))
    assert (report.lost, report.duplicated, report.gaps, report.aborted) == (1, 1, 1, 1)
    assert not report.ok and missing(ledger, held) == [clips[1].clip_id]
    backwards = tokens(clips[1], (T0 + 2.0, T0 + 1.0, T0 + 3.0, T0 + 4.0))
    assert check(ledger, [tokens(clips[0]), backwards]).disorder == 2  # inside and across
