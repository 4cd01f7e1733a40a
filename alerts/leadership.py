"""Which alerts replica schedules which cameras: rule shards owned through PostgreSQL
session-level advisory locks.

A camera belongs to shard `shard_of(camera_id, shards)` (blake2b of the id modulo `shards`,
stable across processes and hosts, unlike Python's salted `hash()`). Every enabled rule
watching a camera is evaluated by the replica that owns the camera's shard, so one reasoner
call per window happens in the whole deployment, not one per replica.

Ownership (PostgreSQL registry, `PgShardLeadership`):

* Each replica opens ONE dedicated connection (not from the pool, autocommit,
  `application_name=flashwatch-alerts`) and keeps it open. On it, it holds a shared
  "member" lock `(MEMBER_NS, shards)` and one exclusive lock `(SHARD_NS, i)` per shard it
  owns (`pg_try_advisory_lock(int, int)`). Session locks live exactly as long as that
  connection: a replica that dies, or whose connection is dropped or terminated, loses its
  shards at once on the server, and a standby takes them on its next poll.
* Every `poll_s` a replica reads `pg_locks` (one query, its own database only): the live
  members with the same `shards` (the count of holders of the member lock), which shards are
  free, and which shard locks the server says it still holds. It aims for
  `target = ceil(shards / members)` shards: it takes free shards up to the target and, when a
  replica joined, releases the ones above it (highest index first) for the newcomer. With R
  replicas the split converges within two polls and every shard is owned (R × target ≥
  shards); one replica alone owns every shard.
* Losing the connection (any error on it, or the server no longer listing one of its locks)
  empties the owned set immediately and reconnects on the next poll. Ownership is also a
  local lease: `owns_*` answers False once the last successful poll is older than
  `3 × poll_s`, so a poll stuck on a dead network stops scheduling even before the driver
  reports an error.
* Partitions: the lock connection asks the server to probe the client (TCP keepalives and
  `tcp_user_timeout`, about `6 × poll_s` in all), so a partitioned replica's locks are freed
  server-side only after its local lease (`3 × poll_s`) has already stopped it. A cleanly
  killed process (socket closed) is released as soon as the server notices: failover is then
  at most one `poll_s` of the standby. `stop()` unlocks everything before closing, so a
  standby's very next poll takes the shards.

What remains: a window whose reasoner call is in flight when ownership goes may still reach
its commit. The scheduler commits under `guard(camera_id)`, which re-checks ownership while
holding the lock a voluntary release waits for, so a rebalance never overlaps a commit. An
involuntary loss (connection gone, the server has already freed the lock) can race with one
commit already past the check; then the alert dedup key and the unique rule-state key in
`store.commit_window` are the last line: the same window never yields two alerts.

All replicas must run with the same `alerts.shards`: members with another count are logged
(WARNING) and not counted. Changing the count is a restart of every alerts replica (the
shard → camera map changes); during a rolling change windows may be evaluated twice (never
alerted twice, see above).

SQLite (embedded, one process): `LocalShards`, every shard owned, no locking.
"""

from __future__ import annotations

import hashlib
import logging
import math
import threading
import time
from collections.abc import Collection, Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Protocol

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.pool import NullPool

from alerts.metrics import AlertMetrics
from flashwatch.security import safe_error

log = logging.getLogger(__name__)

SHARD_NS = 0x46574153  # "FWAS": (SHARD_NS, i) is shard i's lock
MEMBER_NS = 0x4657414D  # "FWAM": (MEMBER_NS, shards) shared by every live replica
APPLICATION_NAME = "flashwatch-alerts"
LEASE_POLLS = 3.0
"""Local lease: ownership is trusted for this many poll periods after the last good poll."""

_LOCKS_SQL = sa.text(
    """
    SELECT l.classid::bigint AS ns, l.objid::bigint AS lock_key, l.pid = pg_backend_pid() AS mine,
           l.pid AS pid
    FROM pg_locks l
    WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 2
      AND l.classid::bigint IN (:shard_ns, :member_ns)
      AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
    """
)


def shard_of(camera_id: int, shards: int) -> int:
    """The shard of `camera_id`: stable across processes, hosts and restarts."""
    if shards < 1:
        raise ValueError(f"shards must be >= 1, got {shards}")
    digest = hashlib.blake2b(str(camera_id).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") % shards


class Leadership(Protocol):
    """What the scheduler needs to know: may this replica schedule (and commit) a camera."""

    shards: int

    def owned(self) -> frozenset[int]: ...

    def owns_camera(self, camera_id: int) -> bool: ...

    def guard(self, camera_id: int) -> AbstractContextManager[bool]: ...

    def start(self) -> None: ...

    def stop(self) -> None: ...


class LocalShards:
    """Every shard owned, no locking: SQLite (one process) or a single scheduler in tests."""

    def __init__(self, shards: int = 1, *, metrics: AlertMetrics | None = None) -> None:
        if shards < 1:
            raise ValueError(f"shards must be >= 1, got {shards}")
        self.shards = shards
        self.metrics = metrics

    def owned(self) -> frozenset[int]:
        return frozenset(range(self.shards))

    def owns_camera(self, camera_id: int) -> bool:
        return True

    @contextmanager
    def guard(self, camera_id: int) -> Iterator[bool]:
        yield True

    def start(self) -> None:
        if self.metrics is not None:
            self.metrics.owned_shards.set(self.shards)
            self.metrics.replicas.set(1)

    def stop(self) -> None:
        pass


class PgShardLeadership:
    """Shard ownership through PostgreSQL advisory locks (see the module docstring).

    `start()` polls once and then every `poll_s` on a thread; `poll_once()` is one
    synchronous poll (tests drive it directly); `stop()` releases everything.
    """

    def __init__(
        self,
        engine: Engine,
        shards: int = 1,
        *,
        poll_s: float = 2.0,
        metrics: AlertMetrics | None = None,
    ) -> None:
        if engine.dialect.name != "postgresql":
            raise ValueError("PgShardLeadership needs a PostgreSQL registry")
        if shards < 1:
            raise ValueError(f"shards must be >= 1, got {shards}")
        self.shards = shards
        self.poll_s = poll_s
        self.lease_s = LEASE_POLLS * poll_s
        self.metrics = metrics or AlertMetrics()
        keep = max(1, math.ceil(poll_s))
        self._lock_engine = sa.create_engine(
            engine.url,
            poolclass=NullPool,  # close() must really disconnect (and so free the locks)
            connect_args={
                "application_name": APPLICATION_NAME,
                "connect_timeout": max(2, math.ceil(2 * poll_s)),
                "keepalives": 1,
                "keepalives_idle": keep,
                "keepalives_interval": keep,
                "keepalives_count": 3,
                "tcp_user_timeout": int(self.lease_s * 1000),
            },
        )
        # Server side: drop a silent client after ~ idle + 3 × interval = 6 × poll_s (and no
        # later than tcp_user_timeout = 6 × poll_s when data it sent goes unacknowledged), i.e.
        # well after this replica's own lease (3 × poll_s) has stopped its scheduling.
        self._server_keepalive = (max(1, math.ceil(3 * poll_s)), keep, 3)
        self._mutex = threading.RLock()  # owned set; held by guard() around commits
        self._owned: set[int] = set()
        self._verified_at = float("-inf")
        self._conn: Connection | None = None
        self._members = 0
        self._others: list[int] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- what the scheduler asks ----------------------------------------------------------

    def owned(self) -> frozenset[int]:
        with self._mutex:
            if time.monotonic() - self._verified_at > self.lease_s:
                return frozenset()
            return frozenset(self._owned)

    def owns_camera(self, camera_id: int) -> bool:
        return shard_of(camera_id, self.shards) in self.owned()

    @contextmanager
    def guard(self, camera_id: int) -> Iterator[bool]:
        """Yields whether the camera is owned, and keeps a voluntary release of its shard
        waiting until the block (one window's commit) is done."""
        with self._mutex:
            yield self.owns_camera(camera_id)

    @property
    def members(self) -> int:
        """Live replicas (same shard count) seen at the last poll."""
        return self._members

    # -- lifecycle --------------------------------------------------------------------------

    def start(self) -> None:
        if self._thread is not None:
            return
        self._stop.clear()
        self.poll_once()
        self._thread = threading.Thread(target=self._loop, name="alert-leadership", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Give every shard back now (the standby takes them on its next poll)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(max(5.0, 2 * self.poll_s))
            self._thread = None
        self._drop("stopping")
        self._lock_engine.dispose()

    def _loop(self) -> None:
        while not self._stop.wait(self.poll_s):
            self.poll_once()

    # -- one poll ---------------------------------------------------------------------------

    def poll_once(self) -> None:
        """Verify the lock connection, then take or release shards towards a fair share."""
        try:
            conn = self._connection()
            rows = conn.execute(_LOCKS_SQL, {"shard_ns": SHARD_NS, "member_ns": MEMBER_NS}).all()
            held = {int(r.lock_key) for r in rows if r.ns == SHARD_NS and r.mine}
            taken = {int(r.lock_key) for r in rows if r.ns == SHARD_NS}
            members = {r.pid for r in rows if r.ns == MEMBER_NS and r.lock_key == self.shards}
            others = sorted({int(r.lock_key) for r in rows if r.ns == MEMBER_NS} - {self.shards})
            if others and others != self._others:
                log.warning(
                    "alerts replicas with other shard counts %s are live (this one: %d); "
                    "give every alerts replica the same alerts.shards",
                    others,
                    self.shards,
                )
            self._others = others
            with self._mutex:
                vanished = self._owned - held
                if vanished:  # the server no longer lists them: someone else may hold them
                    self._owned -= vanished
                    self._changed("lost", vanished, "lock no longer held")
            self._members = max(1, len(members))
            target = math.ceil(self.shards / self._members)
            self._rebalance(conn, target, taken)
            self._verified_at = time.monotonic()
        except Exception as exc:  # the connection (and every lock on it) is gone
            log.warning("alerts leadership connection failed: %s", safe_error(exc))
            self._drop("lock connection lost")
        self.metrics.owned_shards.set(len(self.owned()))
        self.metrics.replicas.set(self._members)

    def _rebalance(self, conn: Connection, target: int, taken: set[int]) -> None:
        with self._mutex:
            owned = sorted(self._owned)
        excess = owned[target:] if len(owned) > target else []
        if excess:
            with self._mutex:  # waits for a commit in progress on these shards
                self._owned -= set(excess)
            for s in excess:
                conn.execute(
                    sa.text("SELECT pg_advisory_unlock(:ns, :s)"), {"ns": SHARD_NS, "s": s}
                )
            self._changed("released", excess, f"fair share is {target}")
            return
        got: list[int] = []
        for s in range(self.shards):
            if len(owned) + len(got) >= target:
                break
            if s in taken:
                continue
            ok = conn.execute(
                sa.text("SELECT pg_try_advisory_lock(:ns, :s)"), {"ns": SHARD_NS, "s": s}
            ).scalar()
            if ok:
                got.append(s)
        if got:
            with self._mutex:
                self._owned |= set(got)
            self._changed("acquired", got, f"fair share is {target}")

    def _connection(self) -> Connection:
        if self._conn is not None:
            return self._conn
        conn = self._lock_engine.connect().execution_options(isolation_level="AUTOCOMMIT")
        try:
            idle, interval, count = self._server_keepalive
            conn.execute(sa.text(f"SET tcp_keepalives_idle = {idle}"))
            conn.execute(sa.text(f"SET tcp_keepalives_interval = {interval}"))
            conn.execute(sa.text(f"SET tcp_keepalives_count = {count}"))
            conn.execute(sa.text(f"SET tcp_user_timeout = {int(2 * self.lease_s * 1000)}"))
            conn.execute(sa.text(f"SET statement_timeout = {int(self.lease_s * 1000)}"))
            conn.execute(
                sa.text("SELECT pg_advisory_lock_shared(:ns, :k)"),
                {"ns": MEMBER_NS, "k": self.shards},
            )
        except Exception:
            conn.close()
            raise
        self._conn = conn
        return conn

    def _drop(self, why: str) -> None:
        """Forget every shard now, then close the connection (freeing any lock left)."""
        with self._mutex:
            lost = set(self._owned)
            self._owned.clear()
            self._verified_at = float("-inf")
        if lost:
            self._changed("released" if why == "stopping" else "lost", lost, why)
        conn, self._conn = self._conn, None
        self._members = 0
        if conn is not None and why == "stopping":
            # A closed socket frees the locks only once the server's backend notices it, a
            # moment later; a standby polling at once would still see them taken and wait a
            # whole poll_s. Unlocking first makes a clean stop a hand-over at the next poll.
            try:
                conn.execute(sa.text("SELECT pg_advisory_unlock_all()"))
            except Exception as exc:  # broken already: closing frees them anyway
                log.debug("unlocking before stop: %s", safe_error(exc))
        if conn is not None:
            try:
                conn.invalidate()  # the socket is closed: the server frees every lock
                conn.close()
            except Exception as exc:  # already broken: nothing is held any more
                log.debug("closing the lock connection: %s", safe_error(exc))

    def _changed(self, change: str, shards: Collection[int], why: str) -> None:
        n = len(shards)
        self.metrics.shard_changes.labels(change=change).inc(n)
        log.info(
            "alerts shards %s: %s (%s; now owning %d of %d)",
            change,
            sorted(shards),
            why,
            len(self._owned),
            self.shards,
        )

    def backend_pid(self) -> int | None:
        """The server pid of the lock connection (tests terminate it to simulate a loss)."""
        if self._conn is None:
            return None
        return int(self._conn.execute(sa.text("SELECT pg_backend_pid()")).scalar_one())


def open_leadership(
    engine: Engine,
    shards: int = 1,
    *,
    poll_s: float = 2.0,
    metrics: AlertMetrics | None = None,
) -> LocalShards | PgShardLeadership:
    """Advisory-lock shards on PostgreSQL; every shard local on SQLite (one process)."""
    if engine.dialect.name == "postgresql":
        return PgShardLeadership(engine, shards, poll_s=poll_s, metrics=metrics)
    return LocalShards(shards, metrics=metrics)
