"""One contract suite for every MemoryStore backend (issue 5; acceptance D2, D5, M3).

Backends: embedded SQLite (always), Redis (the shared test server, `integration`), and a
private three-master Redis Cluster (`integration` + `slow`). Every Redis test works in its own
key namespace, so it never touches other tests' keys on the shared server.
"""

from __future__ import annotations

import math
import os
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from flashwatch.config import MemoryConfig
from memory import MemoryBackpressure, MemoryStore, open_store
from memory.redis_store import RedisStore
from memory.sqlite_store import SqliteStore
from memory.testing import RedisCluster3, make_clip

HOURS = [1.0, 2.0, 3.0]
NOW = 1_800_000_000.0

BACKENDS = [
    "sqlite",
    pytest.param("redis", marks=pytest.mark.integration),
    pytest.param("cluster", marks=[pytest.mark.integration, pytest.mark.slow]),
]


@pytest.fixture(scope="session")
def memory_cluster_url() -> Iterator[str]:
    cluster = RedisCluster3()
    try:
        cluster.start()
    except Exception as exc:  # any failure to build the cluster is reported
        cluster.cleanup()
        if os.environ.get("CI"):
            pytest.fail(f"cannot start a local Redis Cluster: {exc}")
        pytest.skip(f"cannot start a local Redis Cluster: {exc}")
    yield cluster.url
    cluster.cleanup()


def redis_keys(store: RedisStore, pattern: str) -> list[bytes]:
    client = store.raw_client()
    if hasattr(client, "get_nodes"):  # cluster: ask every primary
        return list(client.keys(pattern, target_nodes=client.ALL_NODES))
    return list(client.keys(pattern))


@pytest.fixture(params=BACKENDS)
def make_store(
    request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[Callable[..., MemoryStore]]:
    """Factory: opens a store of the parametrised backend (same data on every call)."""
    opened: list[MemoryStore] = []
    namespace = f"fwt{uuid.uuid4().hex[:10]}"
    url = None
    if request.param == "redis":
        url = request.getfixturevalue("redis_url")
    elif request.param == "cluster":
        url = request.getfixturevalue("memory_cluster_url")

    def factory(clock: Callable[[], float] = time.time) -> MemoryStore:
        store: MemoryStore
        if url is None:
            store = SqliteStore(tmp_path / "memory.sqlite3", HOURS, clock=clock)
        else:
            store = RedisStore(url, HOURS, namespace=namespace, clock=clock, retries=2)
        opened.append(store)
        return store

    factory.kind = request.param  # type: ignore[attr-defined]
    factory.namespace = namespace  # type: ignore[attr-defined]
    yield factory
    for store in opened:
        if isinstance(store, RedisStore):
            for key in redis_keys(store, f"{namespace}:*"):
                store.raw_client().delete(key)
        store.close()


@pytest.fixture
def store(make_store: Callable[..., MemoryStore]) -> MemoryStore:
    return make_store()


def _t0s(clips: list) -> list[float]:
    return [c.t[0] for c in clips]


def test_open_store_default_is_embedded(tmp_path: Path) -> None:
    store = open_store(MemoryConfig(), tmp_path)
    assert isinstance(store, SqliteStore) and isinstance(store, MemoryStore)
    assert store.ping() and (tmp_path / "memory.sqlite3").exists()
    store.close()
    assert not store.ping()


def test_put_get_round_trip_with_thumbnail(store: MemoryStore) -> None:
    a = make_clip(1, 0, NOW, dtype="int8", seed=1, thumb=b"\xff\xd8thumb")
    b = make_clip(1, 1, NOW, dtype="fp16", seed=2)
    store.put_many([a, b])
    assert store.get(1, 0, NOW) == a
    assert store.get(1, 1, NOW) == b
    assert store.get(1, 2, NOW) is None
    (no_thumb,) = store.range(1, 0, NOW, NOW)
    assert no_thumb.thumb is None and no_thumb.tokens == a.tokens and no_thumb.scales == a.scales
    assert store.range(1, 0, NOW, NOW, thumbs=True) == [a]


def test_replay_is_idempotent_one_entry_per_clip_id(store: MemoryStore) -> None:
    """D2: a redelivered clip rewrites the same key; memory holds exactly one entry."""
    first = make_clip(2, 0, NOW, seed=1, thumb=b"t1")
    store.put(first)
    store.put(first)
    replay = make_clip(2, 0, NOW + 0.0002, seed=9, epoch=3, dtype="fp16")  # same ms key
    store.put(replay)
    assert store.coverage(2) == {0: (NOW, NOW, 1)}
    assert store.stats().entries == 1
    (got,) = store.range(2, 0, NOW - 10, NOW + 10, thumbs=True)
    assert got == replay  # the last write wins, the old thumbnail is gone with it


def test_range_time_order_and_inclusive_bounds(store: MemoryStore) -> None:
    """D5: each camera's timeline is in time order at every level, whatever the write order."""
    starts = [NOW + 4 * i for i in range(12)]
    order = [5, 0, 11, 3, 7, 1, 9, 2, 10, 4, 8, 6]
    for lvl in (0, 1):
        store.put_many([make_clip(3, lvl, starts[i], tokens=4, channels=8) for i in order])
    store.put(make_clip(4, 0, starts[5], tokens=4, channels=8))  # another camera
    for lvl in (0, 1):
        assert _t0s(store.range(3, lvl, starts[0], starts[-1])) == starts
        assert _t0s(store.range(3, lvl, starts[2], starts[6])) == starts[2:7]
        assert _t0s(store.range(3, lvl, starts[2] + 0.001, starts[6] - 0.001)) == starts[3:6]
    assert store.range(3, 0, starts[6], starts[2]) == []
    assert _t0s(store.range(3, 0, -math.inf, math.inf)) == starts
    assert store.range(3, 2, starts[0], starts[-1]) == []
    assert _t0s(store.range(4, 0, 0, 2 * NOW)) == [starts[5]]


def test_latest_returns_newest_oldest_first(store: MemoryStore) -> None:
    starts = [NOW + 4 * i for i in range(6)]
    store.put_many([make_clip(5, 0, t, tokens=4, channels=8) for t in reversed(starts)])
    assert _t0s(store.latest(5, 0, 3)) == starts[-3:]
    assert _t0s(store.latest(5, 0, 100)) == starts
    assert store.latest(5, 0, 0) == [] and store.latest(5, 1, 3) == []


def test_coverage_per_level(store: MemoryStore) -> None:
    store.put_many([make_clip(6, 0, NOW + 4 * i, tokens=4, channels=8) for i in range(5)])
    store.put_many([make_clip(6, 2, NOW + 64 * i, tokens=4, channels=8) for i in range(2)])
    assert store.coverage(6) == {0: (NOW, NOW + 16, 5), 2: (NOW, NOW + 64, 2)}
    assert store.coverage(999) == {}


def test_delete_camera_removes_every_key(make_store: Callable[..., MemoryStore]) -> None:
    store = make_store()
    for cam in (7, 8):
        store.put_many(
            [
                make_clip(cam, lvl, NOW + 4 * i, thumb=b"j" if lvl == 0 else None)
                for i in range(3)
                for lvl in (0, 1)
            ]
        )
    store.delete_camera(7)
    assert store.coverage(7) == {} and store.range(7, 0, 0, 2 * NOW) == []
    assert store.coverage(8) == {0: (NOW, NOW + 8, 3), 1: (NOW, NOW + 8, 3)}
    assert store.stats().cameras == 1
    if isinstance(store, RedisStore):
        ns = make_store.namespace  # type: ignore[attr-defined]
        assert redis_keys(store, f"{ns}:{{7}}:*") == []
        assert redis_keys(store, f"{ns}:{{8}}:*")
    store.delete_camera(12345)  # unknown camera: nothing to do, no error


def test_trim_exactly_at_each_level_horizon(make_store: Callable[..., MemoryStore]) -> None:
    """M3: with a fake clock, entries older than each level's horizon go, the rest all stay."""
    clock = [NOW]
    store = make_store(clock=lambda: clock[0])
    kept, gone = {}, {}
    for lvl in (0, 1, 2, 4):
        hours = HOURS[min(lvl, len(HOURS) - 1)]
        horizon = NOW - hours * 3600
        gone[lvl] = [horizon - 3600, horizon - 0.001]
        kept[lvl] = [horizon, horizon + 0.001, NOW]
        store.put_many(
            [make_clip(9, lvl, t, tokens=4, channels=8, thumb=b"x") for t in gone[lvl] + kept[lvl]]
        )
    assert store.trim() == 8  # default `now` comes from the injected clock
    for lvl in kept:
        assert _t0s(store.range(9, lvl, 0, 2 * NOW)) == kept[lvl]
    assert store.trim() == 0
    clock[0] = NOW + 3600 * 10  # everything is older than every horizon now
    assert store.trim() == 12
    assert store.coverage(9) == {}
    if isinstance(store, RedisStore):
        ns = make_store.namespace  # type: ignore[attr-defined]
        assert sorted(redis_keys(store, f"{ns}:{{9}}:*:c:*")) == []
        assert sorted(redis_keys(store, f"{ns}:{{9}}:*:th:*")) == []


def test_stats_bytes_per_camera_hour(store: MemoryStore) -> None:
    clips = [
        make_clip(cam, 0, NOW + 4 * i, thumb=b"t" * 100) for cam in (10, 11) for i in range(10)
    ]
    store.put_many(clips)
    st = store.stats()
    payload = sum(len(c.tokens) + len(c.scales or b"") + len(c.thumb or b"") for c in clips)
    assert st.entries == 20 and st.cameras == 2
    assert payload <= st.bytes <= payload + 20 * 128  # + a small per-entry header at most
    lvl = st.levels[0]
    assert lvl.camera_hours == pytest.approx(2 * 40 / 3600)
    assert lvl.bytes_per_camera_hour == pytest.approx(st.bytes / lvl.camera_hours)


def test_wait_new_wakes_on_put(store: MemoryStore) -> None:
    store.put(make_clip(12, 0, NOW, tokens=4, channels=8))
    t = time.monotonic()
    assert store.wait_new(12, 0, NOW, timeout_s=0.3) == []
    assert 0.25 <= time.monotonic() - t < 2.0
    assert _t0s(store.wait_new(12, 0, NOW - 1, timeout_s=5)) == [NOW]  # already there

    def later() -> None:
        time.sleep(0.3)
        store.put(make_clip(12, 1, NOW + 4, tokens=4, channels=8))  # other level: no wake-up
        store.put(make_clip(12, 0, NOW + 4, tokens=4, channels=8))

    writer = threading.Thread(target=later)
    t = time.monotonic()
    writer.start()
    got = store.wait_new(12, 0, NOW, timeout_s=10)
    waited = time.monotonic() - t
    writer.join()
    assert _t0s(got) == [NOW + 4] and got[0].level == 0
    assert waited < 1.5, f"woke after {waited:.2f} s"


def test_survives_reopen(make_store: Callable[..., MemoryStore]) -> None:
    first = make_store()
    clip = make_clip(13, 0, NOW, thumb=b"j")
    first.put(clip)
    first.close()
    assert make_store().get(13, 0, NOW) == clip


def test_concurrent_writers_and_readers(store: MemoryStore) -> None:
    """The encoder, API and alert threads share one store object."""
    errors: list[BaseException] = []

    def writer(cam: int) -> None:
        try:
            for i in range(40):
                store.put(make_clip(cam, 0, NOW + 4 * i, tokens=4, channels=8))
        except BaseException as exc:  # reported below
            errors.append(exc)

    def reader() -> None:
        try:
            for _ in range(40):
                got = _t0s(store.range(20, 0, NOW, NOW + 1000))
                assert got == sorted(got)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(20 + k,)) for k in range(3)]
    threads.append(threading.Thread(target=reader))
    for th in threads:
        th.start()
    for th in threads:
        th.join(timeout=60)
    assert errors == []
    assert {cam: store.coverage(cam)[0].clips for cam in (20, 21, 22)} == {20: 40, 21: 40, 22: 40}


def test_sqlite_disk_full_is_backpressure(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "memory.sqlite3", HOURS)
    store.put(make_clip(30, 0, NOW))
    pages = store._conn().execute("PRAGMA page_count").fetchone()[0]
    store._conn().execute(f"PRAGMA max_page_count = {pages + 2}")  # the disk is "full"
    with pytest.raises(MemoryBackpressure):
        store.put_many([make_clip(30, 0, NOW + 4 * i) for i in range(1, 4)])
    assert store.coverage(30) == {0: (NOW, NOW, 1)}  # the failed batch left nothing behind
    assert len(store.range(30, 0, 0, math.inf)) == 1  # reads still work
    store.close()
