"""Replica split and reconciliation, with fake workers (no threads reading anything)."""

from __future__ import annotations

import threading
import time
from collections import Counter
from dataclasses import replace
from typing import Any, ClassVar

import pytest

from ingest.camera import CameraSpec, CameraStatus, WorkerSettings
from ingest.supervisor import Supervisor, owned, replica_of


def test_replica_split_partitions_cameras_evenly() -> None:
    ids = list(range(1, 2001))
    assert replica_of(1, 1) == 0
    counts = Counter(replica_of(i, 4) for i in ids)
    assert set(counts) == {0, 1, 2, 3}
    assert min(counts.values()) > 400  # roughly even
    cams = [CameraSpec(id=i, name=f"c{i}", url="rtsp://h/x") for i in ids]
    shares = [set(owned(cams, r, 4)) for r in range(4)]
    assert set().union(*shares) == set(ids)
    assert sum(len(s) for s in shares) == len(ids)  # every camera on exactly one replica


# Pinned: a change of hash function would move every camera to another replica during a
# rolling upgrade (two replicas reading one camera), so it must fail loudly. Python's salted
# hash() would not even agree between two processes.
PINNED = [6, 4, 1, 6, 0, 4, 2, 2]


def test_replica_of_known_values() -> None:
    assert [replica_of(i, 8) for i in range(1, 9)] == PINNED


def test_disabled_cameras_are_not_owned() -> None:
    cams = [CameraSpec(id=1, name="a", url="rtsp://h/a", enabled=False)]
    assert owned(cams, 0, 1) == {}


class FakeWorker:
    instances: ClassVar[list[FakeWorker]] = []

    def __init__(self, spec: CameraSpec, settings: WorkerSettings, publish: Any, **kw: Any) -> None:
        self.spec = spec
        self.first_epoch = kw.get("first_epoch", 1)
        self.started = self.stopped = self.muted = False
        self.alive = False
        self.last_progress = 0.0
        self.state = "connecting"
        FakeWorker.instances.append(self)

    def start(self) -> None:
        self.started = self.alive = True

    def mute(self) -> None:
        self.muted = True

    def stop(self) -> None:
        self.stopped = True
        self.alive = False

    def join(self, timeout: float | None = None) -> bool:
        return True

    def status(self) -> CameraStatus:
        return CameraStatus(camera_id=self.spec.id, state=self.state, epoch=self.first_epoch)  # type: ignore[arg-type]


@pytest.fixture
def registry() -> dict[int, CameraSpec]:
    FakeWorker.instances = []
    return {i: CameraSpec(id=i, name=f"c{i}", url=f"rtsp://h/{i}") for i in (1, 2, 3)}


def make_sup(registry: dict[int, CameraSpec], **kw: Any) -> Supervisor:
    return Supervisor(
        lambda: list(registry.values()),
        lambda clip: None,
        WorkerSettings(),
        worker_factory=FakeWorker,
        reconcile_s=3600,
        **kw,
    )


def test_reconcile_starts_changes_and_stops_workers(registry: dict[int, CameraSpec]) -> None:
    sup = make_sup(registry)
    sup.reconcile()
    assert sup.camera_ids() == {1, 2, 3}
    first = {w.spec.id: w for w in FakeWorker.instances}
    assert all(w.started for w in first.values())

    registry[2] = replace(registry[2], url="rtsp://h/new")  # changed
    registry[3] = replace(registry[3], enabled=False)  # disabled
    del registry[1]  # deleted
    registry[4] = CameraSpec(id=4, name="c4", url="rtsp://h/4")  # added
    sup.reconcile()
    assert sup.camera_ids() == {2, 4}
    assert first[1].stopped and first[2].stopped and first[3].stopped
    new2 = [w for w in FakeWorker.instances if w.spec.id == 2][-1]
    assert new2.spec.url == "rtsp://h/new" and new2.started
    assert new2.first_epoch > first[2].first_epoch  # epochs keep growing across restarts

    sup.reconcile()  # nothing changed: nothing restarted
    assert len(FakeWorker.instances) == 5
    assert sup.stop(timeout_s=1)


def test_split_across_replicas(registry: dict[int, CameraSpec]) -> None:
    for i in range(4, 40):
        registry[i] = CameraSpec(id=i, name=f"c{i}", url=f"rtsp://h/{i}")
    sups = [make_sup(registry, replica_index=r, replica_count=3) for r in range(3)]
    for s in sups:
        s.reconcile()
    owned_sets = [s.camera_ids() for s in sups]
    assert set().union(*owned_sets) == set(registry)
    assert sum(map(len, owned_sets)) == len(registry)


def test_dead_threads_restart_but_finished_files_do_not(registry: dict[int, CameraSpec]) -> None:
    sup = make_sup(registry)
    sup.reconcile()
    w1, w2 = FakeWorker.instances[0], FakeWorker.instances[1]
    w1.alive = False  # died while connecting: restart
    w2.alive, w2.state = False, "offline"  # file reached its end: stays down
    sup.reconcile()
    assert sum(w.spec.id == 1 for w in FakeWorker.instances) == 2
    assert sum(w.spec.id == 2 for w in FakeWorker.instances) == 1


def test_watchdog_replaces_a_hung_online_worker(registry: dict[int, CameraSpec]) -> None:
    seen: list[tuple[int, CameraStatus]] = []
    sup = make_sup(registry, on_status=lambda cid, st: seen.append((cid, st)))
    sup.reconcile()
    w = FakeWorker.instances[0]
    w.state = "online"
    w.last_progress = -1e9  # no progress for ages
    sup.reconcile()
    assert w.stopped
    assert (w.spec.id, "reader hung") in [(c, s.last_error) for c, s in seen]
    assert sum(x.spec.id == w.spec.id for x in FakeWorker.instances) == 2


def test_registry_errors_keep_workers_running(registry: dict[int, CameraSpec]) -> None:
    calls = {"n": 0}
    fail = threading.Event()

    def flaky() -> list[CameraSpec]:
        calls["n"] += 1
        if fail.is_set():
            raise ConnectionError("db down postgresql://u:hunter2@db/x")
        return list(registry.values())

    sup = Supervisor(
        flaky, lambda c: None, WorkerSettings(), worker_factory=FakeWorker, reconcile_s=0.01
    )
    sup.start()
    fail.set()
    deadline = time.monotonic() + 2
    while sup.reconcile_errors == 0 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert sup.reconcile_errors > 0
    assert sup.camera_ids() == {1, 2, 3}
    assert sup.stop(timeout_s=2)


def test_invalid_replica_index() -> None:
    with pytest.raises(ValueError, match="replica_index"):
        Supervisor(list, lambda c: None, WorkerSettings(), replica_index=2, replica_count=2)


def test_retired_workers_are_muted_and_disabled_cameras_reported(
    registry: dict[int, CameraSpec],
) -> None:
    seen: list[tuple[int, str]] = []
    sup = make_sup(registry, on_status=lambda cid, st: seen.append((cid, st.state)))
    sup.reconcile()
    old1, old2 = FakeWorker.instances[0], FakeWorker.instances[1]
    registry[1] = replace(registry[1], enabled=False)
    registry[2] = replace(registry[2], name="renamed")
    sup.reconcile()
    assert old1.muted and old1.stopped and old2.muted and old2.stopped
    assert (1, "disabled") in seen
    assert all(cid != 2 for cid, _ in seen)  # a restart reports nothing stale for camera 2
