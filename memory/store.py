"""The memory store contract (DESIGN.md §4): protocol, typed errors, stats and retention policy.

A clip is identified by `(camera_id, level, t0 in ms)` (`flashwatch.messages.clip_key`). Every
write is an idempotent upsert on that key, so at-least-once delivery (a redelivered clip after an
encoder crash between its memory write and its offset commit) rewrites the same entry instead of
adding one. All time bounds are compared on that millisecond key, never on raw floats, so both
backends and the tests agree exactly at boundaries.

Retention is enforced by the service, not by Redis eviction (Redis runs with `noeviction`), and
is a pure function of (level, retention hours, now) so it is tested with a fake clock.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple, Protocol, runtime_checkable

from flashwatch.messages import ClipTokens, clip_key

__all__ = [
    "LevelCoverage",
    "LevelStats",
    "MemoryBackpressure",
    "MemoryStats",
    "MemoryStore",
    "MemoryStoreError",
    "MemoryUnavailable",
    "bound_ms",
    "covered_seconds",
    "key_ms",
    "retention_horizon",
    "retention_horizon_ms",
    "retention_hours_for",
    "summarise_stats",
]


class MemoryStoreError(Exception):
    """A memory store failure that is neither back-pressure nor unavailability."""


class MemoryBackpressure(MemoryStoreError):
    """The store is full (Redis `noeviction` OOM): the write did not happen.

    The encoder must pause and must not commit its bus offset; nothing was evicted, queries
    still work, and retention (`trim`) or more memory is what clears it.
    """


class MemoryUnavailable(MemoryStoreError):
    """The backend could not be reached within the reconnect bound (capped backoff spent)."""


class LevelCoverage(NamedTuple):
    """What one level of one camera holds: first and last clip start (s) and how many clips.

    (`clips`, not `count`, which would shadow `tuple.count`; unpacking is positional anyway.)
    """

    earliest: float
    latest: float
    clips: int


@dataclass(frozen=True)
class LevelStats:
    """Totals for one pyramid level over all cameras.

    `bytes` counts stored payload (tokens, scales, header, thumbnails), not backend overhead;
    the benchmark measures Redis `MEMORY USAGE` separately. `bytes_per_camera_hour` is None
    until some camera holds two clips at this level (one clip has no measurable span).
    """

    entries: int
    bytes: int
    camera_hours: float
    bytes_per_camera_hour: float | None


@dataclass(frozen=True)
class MemoryStats:
    entries: int = 0
    bytes: int = 0
    cameras: int = 0
    levels: dict[int, LevelStats] = field(default_factory=dict)


@runtime_checkable
class MemoryStore(Protocol):
    """Per-camera, per-level time-ordered clip-token memory.

    Writers raise `MemoryBackpressure` when full and `MemoryUnavailable` when the backend is
    unreachable after bounded retries; readers raise `MemoryUnavailable` likewise. Reads leave
    `thumb` out unless `thumbs=True`, because the reasoner never needs them and they are a
    large share of the bytes.
    """

    def put(self, ct: ClipTokens) -> None:
        """Upsert one clip; returns once it is durable as far as the backend promises."""
        ...

    def put_many(self, cts: Sequence[ClipTokens]) -> None:
        """Upsert several clips in as few round trips as the backend allows."""
        ...

    def get(
        self, camera_id: int, level: int, t0: float, *, thumbs: bool = True
    ) -> ClipTokens | None: ...

    def range(
        self, camera_id: int, level: int, t_from: float, t_to: float, *, thumbs: bool = False
    ) -> list[ClipTokens]:
        """Clips whose start key lies in [t_from, t_to] (ms resolution), oldest first."""
        ...

    def latest(
        self, camera_id: int, level: int, n: int, *, thumbs: bool = False
    ) -> list[ClipTokens]:
        """The newest n clips, oldest first (ready to feed the model in time order)."""
        ...

    def coverage(self, camera_id: int) -> dict[int, LevelCoverage]: ...

    def delete_camera(self, camera_id: int) -> None:
        """Remove every entry and key of a camera (registry deletion, GDPR erasure)."""
        ...

    def trim(self, now: float | None = None) -> int:
        """Drop clips older than their level's retention horizon; returns how many."""
        ...

    def stats(self) -> MemoryStats: ...

    def wait_new(
        self, camera_id: int, level: int, after_t: float, timeout_s: float
    ) -> list[ClipTokens]:
        """Block until clips starting strictly after `after_t` exist, or the timeout passes.

        Returns them oldest first (empty on timeout). This is how the alert scheduler learns of
        new level-0 clips without polling every key.
        """
        ...

    def ping(self) -> bool:
        """Readiness: True when the backend answers now (never raises, returns quickly)."""
        ...

    def close(self) -> None: ...


# --------------------------------------------------------------------------------------------
# pure policy


def key_ms(t: float) -> int:
    """The millisecond key of a time, exactly as `clip_key` rounds a clip's start."""
    return clip_key(0, 0, t)[2]


_MS_LIMIT = 2**53  # beyond any real timestamp; keeps ±inf bounds usable as "open ended"


def bound_ms(t: float) -> int:
    """A range bound on the ms key scale; ±inf are allowed and mean "unbounded"."""
    if math.isnan(t):
        raise ValueError("a time bound cannot be NaN")
    return max(
        -_MS_LIMIT,
        min(_MS_LIMIT, key_ms(t) if math.isfinite(t) else int(math.copysign(_MS_LIMIT, t))),
    )


def retention_hours_for(level: int, retention_hours: Sequence[float]) -> float:
    """Retention of a level; the last configured value applies to all higher levels."""
    if level < 0:
        raise ValueError(f"level must be >= 0, got {level}")
    if not retention_hours:
        raise ValueError("retention_hours must hold at least one value")
    return float(retention_hours[min(level, len(retention_hours) - 1)])


def retention_horizon(level: int, retention_hours: Sequence[float], now: float) -> float:
    """Oldest clip start (s) a level keeps at `now`; clips starting before it are expired.

    A clip exactly at the horizon is kept: its age equals the retention, it is not older.
    """
    return now - retention_hours_for(level, retention_hours) * 3600.0


def retention_horizon_ms(level: int, retention_hours: Sequence[float], now: float) -> int:
    """`retention_horizon` on the millisecond key scale: expired iff key < this."""
    return key_ms(retention_horizon(level, retention_hours, now))


def covered_seconds(earliest: float, latest: float, count: int) -> float:
    """Time a level's clips span, counting each clip's own stride.

    With `count` evenly spaced clip starts the stride is (latest − earliest)/(count − 1), and
    `count` clips cover count × stride seconds: 900 level-0 clips 4 s apart cover exactly one
    hour. One clip has no measurable stride, so it covers 0 s.
    """
    if count < 2 or latest <= earliest:
        return 0.0
    return (latest - earliest) * count / (count - 1)


def summarise_stats(rows: Iterable[tuple[int, int, int, int, float, float]]) -> MemoryStats:
    """Fold per-(camera, level) rows `(camera, level, count, bytes, earliest, latest)`."""
    per_level: dict[int, list[float]] = {}
    cameras: set[int] = set()
    for camera, level, count, nbytes, earliest, latest in rows:
        if count <= 0:
            continue
        cameras.add(camera)
        acc = per_level.setdefault(level, [0, 0, 0.0])
        acc[0] += count
        acc[1] += nbytes
        acc[2] += covered_seconds(earliest, latest, count) / 3600.0
    levels = {
        level: LevelStats(
            entries=int(count),
            bytes=int(nbytes),
            camera_hours=hours,
            bytes_per_camera_hour=(nbytes / hours) if hours > 0 else None,
        )
        for level, (count, nbytes, hours) in sorted(per_level.items())
    }
    return MemoryStats(
        entries=sum(s.entries for s in levels.values()),
        bytes=sum(s.bytes for s in levels.values()),
        cameras=len(cameras),
        levels=levels,
    )
