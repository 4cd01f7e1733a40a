"""Redis backend of the memory store (production), standalone or Redis Cluster.

Layout and value format are in `memory.layout`. Design points:

* Every put is one MULTI/EXEC of the camera's keys (one hash slot), so index, values, thumbnail
  and notification never disagree, and an OOM refusal (`noeviction`) aborts the whole put:
  `MemoryBackpressure`, nothing half-written, nothing evicted.
* A rewrite of the same clip id replaces its index member and values: idempotent under
  at-least-once delivery.
* Reads are two round trips: the index (ZRANGEBYSCORE) names every key, then pipelined MGETs.
* New-clip notification is a capped Redis Stream per (camera, level), read with blocking XREAD
  from the last seen id. Unlike pub/sub, an entry written between the waiter's index check and
  its XREAD is still delivered (no lost wake-ups), a waiter needs no dedicated connection, and
  in a cluster the stream lives on the camera's own shard instead of being broadcast.
* Connection loss is retried by redis-py with capped exponential backoff and jitter; once the
  bound is spent the caller gets `MemoryUnavailable`. `ping()` uses a separate client without
  retries so readiness answers at once. The client is created lazily, so a store opened while
  Redis is down does not fail: it is just not ready (acceptance M4).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import redis
from redis.backoff import ExponentialWithJitterBackoff
from redis.cluster import RedisCluster
from redis.exceptions import RedisClusterException
from redis.retry import Retry

from flashwatch.messages import ClipTokens
from memory import layout as L
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

__all__ = ["RedisStore"]

# redis.Redis and RedisCluster share the command API used here but no common static type.
Client = Any
_MGET_BATCH = 256
_TRIM_BATCH = 1000
_UNAVAILABLE = (redis.ConnectionError, redis.TimeoutError, redis.exceptions.ClusterError)


@contextmanager
def _errors(what: str) -> Iterator[None]:
    """Map redis-py failures onto the store's typed errors."""
    try:
        yield
    except redis.exceptions.OutOfMemoryError as exc:
        raise MemoryBackpressure(f"{what}: Redis is at maxmemory (noeviction): {exc}") from exc
    except redis.exceptions.ExecAbortError as exc:
        if "OOM" in str(exc):
            raise MemoryBackpressure(f"{what}: Redis is at maxmemory: {exc}") from exc
        raise MemoryStoreError(f"{what}: transaction aborted: {exc}") from exc
    except (*_UNAVAILABLE, RedisClusterException) as exc:
        raise MemoryUnavailable(f"{what}: Redis unreachable after retries: {exc}") from exc
    except redis.RedisError as exc:
        raise MemoryStoreError(f"{what}: {exc}") from exc


def _split_cluster_flag(url: str) -> tuple[str, bool]:
    """Strip our `cluster=1` query flag (redis-py would reject it as a connection kwarg)."""
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    flag = [v for k, v in query if k == "cluster"]
    rest = [(k, v) for k, v in query if k != "cluster"]
    cluster = bool(flag) and flag[-1].lower() in ("1", "true", "yes")
    return urlunsplit(parts._replace(query=urlencode(rest))), cluster


def _connect(url: str, *, retries: int, base_s: float, cap_s: float, timeout_s: float) -> Client:
    plain, cluster = _split_cluster_flag(url)
    retry = Retry(ExponentialWithJitterBackoff(cap=cap_s, base=base_s), retries)
    kwargs: dict[str, Any] = {
        # RESP2: its parser moves large bulk replies ~20% faster than RESP3's (measured);
        # a `protocol=` in the URL still wins.
        "protocol": 2,
        "retry": retry,
        "socket_connect_timeout": min(timeout_s, 2.0),
        "socket_timeout": timeout_s,
    }
    if cluster:
        return RedisCluster.from_url(plain, **kwargs)
    return redis.Redis.from_url(
        plain, retry_on_error=[redis.ConnectionError, redis.TimeoutError], **kwargs
    )


class RedisStore:
    """`MemoryStore` on Redis. Thread-safe (redis-py pools connections per client)."""

    def __init__(
        self,
        url: str,
        retention_hours: Sequence[float],
        *,
        retries: int = 8,
        backoff_base_s: float = 0.05,
        backoff_cap_s: float = 2.0,
        socket_timeout_s: float = 5.0,
        stream_maxlen: int = 128,
        namespace: str = "fw",
        clock: Callable[[], float] = time.time,
    ) -> None:
        """`url` may carry `?cluster=1` to use Redis Cluster. Nothing connects until first use."""
        self._url = url
        self._cluster = _split_cluster_flag(url)[1]
        self._retention = list(retention_hours)
        self._retries = retries
        self._backoff = (backoff_base_s, backoff_cap_s)
        self._timeout_s = socket_timeout_s
        self._stream_maxlen = stream_maxlen
        self._keys = L.Keys(namespace)
        self._block_slice_s = min(1.0, socket_timeout_s / 2)
        self._clock = clock
        self._lock = threading.Lock()
        self._client_obj: Client | None = None
        self._probe_obj: Client | None = None

    # -- connections ---------------------------------------------------------------------

    def _client(self) -> Client:
        with self._lock:
            if self._client_obj is None:
                with _errors("connect"):
                    self._client_obj = _connect(
                        self._url,
                        retries=self._retries,
                        base_s=self._backoff[0],
                        cap_s=self._backoff[1],
                        timeout_s=self._timeout_s,
                    )
            return self._client_obj

    def ping(self) -> bool:
        try:
            with self._lock:
                if self._probe_obj is None:
                    self._probe_obj = _connect(
                        self._url, retries=0, base_s=0.01, cap_s=0.01, timeout_s=0.5
                    )
                probe = self._probe_obj
            return bool(probe.ping())
        except (redis.RedisError, RedisClusterException, OSError):
            if self._cluster:  # a cluster client caches topology; rebuild it next time
                with self._lock:
                    self._probe_obj = None
            return False

    def close(self) -> None:
        with self._lock:
            for client in (self._client_obj, self._probe_obj):
                if client is not None:
                    client.close()
            self._client_obj = self._probe_obj = None

    # -- writes --------------------------------------------------------------------------

    def put(self, ct: ClipTokens) -> None:
        self.put_many([ct])

    def put_many(self, cts: Sequence[ClipTokens]) -> None:
        by_camera: dict[int, list[ClipTokens]] = {}
        for ct in cts:
            by_camera.setdefault(ct.camera_id, []).append(ct)
        if not by_camera:
            return
        with _errors("put"):
            client = self._client()
            if self._cluster:  # the global camera set lives in another slot
                client.sadd(self._keys.cameras(), *by_camera)
            for camera, group in by_camera.items():
                pipe = client.pipeline(transaction=True)
                if not self._cluster:
                    pipe.sadd(self._keys.cameras(), camera)
                for ct in group:
                    self._queue_put(pipe, ct)
                pipe.execute()

    def _queue_put(self, pipe: Client, ct: ClipTokens) -> None:
        cam, lvl, t0 = ct.camera_id, ct.level, key_ms(ct.t[0])
        payload = L.pack(ct)
        chunks = L.split_chunks(payload)
        thumb = ct.thumb or b""
        idx = self._keys.index(cam, lvl)
        pipe.zremrangebyscore(idx, t0, t0)
        stale = [self._keys.chunk(cam, lvl, t0, i) for i in range(len(chunks), L.MAX_CHUNKS)]
        if stale:
            pipe.delete(*stale)
        for i, chunk in enumerate(chunks):
            pipe.set(self._keys.chunk(cam, lvl, t0, i), chunk)
        if thumb:
            pipe.set(self._keys.thumb(cam, lvl, t0), thumb)
        else:
            pipe.delete(self._keys.thumb(cam, lvl, t0))
        pipe.zadd(idx, {L.entry_name(t0, len(chunks), len(payload), len(thumb)): t0})
        pipe.sadd(self._keys.levels(cam), lvl)
        pipe.xadd(
            self._keys.stream(cam, lvl), {"t": t0}, maxlen=self._stream_maxlen, approximate=True
        )

    # -- reads ---------------------------------------------------------------------------

    def _fetch(
        self, client: Client, cam: int, lvl: int, members: Sequence[bytes], thumbs: bool
    ) -> list[ClipTokens]:
        """Values of index members, oldest first; entries torn by a concurrent trim are skipped."""
        entries = sorted((L.parse_entry(m) for m in members), key=lambda e: e.t0_ms)
        keys: list[str] = []
        for e in entries:
            keys += self._keys.chunks(cam, lvl, e.t0_ms, e.chunks)
            if thumbs and e.thumb_bytes:
                keys.append(self._keys.thumb(cam, lvl, e.t0_ms))
        batches = [keys[i : i + _MGET_BATCH] for i in range(0, len(keys), _MGET_BATCH)]
        if self._cluster:  # cluster pipelines refuse MGET; same-slot MGET alone is fine
            replies = [client.mget(batch) for batch in batches]
        else:
            pipe = client.pipeline(transaction=False)
            for batch in batches:
                pipe.mget(batch)
            replies = pipe.execute() if batches else []
        values = [v for reply in replies for v in reply]
        out: list[ClipTokens] = []
        pos = 0
        for e in entries:
            chunks = L.complete(values[pos : pos + e.chunks])
            pos += e.chunks
            thumb = None
            if thumbs and e.thumb_bytes:
                thumb = values[pos]
                pos += 1
            if chunks is not None:
                out.append(L.unpack_chunks(chunks, thumb))
        return out

    def _range_ms(
        self, cam: int, lvl: int, lo: int | str, hi: int | str, thumbs: bool
    ) -> list[ClipTokens]:
        client = self._client()
        members = client.zrangebyscore(self._keys.index(cam, lvl), lo, hi)
        return self._fetch(client, cam, lvl, members, thumbs) if members else []

    def get(
        self, camera_id: int, level: int, t0: float, *, thumbs: bool = True
    ) -> ClipTokens | None:
        with _errors("get"):
            found = self._range_ms(camera_id, level, key_ms(t0), key_ms(t0), thumbs)
        return found[0] if found else None

    def range(
        self, camera_id: int, level: int, t_from: float, t_to: float, *, thumbs: bool = False
    ) -> list[ClipTokens]:
        lo, hi = bound_ms(t_from), bound_ms(t_to)
        if lo > hi:
            return []
        with _errors("range"):
            return self._range_ms(camera_id, level, lo, hi, thumbs)

    def latest(
        self, camera_id: int, level: int, n: int, *, thumbs: bool = False
    ) -> list[ClipTokens]:
        if n <= 0:
            return []
        with _errors("latest"):
            client = self._client()
            members = client.zrange(self._keys.index(camera_id, level), -n, -1)
            return self._fetch(client, camera_id, level, members, thumbs) if members else []

    def coverage(self, camera_id: int) -> dict[int, LevelCoverage]:
        with _errors("coverage"):
            client = self._client()
            levels = sorted(int(v) for v in client.smembers(self._keys.levels(camera_id)))
            pipe = client.pipeline(transaction=False)
            for lvl in levels:
                idx = self._keys.index(camera_id, lvl)
                pipe.zcard(idx)
                pipe.zrange(idx, 0, 0, withscores=True)
                pipe.zrange(idx, -1, -1, withscores=True)
            res = pipe.execute() if levels else []
        out: dict[int, LevelCoverage] = {}
        for i, lvl in enumerate(levels):
            count, first, last = res[3 * i : 3 * i + 3]
            if count:
                out[lvl] = LevelCoverage(first[0][1] / 1000.0, last[0][1] / 1000.0, int(count))
        return out

    def wait_new(
        self, camera_id: int, level: int, after_t: float, timeout_s: float
    ) -> list[ClipTokens]:
        deadline = time.monotonic() + max(0.0, timeout_s)
        lo = bound_ms(after_t) + 1
        skey = self._keys.stream(camera_id, level)
        with _errors("wait_new"):
            client = self._client()
            tail = client.xrevrange(skey, count=1)
            last_id = tail[0][0] if tail else b"0-0"
            while True:
                found = self._range_ms(camera_id, level, lo, "+inf", thumbs=False)
                remaining = deadline - time.monotonic()
                if found or remaining <= 0:
                    return found
                block_ms = max(1, int(min(remaining, self._block_slice_s) * 1000))
                reply = client.xread({skey: last_id}, count=self._stream_maxlen, block=block_ms)
                if reply:
                    last_id = reply[0][1][-1][0]

    # -- maintenance ---------------------------------------------------------------------

    def _cameras(self, client: Client) -> list[int]:
        return sorted(int(v) for v in client.smembers(self._keys.cameras()))

    def _levels(self, client: Client, cam: int) -> list[int]:
        return sorted(int(v) for v in client.smembers(self._keys.levels(cam)))

    def _entry_keys(self, cam: int, lvl: int, members: Sequence[bytes]) -> list[str]:
        keys: list[str] = []
        for e in map(L.parse_entry, members):
            keys += self._keys.chunks(cam, lvl, e.t0_ms, e.chunks)
            keys.append(self._keys.thumb(cam, lvl, e.t0_ms))
        return keys

    def delete_camera(self, camera_id: int) -> None:
        """Removes every key under `fw:{camera}:`; stop the camera's writers first."""
        with _errors("delete_camera"):
            client = self._client()
            keys = [self._keys.levels(camera_id)]
            for lvl in self._levels(client, camera_id):
                idx = self._keys.index(camera_id, lvl)
                keys += self._entry_keys(camera_id, lvl, client.zrange(idx, 0, -1))
                keys += [idx, self._keys.stream(camera_id, lvl)]
            for i in range(0, len(keys), _TRIM_BATCH):
                client.delete(*keys[i : i + _TRIM_BATCH])
            client.srem(self._keys.cameras(), camera_id)

    def trim(self, now: float | None = None) -> int:
        now = self._clock() if now is None else now
        removed = 0
        with _errors("trim"):
            client = self._client()
            for cam in self._cameras(client):
                for lvl in self._levels(client, cam):
                    horizon = retention_horizon_ms(lvl, self._retention, now)
                    removed += self._trim_level(client, cam, lvl, horizon)
        return removed

    def _trim_level(self, client: Client, cam: int, lvl: int, horizon_ms: int) -> int:
        """Delete entries with key < horizon: values first, then their index members.

        Not a MULTI/EXEC on purpose: under `noeviction` OOM Redis 7 refuses *every* command
        queued in a transaction, even DEL, and trimming is what relieves back-pressure. Plain
        DEL/ZREM are allowed at OOM. Values go first so an interruption leaves at worst index
        members without values (reads skip them, the next trim removes them), never unindexed
        values that nothing would ever delete.
        """
        idx = self._keys.index(cam, lvl)
        removed = 0
        while True:
            members = client.zrangebyscore(idx, "-inf", f"({horizon_ms}", start=0, num=_TRIM_BATCH)
            if not members:
                return removed
            pipe = client.pipeline(transaction=False)
            # execute_command: the cluster pipeline's delete() refuses several keys, even when
            # (as here, one hash tag) they share a slot.
            pipe.execute_command("DEL", *self._entry_keys(cam, lvl, members))
            pipe.zrem(idx, *members)
            removed += int(pipe.execute()[-1])

    def stats(self) -> MemoryStats:
        rows: list[tuple[int, int, int, int, float, float]] = []
        with _errors("stats"):
            client = self._client()
            for cam in self._cameras(client):
                for lvl in self._levels(client, cam):
                    entries = [
                        L.parse_entry(m) for m in client.zrange(self._keys.index(cam, lvl), 0, -1)
                    ]
                    if not entries:
                        continue
                    nbytes = sum(e.payload_bytes + e.thumb_bytes for e in entries)
                    first, last = entries[0].t0_ms / 1000.0, entries[-1].t0_ms / 1000.0
                    rows.append((cam, lvl, len(entries), nbytes, first, last))
        return summarise_stats(rows)

    def raw_client(self) -> Client:
        """The underlying redis-py client (benchmarks and tests measure MEMORY USAGE with it)."""
        return self._client()
