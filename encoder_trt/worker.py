"""The batching encoder worker: bus Clips -> encoder backend -> memory, then commit.

At-least-once (DESIGN §3): offsets are committed only after the memory write of every
clip in the batch is acknowledged. When the memory refuses writes (Redis `noeviction`
OOM -> `MemoryBackpressure`, or it is unreachable), the worker rewinds to the last commit
and pauses with a capped backoff; nothing is committed, so nothing is lost. Poison
messages (unknown schema version, truncated payload, undecodable JPEG) go to the
dead-letter callback with the reason and are committed past, so they cannot crash-loop.

The worker knows the memory only through its protocol (`put_many`), never Redis keys.
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


DeadLetter = Callable[[bytes, str], None]
Quantise = Callable[..., ClipTokens]


@dataclass
class WorkerStats:
    clips: int = 0
    batches: int = 0
    dead_letters: int = 0
    backpressure_pauses: int = 0
    encode_seconds: float = 0.0
    last_error: str | None = None
    batch_sizes: list[int] = field(default_factory=list)


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
    ) -> None:
        self.consumer, self.encoder, self.store = consumer, encoder, store
        self.quantise, self.token_dtype = quantise, token_dtype
        self.max_batch, self.batch_timeout_s = max_batch, batch_timeout_s
        self.dead_letter = dead_letter
        self.retryable = retryable
        self.backoff_max_s = backoff_max_s
        self.stats = WorkerStats()
        self._pause_s = 0.0
        self.size = encoder.config.image_size

    def step(self) -> int:
        """One batch. Returns the number of clips written (0 when idle or paused)."""
        records = list(self.consumer.poll(self.max_batch, self.batch_timeout_s))
        if not records:
            return 0
        clips: list[Clip] = []
        pixels: list[torch.Tensor] = []
        for rec in records:
            try:
                clip, px = self._prepare(rec.value)
            except (MessageError, ValueError) as exc:
                self.stats.dead_letters += 1
                reason = f"{type(exc).__name__}: {exc}"[:500]
                log.warning("clip sent to dead letter: %s", reason)
                if self.dead_letter is not None:
                    self.dead_letter(rec.value, reason)
                continue
            clips.append(clip)
            pixels.append(px)
        if clips:
            t0 = time.perf_counter()
            with torch.inference_mode():
                tokens = self.encoder.encode(torch.stack(pixels))  # (B, 64, C)
            self.stats.encode_seconds += time.perf_counter() - t0
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
                self._pause(exc)
            if self._pause_s:
                stop.wait(self._pause_s)

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
