"""The batching encoder worker: bus Clips -> encoder backend -> memory, then commit.

At-least-once (DESIGN §3): offsets are committed only after the memory write of every
clip in the batch is acknowledged. When the memory refuses writes (Redis `noeviction`
OOM -> `MemoryBackpressure`, or it is unreachable), the worker rewinds to the last commit
and pauses with a capped backoff; nothing is committed, so nothing is lost. Poison
messages (unknown schema version, truncated payload, undecodable JPEG) go to the
dead-letter callback with the reason and are committed past, so they cannot crash-loop.

A batch that does not fit in GPU memory is split in halves and retried. The worker knows
the memory only through its protocol (`put_many`), never Redis keys.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

import numpy as np
import torch
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from encoder_trt.backends import ClipEncoder
from encoder_trt.preprocess import decode_jpeg, normalise
from flashwatch.messages import CLIP_FRAMES, Clip, ClipTokens, MessageError, decode

log = logging.getLogger("flashwatch.encoder")


class _Record(Protocol):
    @property
    def value(self) -> bytes: ...


class _Consumer(Protocol):
    def poll(self, max_records: int = ..., timeout_s: float = ...) -> Sequence[_Record]: ...

    def commit(self, records: list[Any]) -> None: ...

    def rewind(self) -> None: ...


class _Store(Protocol):
    def put_many(self, cts: Sequence[ClipTokens]) -> None: ...


DeadLetter = Callable[[Any, str], None]  # (the bus record, reason)
Quantise = Callable[..., ClipTokens]


@dataclass
class WorkerStats:
    clips: int = 0
    batches: int = 0
    dead_letters: int = 0
    backpressure_pauses: int = 0
    oom_splits: int = 0
    encode_seconds: float = 0.0
    last_error: str | None = None
    batch_sizes: list[int] = field(default_factory=list)


class EncoderMetrics:
    """Prometheus collectors of the encoder role (registered on the given registry)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.clips = Counter("fw_encoder_clips_total", "Clips encoded.", registry=registry)
        self.batch = Histogram(
            "fw_encoder_batch_size",
            "Clips per encoder call.",
            buckets=(1, 2, 4, 8, 16, 32, 64, 128),
            registry=registry,
        )
        self.latency = Histogram(
            "fw_encoder_batch_seconds", "Encoder call latency.", registry=registry
        )
        self.dead_letters = Counter(
            "fw_encoder_dead_letters_total", "Clips sent to the dead letter.", registry=registry
        )
        self.backpressure = Counter(
            "fw_encoder_backpressure_total",
            "Batches the memory refused (paused, not committed).",
            registry=registry,
        )
        self.queue_depth = Gauge(
            "fw_encoder_queue_depth", "Clips waiting on the bus for the encoder.", registry=registry
        )

    def observe(self, clips: int, seconds: float) -> None:
        self.clips.inc(clips)
        self.batch.observe(clips)
        self.latency.observe(seconds)


class EncoderWorker:
    """Poll up to `max_batch` clips, encode them in one call, write, commit."""

    def __init__(
        self,
        consumer: _Consumer,
        encoder: ClipEncoder,
        store: _Store,
        *,
        quantise: Quantise,
        token_dtype: Literal["fp16", "int8", "fp32"] = "fp16",  # noqa: S107 (not a secret)
        max_batch: int = 8,
        batch_timeout_s: float = 0.05,
        dead_letter: DeadLetter | None = None,
        retryable: tuple[type[BaseException], ...] = (),
        backoff_max_s: float = 10.0,
        metrics: EncoderMetrics | None = None,
        queue_depth: Callable[[], int] | None = None,
    ) -> None:
        self.consumer, self.encoder, self.store = consumer, encoder, store
        self.quantise, self.token_dtype = quantise, token_dtype
        self.max_batch, self.batch_timeout_s = max_batch, batch_timeout_s
        self.dead_letter = dead_letter
        self.retryable = retryable
        self.backoff_max_s = backoff_max_s
        self.metrics = metrics
        self.queue_depth = queue_depth
        self.stats = WorkerStats()
        self._pause_s = 0.0
        self.size = encoder.config.image_size

    def step(self) -> int:
        """One batch. Returns the number of clips written (0 when idle or paused)."""
        records = list(self.consumer.poll(self.max_batch, self.batch_timeout_s))
        if self.metrics is not None and self.queue_depth is not None:
            self.metrics.queue_depth.set(self.queue_depth())
        if not records:
            return 0
        clips: list[Clip] = []
        pixels: list[torch.Tensor] = []
        for rec in records:
            try:
                clip, px = self._prepare(rec.value)
            except (MessageError, ValueError) as exc:
                self.stats.dead_letters += 1
                if self.metrics is not None:
                    self.metrics.dead_letters.inc()
                reason = f"{type(exc).__name__}: {exc}"[:500]
                log.warning("clip sent to dead letter: %s", reason)
                if self.dead_letter is not None:
                    self.dead_letter(rec, reason)
                continue
            clips.append(clip)
            pixels.append(px)
        if clips:
            t0 = time.perf_counter()
            tokens = self._encode(torch.stack(pixels))  # (B, 64, C)
            elapsed = time.perf_counter() - t0
            self.stats.encode_seconds += elapsed
            if self.metrics is not None:
                self.metrics.observe(len(clips), elapsed)
            out = [
                self.quantise(
                    tokens[i].float().numpy(),
                    self.token_dtype,
                    camera_id=c.camera_id,
                    level=c.level,
                    epoch=c.epoch,
                    t=c.t,
                    thumb=c.thumb,
                )
                for i, c in enumerate(clips)
            ]
            try:
                self.store.put_many(out)
            except self.retryable as exc:
                self._pause(exc)
                if self.metrics is not None:
                    self.metrics.backpressure.inc()
                return 0
        self.consumer.commit(records)
        self._pause_s = 0.0
        self.stats.clips += len(clips)
        self.stats.batches += 1
        self.stats.batch_sizes.append(len(clips))
        del self.stats.batch_sizes[:-1000]
        return len(clips)

    def run(self, stop: threading.Event) -> None:
        """Loop until `stop` is set; unexpected errors are logged and retried with backoff."""
        while not stop.is_set():
            try:
                self.step()
            except Exception as exc:
                log.exception("encoder batch failed")
                try:
                    self._pause(exc)
                except Exception:  # e.g. rewind while the broker is down: keep the loop alive
                    log.exception("encoder could not rewind; retrying")
                    self._pause_s = self.backoff_max_s
            if self._pause_s:
                stop.wait(self._pause_s)

    def _encode(self, pixels: torch.Tensor) -> torch.Tensor:
        """Encode a batch; on CUDA out-of-memory split it in halves instead of failing."""
        try:
            with torch.inference_mode():
                return self.encoder.encode(pixels)
        except torch.OutOfMemoryError:
            if pixels.shape[0] == 1:
                raise
            self.stats.oom_splits += 1
            torch.cuda.empty_cache()
            half = pixels.shape[0] // 2
            return torch.cat([self._encode(pixels[:half]), self._encode(pixels[half:])])

    def _prepare(self, payload: bytes) -> tuple[Clip, torch.Tensor]:
        clip = decode(payload, Clip)
        if len(clip.frames) != CLIP_FRAMES:
            raise ValueError(f"clip has {len(clip.frames)} frames, expected {CLIP_FRAMES}")
        frames = np.stack([decode_jpeg(f, self.size) for f in clip.frames])  # (4, S, S, 3)
        return clip, normalise(frames)  # (4, 3, S, S)

    def _pause(self, exc: BaseException) -> None:
        """No commit: rewind so the batch is read again, and back off (capped)."""
        self.consumer.rewind()
        self.stats.backpressure_pauses += 1
        self.stats.last_error = f"{type(exc).__name__}: {exc}"[:300]
        self._pause_s = min(self.backoff_max_s, max(0.1, self._pause_s * 2 or 0.2))
        log.warning("memory refused writes (%s); pausing %.1f s", type(exc).__name__, self._pause_s)
