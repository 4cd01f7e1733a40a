"""Clip-token memory: the per-camera, per-level timeline of encoded clips (DESIGN.md §4).

`open_store(cfg, data_dir)` returns the configured backend behind the `MemoryStore` protocol:
Redis (production; `?cluster=1` in the URL for Redis Cluster) or an embedded SQLite file in
`data_dir` (single machine). Writes are idempotent upserts keyed by (camera, level, t0 ms), so
at-least-once delivery never duplicates an entry. `memory.codec` turns encoder output into the
stored precision (fp16, or int8 with per-token scales). Retention is enforced by the service:
run one `RetentionWorker(store).start()` (Redis itself runs with `noeviction`).
"""

from __future__ import annotations

from pathlib import Path

from flashwatch.config import MemoryConfig
from memory.retention import RetentionWorker
from memory.store import (
    LevelCoverage,
    LevelStats,
    MemoryBackpressure,
    MemoryStats,
    MemoryStore,
    MemoryStoreError,
    MemoryUnavailable,
    retention_horizon,
)

__all__ = [
    "LevelCoverage",
    "LevelStats",
    "MemoryBackpressure",
    "MemoryStats",
    "MemoryStore",
    "MemoryStoreError",
    "MemoryUnavailable",
    "RetentionWorker",
    "open_store",
    "retention_horizon",
]


def open_store(cfg: MemoryConfig, data_dir: Path) -> MemoryStore:
    """The configured backend; a Redis store opens even while Redis is down (not ready yet)."""
    if cfg.backend == "redis":
        from memory.redis_store import RedisStore

        if cfg.redis_url is None:  # MemoryConfig already refuses this; keep mypy and readers sure
            raise ValueError("memory backend 'redis' needs redis_url")
        return RedisStore(cfg.redis_url.get_secret_value(), cfg.retention_hours)
    from memory.sqlite_store import DB_FILE, SqliteStore

    return SqliteStore(Path(data_dir) / DB_FILE, cfg.retention_hours)
