"""Redis fault scenarios against private redis-server processes (acceptance M1, M2, M4) and the
memory footprint of one clip measured with MEMORY USAGE."""

from __future__ import annotations

import io
import os
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from flashwatch.config import MemoryConfig
from memory import MemoryBackpressure, MemoryUnavailable, open_store
from memory.redis_store import RedisStore
from memory.testing import RedisServer, make_clip

pytestmark = pytest.mark.integration

HOURS = [6.0, 48.0, 168.0]


@pytest.fixture
def private_redis() -> Iterator[list[RedisServer]]:
    """Hands out RedisServer objects to configure; every one is stopped and removed after."""
    servers: list[RedisServer] = []
    yield servers
    for server in servers:
        server.cleanup()


def _server(servers: list[RedisServer], *args: str) -> RedisServer:
    try:
        server = RedisServer(*args)
    except FileNotFoundError as exc:
        if os.environ.get("CI"):
            pytest.fail(str(exc))
        pytest.skip(str(exc))
    servers.append(server)
    return server


def test_m4_down_at_start_then_ready(private_redis: list[RedisServer]) -> None:
    server = _server(private_redis)
    store = RedisStore(server.url, HOURS, retries=3, backoff_base_s=0.02, backoff_cap_s=0.1)
    t = time.monotonic()
    assert store.ping() is False  # not ready, and opening the store did not raise
    assert time.monotonic() - t < 2.0
    t = time.monotonic()
    with pytest.raises(MemoryUnavailable):
        store.put(make_clip(1, 0, 100.0))
    assert time.monotonic() - t < 5.0, "the reconnect bound must be short and capped"
    server.start()
    deadline = time.monotonic() + 5
    while not store.ping():
        assert time.monotonic() < deadline, "never became ready after Redis came up"
        time.sleep(0.05)
    store.put(make_clip(1, 0, 100.0))
    assert store.coverage(1) == {0: (100.0, 100.0, 1)}
    store.close()


def test_open_store_redis_while_down_does_not_crash(private_redis: list[RedisServer]) -> None:
    server = _server(private_redis)
    store = open_store(MemoryConfig(redis_url=server.url), Path("/nonexistent"))
    assert isinstance(store, RedisStore) and store.ping() is False
    server.start()
    assert store.ping() is True
    store.close()


def test_m1_kill9_with_aof_loses_no_acknowledged_clip(private_redis: list[RedisServer]) -> None:
    server = _server(private_redis, "--appendonly", "yes", "--appendfsync", "always").start()
    store = RedisStore(server.url, HOURS, retries=10, backoff_base_s=0.02, backoff_cap_s=0.5)
    total, acked, failures = 150, [], [0]

    def encoder() -> None:
        """Like the encoder worker: retry a clip until acknowledged, then 'commit' it."""
        for i in range(total):
            ct = make_clip(5, 0, 1000.0 + 4 * i, seed=i, thumb=b"thumb%d" % i)
            while True:
                try:
                    store.put(ct)
                    break
                except MemoryUnavailable:
                    failures[0] += 1
                    time.sleep(0.05)
            acked.append(ct.t[0])

    writer = threading.Thread(target=encoder)
    writer.start()
    while len(acked) < 40:
        time.sleep(0.005)
    server.kill9()
    killed_at = len(acked)
    time.sleep(0.3)
    server.start()
    writer.join(timeout=60)
    assert not writer.is_alive()
    got = [c.t[0] for c in store.range(5, 0, 0, 1e9)]
    lost = sorted(set(acked) - set(got))
    print(
        f"\nM1: killed after {killed_at} acks, {failures[0]} unavailable errors, lost={len(lost)}"
    )
    assert lost == []
    assert got == sorted(acked) and len(got) == total  # exactly one entry per clip id
    store.close()


def test_m2_noeviction_oom_is_backpressure(private_redis: list[RedisServer]) -> None:
    server = _server(private_redis, "--maxmemory", "2mb", "--maxmemory-policy", "noeviction")
    server.start()
    store = RedisStore(server.url, HOURS, retries=1)
    acked = 0
    with pytest.raises(MemoryBackpressure):
        for i in range(200):
            store.put(make_clip(3, 0, 1000.0 + 4 * i, seed=i, thumb=b"j" * 4000))
            acked += 1
    refused_t0 = 1000.0 + 4 * acked
    assert 3 <= acked < 200
    client = store.raw_client()
    assert client.info("stats")["evicted_keys"] == 0  # nothing evicted
    assert client.keys(f"fw:{{3}}:0:*:{int(refused_t0 * 1000)}*") == []  # nothing half-written
    # queries are still answered and see every acknowledged clip
    assert len(store.range(3, 0, 0, 1e9)) == acked
    assert store.stats().entries == acked and store.ping()
    with pytest.raises(MemoryBackpressure):  # still full: the encoder keeps pausing
        store.put(make_clip(3, 0, refused_t0))
    # retention relieves it (trim must work at OOM), then writes go through again
    assert store.trim(now=1000.0 + 4 * (acked // 2) + 6 * 3600) == acked // 2
    store.put(make_clip(3, 0, refused_t0))
    assert store.coverage(3)[0].clips == acked - acked // 2 + 1
    store.close()


def _jpeg_thumb(width: int = 320, height: int = 180) -> bytes:
    from PIL import Image

    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:height, 0:width]
    img = np.stack([xx * 255 / width, yy * 255 / height, (xx + yy) % 256], axis=-1)
    img = np.clip(img + rng.normal(0, 12, img.shape), 0, 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="JPEG", quality=80)
    return buf.getvalue()


def test_memory_usage_per_clip_avoids_size_class_waste(redis_url: str) -> None:
    ns = f"fwm{uuid.uuid4().hex[:8]}"
    store = RedisStore(redis_url, HOURS, namespace=ns)
    client = store.raw_client()
    thumb = _jpeg_thumb()
    n = 100
    report = {}
    try:
        for dtype, cam in (("int8", 1), ("fp16", 2)):
            store.put_many(
                [
                    make_clip(cam, 0, 1000.0 + 4 * i, dtype=dtype, seed=i, thumb=thumb)
                    for i in range(n)
                ]
            )
            keys = client.keys(f"{ns}:{{{cam}}}:0:c:1000000*")
            chunk_usage = sum(client.memory_usage(k, samples=0) for k in keys)
            thumb_usage = client.memory_usage(f"{ns}:{{{cam}}}:0:th:1000000", samples=0)
            index = client.memory_usage(f"{ns}:{{{cam}}}:0:idx", samples=0) / n
            stream = client.memory_usage(f"{ns}:{{{cam}}}:0:new", samples=0) / n
            token_bytes = 64 * 1024 * (1 if dtype == "int8" else 2)
            report[dtype] = {
                "chunks": chunk_usage,
                "thumb": thumb_usage,
                "index_per_clip": round(index),
                "stream_per_clip": round(stream),
                "total": round(chunk_usage + thumb_usage + index + stream),
            }
            assert chunk_usage <= token_bytes * 1.01, report  # no 1.25× size class
        print(f"\nthumb {len(thumb)} B; MEMORY USAGE per level-0 clip: {report}")
        assert report["int8"]["total"] <= 80 * 1024
    finally:
        for cam in (1, 2):
            store.delete_camera(cam)
        store.close()
