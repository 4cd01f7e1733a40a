"""Encoder worker: bus -> tiny random UMT -> real memory store, commit only after writes.

Covers D2/D4/M2 of shared/ACCEPTANCE.md at the worker level: a failed memory write is not
committed and the clip comes back; poison messages go to the dead letter and are
committed past; Redis at maxmemory with noeviction pauses the worker and loses nothing.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import redis
import torch

from encoder_trt.backends import create_backend
from encoder_trt.modeling_umt import UMTClipEncoder
from encoder_trt.preprocess import encode_jpeg
from encoder_trt.testing import randomize_, tiny_config
from encoder_trt.worker import EncoderWorker
from flashwatch.bus import InProcessBus
from flashwatch.messages import Clip, encode
from memory.codec import encode_tokens
from memory.redis_store import RedisStore
from memory.sqlite_store import SqliteStore
from memory.store import MemoryBackpressure, MemoryUnavailable
from memory.testing import RedisServer

T0 = 1_780_000_000.0


@pytest.fixture(scope="module")
def encoder() -> object:
    torch.manual_seed(0)
    model = randomize_(UMTClipEncoder(tiny_config()), seed=3)
    return create_backend("torch", model=model)


def clip(camera_id: int, i: int, size: int = 96) -> Clip:
    rng = np.random.default_rng(i)
    frames = [encode_jpeg(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)) for _ in range(4)]
    t = tuple(T0 + 4 * i + k for k in range(4))
    return Clip(camera_id=camera_id, level=0, epoch=0, t=t, frames=frames)  # type: ignore[arg-type]


def test_clips_land_in_memory_and_poison_goes_to_dead_letter(
    encoder: object, tmp_path: Path
) -> None:
    bus = InProcessBus()
    store = SqliteStore(tmp_path / "memory.db", [6.0])
    dead: list[tuple[object, str]] = []
    worker = EncoderWorker(
        bus.consumer("fw.clips", "encoder"),
        encoder,  # type: ignore[arg-type]
        store,
        quantise=encode_tokens,
        token_dtype="int8",
        max_batch=4,
        batch_timeout_s=0.01,
        dead_letter=lambda record, reason: (
            dead.append((record, reason)),
            bus.dead_letter(record, reason),
        ),
    )
    for i in range(6):
        bus.publish("fw.clips", encode(clip(7, i)))
    bus.publish("fw.clips", encode(clip(7, 99))[:-10])  # truncated
    broken = clip(7, 100)
    broken.frames[2] = b"not a jpeg"
    bus.publish("fw.clips", encode(broken))
    wrong_size = clip(7, 101, size=64)
    bus.publish("fw.clips", encode(wrong_size))
    while worker.step() or bus.lag("fw.clips", "encoder"):
        pass
    stored = store.range(7, 0, T0, T0 + 1000)
    assert [round(c.t[0] - T0) for c in stored] == [0, 4, 8, 12, 16, 20]
    assert all(c.dtype == "int8" and c.shape == (64, 64) for c in stored)
    assert len(dead) == 3 and worker.stats.dead_letters == 3
    assert "truncated" in dead[0][1] and "jpeg" in dead[1][1].lower()
    letters = bus.consumer("fw.dead-letter", "ops").poll(timeout_s=0)
    assert [dict(r.headers)["fw-reason"].decode() for r in letters] == [r for _, r in dead]
    consumer = bus.consumer("fw.clips", "encoder")
    consumer.rewind()
    assert consumer.poll(timeout_s=0) == []  # everything committed, poison included
    # A replay of the same clips rewrites the same keys: still one entry per clip.
    for i in range(6):
        bus.publish("fw.clips", encode(clip(7, i)))
    while worker.step():
        pass
    assert len(store.range(7, 0, T0, T0 + 1000)) == 6
    store.close()


@pytest.mark.integration
def test_m2_noeviction_pauses_without_commit_then_loses_nothing(encoder: object) -> None:
    server = RedisServer("--maxmemory", "3mb", "--maxmemory-policy", "noeviction").start()
    try:
        bus = InProcessBus()
        store = RedisStore(server.url, [6.0])
        worker = EncoderWorker(
            bus.consumer("fw.clips", "encoder"),
            encoder,  # type: ignore[arg-type]
            store,
            quantise=encode_tokens,
            token_dtype="fp16",
            max_batch=8,
            batch_timeout_s=0.01,
            retryable=(MemoryBackpressure, MemoryUnavailable),
        )
        n = 400  # 400 clips x 64x64 fp16 (8 KiB) + index: well over 3 MB
        for i in range(n):
            bus.publish("fw.clips", encode(clip(1, i)))
        for _ in range(200):
            worker.step()
            if worker.stats.backpressure_pauses:
                break
        assert worker.stats.backpressure_pauses >= 1, "memory never filled up"
        written = worker.stats.clips
        assert 0 < written < n
        assert bus.lag("fw.clips", "encoder") > 0  # the failed batch was not consumed for good
        admin = redis.Redis.from_url(server.url)
        assert admin.info("stats")["evicted_keys"] == 0
        admin.config_set("maxmemory", "0")  # the operator adds memory
        for _ in range(400):
            if worker.step() == 0 and bus.lag("fw.clips", "encoder") == 0:
                break
        keys = {round(c.t[0] - T0) // 4 for c in store.range(1, 0, T0, T0 + 10 * n)}
        assert keys == set(range(n)), f"lost {sorted(set(range(n)) - keys)[:10]}"
        store.close()
    finally:
        server.stop()


class SimulatedOomEncoder:
    """Wraps the real tiny encoder and raises torch.OutOfMemoryError for batches over 2:
    CUDA out-of-memory cannot happen on this CPU-only machine, so it is simulated."""

    def __init__(self, inner: object) -> None:
        self.inner = inner
        self.config = inner.config  # type: ignore[attr-defined]
        self.name = "simulated-oom"
        self.calls: list[int] = []

    def encode(self, pixels: torch.Tensor) -> torch.Tensor:
        self.calls.append(pixels.shape[0])
        if pixels.shape[0] > 2:
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        return self.inner.encode(pixels)  # type: ignore[attr-defined,no-any-return]


def test_simulated_cuda_oom_splits_the_batch_and_metrics_count(
    encoder: object, tmp_path: Path
) -> None:
    from prometheus_client import CollectorRegistry, generate_latest

    from encoder_trt.worker import EncoderMetrics

    bus = InProcessBus()
    store = SqliteStore(tmp_path / "memory.db", [6.0])
    oom = SimulatedOomEncoder(encoder)
    registry = CollectorRegistry()
    worker = EncoderWorker(
        bus.consumer("fw.clips", "encoder"),
        oom,  # type: ignore[arg-type]
        store,
        quantise=encode_tokens,
        max_batch=8,
        batch_timeout_s=0.01,
        metrics=EncoderMetrics(registry),
        queue_depth=lambda: bus.lag("fw.clips", "encoder"),
    )
    for i in range(8):
        bus.publish("fw.clips", encode(clip(9, i)))
    assert worker.step() == 8
    assert oom.calls == [8, 4, 2, 2, 4, 2, 2]  # halves until a batch fits
    assert worker.stats.oom_splits == 3
    assert len(store.range(9, 0, T0, T0 + 1000)) == 8
    text = generate_latest(registry).decode()
    assert "fw_encoder_clips_total 8.0" in text and "fw_encoder_batch_size_count 1.0" in text
    store.close()
