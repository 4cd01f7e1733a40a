"""Embedded backend of the memory store: one SQLite file (WAL) under the data directory.

For `flashwatch serve` on a single machine without Redis. Same contract as the Redis backend:
the primary key (camera, level, t0 ms) makes every put an idempotent upsert, and the file
survives restarts. WAL lets readers (queries) run while the encoder writes; `synchronous=NORMAL`
in WAL mode is durable across a process crash (kill -9) and may lose only the last commits on
power loss, which at-least-once delivery replays anyway when the bus is durable.

One connection guarded by a lock: SQLite serialises writers regardless, the lock keeps the
connection safe to share between the encoder, API and alert threads, and it doubles as the
condition variable `wait_new` sleeps on. Writers in another process are noticed by a short poll.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from flashwatch.messages import ClipTokens
from memory.store import (
    LevelCoverage,
    MemoryBackpressure,
    MemoryStats,
    MemoryStoreError,
    MemoryUnavailable,
    bound_ms,
    key_ms,
    retention_horizon_ms,
    summarise_stats,
)

__all__ = ["DB_FILE", "SqliteStore"]

log = logging.getLogger(__name__)

DB_FILE = "memory.sqlite3"
_POLL_S = 0.25

_SCHEMA = """
CREATE TABLE IF NOT EXISTS clips (
    camera_id INTEGER NOT NULL,
    level     INTEGER NOT NULL,
    t0_ms     INTEGER NOT NULL,
    epoch     INTEGER NOT NULL,
    t0 REAL NOT NULL, t1 REAL NOT NULL, t2 REAL NOT NULL, t3 REAL NOT NULL,
    dtype     TEXT NOT NULL,
    rows      INTEGER NOT NULL,
    cols      INTEGER NOT NULL,
    tokens    BLOB NOT NULL,
    scales    BLOB,
    thumb     BLOB,
    PRIMARY KEY (camera_id, level, t0_ms)
);
CREATE INDEX IF NOT EXISTS clips_by_level_time ON clips (level, t0_ms);
"""
_UPSERT = """
INSERT INTO clips (camera_id, level, t0_ms, epoch, t0, t1, t2, t3, dtype, rows, cols,
                   tokens, scales, thumb)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (camera_id, level, t0_ms) DO UPDATE SET
    epoch = excluded.epoch, t0 = excluded.t0, t1 = excluded.t1, t2 = excluded.t2,
    t3 = excluded.t3, dtype = excluded.dtype, rows = excluded.rows, cols = excluded.cols,
    tokens = excluded.tokens, scales = excluded.scales, thumb = excluded.thumb
"""
_COLS = "camera_id, level, epoch, t0, t1, t2, t3, dtype, rows, cols, tokens, scales"
_Row = tuple[int, int, int, float, float, float, float, str, int, int, bytes, bytes | None]


def _row_to_clip(row: Sequence[object], thumbs: bool) -> ClipTokens:
    cam, lvl, epoch, t0, t1, t2, t3, dtype, rows, cols, tokens, scales = row[:12]
    return ClipTokens(
        camera_id=cam,  # type: ignore[arg-type]
        level=lvl,  # type: ignore[arg-type]
        epoch=epoch,  # type: ignore[arg-type]
        t=(t0, t1, t2, t3),  # type: ignore[arg-type]
        dtype=dtype,  # type: ignore[arg-type]
        shape=(rows, cols),  # type: ignore[arg-type]
        tokens=tokens,  # type: ignore[arg-type]
        scales=scales,  # type: ignore[arg-type]
        thumb=row[12] if thumbs else None,  # type: ignore[arg-type]
    )


def _classify(what: str, exc: sqlite3.Error) -> MemoryStoreError:
    """Disk full is back-pressure (pause, don't commit); a lock held too long is transient."""
    text = str(exc).lower()
    if "full" in text:
        return MemoryBackpressure(f"{what}: {exc}")
    if "locked" in text or "busy" in text:
        return MemoryUnavailable(f"{what}: {exc}")
    return MemoryStoreError(f"{what}: {exc}")


class SqliteStore:
    """`MemoryStore` in one SQLite file; safe to share between threads."""

    def __init__(
        self,
        path: Path,
        retention_hours: Sequence[float],
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.path = Path(path)
        self._retention = list(retention_hours)
        self._clock = clock
        self._cond = threading.Condition(threading.Lock())
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db: sqlite3.Connection | None = sqlite3.connect(
                self.path, check_same_thread=False, isolation_level=None, timeout=30.0
            )
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.executescript(_SCHEMA)
        except (OSError, sqlite3.Error) as exc:
            raise MemoryUnavailable(f"cannot open memory database {self.path}: {exc}") from exc

    def _conn(self) -> sqlite3.Connection:
        if self._db is None:
            raise MemoryUnavailable("memory store is closed")
        return self._db

    def _query(self, sql: str, args: Sequence[object] = ()) -> list[tuple[object, ...]]:
        with self._cond:
            try:
                return self._conn().execute(sql, args).fetchall()
            except sqlite3.Error as exc:
                raise _classify("memory query failed", exc) from exc

    # -- writes --------------------------------------------------------------------------

    def put(self, ct: ClipTokens) -> None:
        self.put_many([ct])

    def put_many(self, cts: Sequence[ClipTokens]) -> None:
        if not cts:
            return
        params = [
            (
                ct.camera_id,
                ct.level,
                key_ms(ct.t[0]),
                ct.epoch,
                *ct.t,
                ct.dtype,
                ct.shape[0],
                ct.shape[1],
                ct.tokens,
                ct.scales,
                ct.thumb,
            )
            for ct in cts
        ]
        with self._cond:
            db = self._conn()
            try:
                db.execute("BEGIN IMMEDIATE")
                db.executemany(_UPSERT, params)
                db.execute("COMMIT")
            except sqlite3.Error as exc:
                if db.in_transaction:
                    db.execute("ROLLBACK")
                raise _classify("memory write failed", exc) from exc
            self._cond.notify_all()

    # -- reads ---------------------------------------------------------------------------

    def _select(
        self, where: str, args: Sequence[object], thumbs: bool, order: str = "ASC", limit: int = -1
    ) -> list[ClipTokens]:
        cols = _COLS + (", thumb" if thumbs else "")
        sql = f"SELECT {cols} FROM clips WHERE {where} ORDER BY t0_ms {order} LIMIT ?"  # noqa: S608
        rows = self._query(sql, (*args, limit))
        clips = [_row_to_clip(r, thumbs) for r in rows]
        return clips if order == "ASC" else clips[::-1]

    def get(
        self, camera_id: int, level: int, t0: float, *, thumbs: bool = True
    ) -> ClipTokens | None:
        found = self._select(
            "camera_id = ? AND level = ? AND t0_ms = ?", (camera_id, level, key_ms(t0)), thumbs
        )
        return found[0] if found else None

    def range(
        self, camera_id: int, level: int, t_from: float, t_to: float, *, thumbs: bool = False
    ) -> list[ClipTokens]:
        return self._select(
            "camera_id = ? AND level = ? AND t0_ms BETWEEN ? AND ?",
            (camera_id, level, bound_ms(t_from), bound_ms(t_to)),
            thumbs,
        )

    def latest(
        self, camera_id: int, level: int, n: int, *, thumbs: bool = False
    ) -> list[ClipTokens]:
        if n <= 0:
            return []
        return self._select(
            "camera_id = ? AND level = ?", (camera_id, level), thumbs, order="DESC", limit=n
        )

    def coverage(self, camera_id: int) -> dict[int, LevelCoverage]:
        rows = self._query(
            "SELECT level, MIN(t0_ms), MAX(t0_ms), COUNT(*) FROM clips WHERE camera_id = ? "
            "GROUP BY level ORDER BY level",
            (camera_id,),
        )
        return {
            int(lvl): LevelCoverage(int(lo) / 1000.0, int(hi) / 1000.0, int(n))  # type: ignore[call-overload]
            for lvl, lo, hi, n in rows
        }

    def wait_new(
        self, camera_id: int, level: int, after_t: float, timeout_s: float
    ) -> list[ClipTokens]:
        """Sleeps on the put condition; the poll slice also catches other processes' writes."""
        deadline = time.monotonic() + max(0.0, timeout_s)
        lo = bound_ms(after_t) + 1
        where = "camera_id = ? AND level = ? AND t0_ms >= ?"
        while True:
            found = self._select(where, (camera_id, level, lo), thumbs=False)
            remaining = deadline - time.monotonic()
            if found or remaining <= 0:
                return found
            with self._cond:
                # Re-check under the lock so a put between the query and the wait is not missed.
                if (
                    self._conn()
                    .execute(
                        f"SELECT 1 FROM clips WHERE {where} LIMIT 1",  # noqa: S608
                        (camera_id, level, lo),
                    )
                    .fetchone()
                ):
                    continue
                self._cond.wait(min(remaining, _POLL_S))

    # -- maintenance ---------------------------------------------------------------------

    def delete_camera(self, camera_id: int) -> None:
        self._write("DELETE FROM clips WHERE camera_id = ?", (camera_id,))

    def trim(self, now: float | None = None) -> int:
        now = self._clock() if now is None else now
        levels = [int(r[0]) for r in self._query("SELECT DISTINCT level FROM clips")]  # type: ignore[call-overload]
        removed = 0
        for lvl in levels:
            horizon = retention_horizon_ms(lvl, self._retention, now)
            removed += self._write(
                "DELETE FROM clips WHERE level = ? AND t0_ms < ?", (lvl, horizon)
            )
        return removed

    def _write(self, sql: str, args: Sequence[object]) -> int:
        with self._cond:
            try:
                return self._conn().execute(sql, args).rowcount
            except sqlite3.Error as exc:
                raise _classify("memory write failed", exc) from exc

    def stats(self) -> MemoryStats:
        rows = self._query(
            "SELECT camera_id, level, COUNT(*), "
            "SUM(length(tokens) + IFNULL(length(scales), 0) + IFNULL(length(thumb), 0)), "
            "MIN(t0_ms), MAX(t0_ms) FROM clips GROUP BY camera_id, level"
        )
        return summarise_stats(
            (int(c), int(lvl), int(n), int(b), int(lo) / 1000.0, int(hi) / 1000.0)  # type: ignore[call-overload]
            for c, lvl, n, b, lo, hi in rows
        )

    def ping(self) -> bool:
        try:
            self._query("SELECT 1")
        except MemoryStoreError:
            return False
        return True

    def close(self) -> None:
        with self._cond:
            if self._db is not None:
                try:  # fold the WAL back so the data directory holds one compact file
                    self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
                except sqlite3.Error as exc:
                    log.warning("memory: WAL checkpoint at close failed: %s", exc)
                self._db.close()
                self._db = None
