"""The camera supervisor: one `CameraWorker` per enabled camera this replica owns.

Reconciliation, not events: every `reconcile_s` the supervisor calls `list_cameras()`
(the composition root reads the SQL registry there) and compares the result with its
workers. New cameras start, changed ones (any `CameraSpec` field) restart with a new
worker, disabled or deleted ones stop. Missing a change notification therefore cannot
leave a camera in the wrong state for longer than one period, and the registry stays the
single source of truth.

Replica split: a camera belongs to replica `blake2b(id) mod replica_count`. blake2b, not
Python's `hash()`, because the latter is salted per process and replicas must agree; a
camera is read by exactly one replica as long as they share `replica_count`.

Watchdog: a worker whose thread is online but has made no progress for
`stall_timeout_s + read_timeout_s + grace` (its bounded reads should have fired by then)
is reported `error` ("reader hung") and replaced on the next pass. A worker whose thread
ended stays down until its spec changes when it ended on purpose (a file source at EOF) or
on a bug (state `error`, no crash loop). Stop is bounded: every worker is signalled first, then
all are joined against one shared deadline.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import replace

from flashwatch.security import safe_error
from ingest.backoff import ReconnectStagger
from ingest.camera import CameraSpec, CameraState, CameraStatus, WorkerSettings
from ingest.worker import CameraWorker, PublishFn, StatusFn

log = logging.getLogger(__name__)

ListCameras = Callable[[], list[CameraSpec]]


def replica_of(camera_id: int, replica_count: int) -> int:
    """The replica that owns `camera_id`: stable across processes, hosts and restarts."""
    if replica_count < 1:
        raise ValueError(f"replica_count must be >= 1, got {replica_count}")
    digest = hashlib.blake2b(str(camera_id).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") % replica_count


def owned(
    cameras: list[CameraSpec], replica_index: int, replica_count: int
) -> dict[int, CameraSpec]:
    """The enabled cameras this replica must read, by id."""
    return {
        c.id: c for c in cameras if c.enabled and replica_of(c.id, replica_count) == replica_index
    }


class Supervisor:
    """Runs and reconciles camera workers. `start()` / `stop()`; thread-safe status()."""

    def __init__(
        self,
        list_cameras: ListCameras,
        publish: PublishFn,
        settings: WorkerSettings,
        on_status: StatusFn | None = None,
        replica_index: int = 0,
        replica_count: int = 1,
        reconcile_s: float = 3.0,
        watchdog_grace_s: float = 5.0,
        worker_factory: Callable[..., CameraWorker] = CameraWorker,
    ) -> None:
        if not 0 <= replica_index < replica_count:
            raise ValueError(f"replica_index {replica_index} must be in [0, {replica_count})")
        self._list_cameras = list_cameras
        self._publish = publish
        self.settings = settings
        self._on_status = on_status
        self.replica_index = replica_index
        self.replica_count = replica_count
        self.reconcile_s = reconcile_s
        self.watchdog_grace_s = watchdog_grace_s
        self._worker_factory = worker_factory
        self.stagger = ReconnectStagger(settings.reconnect_rate_per_s, settings.reconnect_burst)
        self._workers: dict[int, CameraWorker] = {}
        self._next_epoch: dict[int, int] = {}  # epochs keep growing across worker restarts
        self._retired: list[CameraWorker] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.reconcile_errors = 0

    # ---- lifecycle ------------------------------------------------------------------

    def start(self) -> None:
        if self._thread is not None:
            raise RuntimeError("already started")
        self._stop.clear()
        try:
            self.reconcile()
        except Exception as exc:  # registry not reachable yet: the loop keeps trying
            self.reconcile_errors += 1
            log.warning("ingest: list_cameras failed: %s", safe_error(exc))
        self._thread = threading.Thread(target=self._loop, name="ingest-supervisor", daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float | None = None) -> bool:
        """Stop every worker; True when all threads ended within `timeout_s` (default: the
        longest bounded wait of a worker, open timeout plus a margin)."""
        if timeout_s is None:
            timeout_s = max(self.settings.open_timeout_s, self.settings.read_timeout_s) + 2.0
        deadline = time.monotonic() + timeout_s
        self._stop.set()
        if self._thread is not None:
            self._thread.join(max(0.0, deadline - time.monotonic()))
            self._thread = None
        with self._lock:
            workers = [*self._workers.values(), *self._retired]
            self._workers.clear()
            self._retired.clear()
        for w in workers:
            w.stop()
        ok = True
        for w in workers:
            ok = w.join(max(0.0, deadline - time.monotonic())) and ok
        if not ok:
            log.warning("ingest: some camera threads did not stop within %.1f s", timeout_s)
        return ok

    def status(self) -> dict[int, CameraStatus]:
        with self._lock:
            return {cid: w.status() for cid, w in self._workers.items()}

    def camera_ids(self) -> set[int]:
        with self._lock:
            return set(self._workers)

    # ---- reconciliation -------------------------------------------------------------

    def _loop(self) -> None:
        while not self._stop.wait(self.reconcile_s):
            try:
                self.reconcile()
            except Exception as exc:  # registry down: keep the current workers running
                self.reconcile_errors += 1
                log.warning("ingest: list_cameras failed: %s", safe_error(exc))

    def reconcile(self) -> None:
        """One pass: start, restart and stop workers to match `list_cameras()`."""
        cameras = self._list_cameras()
        wanted = owned(cameras, self.replica_index, self.replica_count)
        disabled = {c.id for c in cameras if not c.enabled}
        now = time.monotonic()
        with self._lock:
            if self._stop.is_set():  # stopping: start nothing new
                return
            for cid in list(self._workers):
                worker = self._workers[cid]
                spec = wanted.get(cid)
                if spec is None:
                    self._retire(cid, "disabled" if cid in disabled else "removed")
                elif spec != worker.spec:
                    self._retire(cid, "changed")
                elif self._hung(worker, now):
                    self._retire(cid, "hung")
                elif not worker.alive and self._restartable(worker):
                    self._retire(cid, "thread ended")
            for cid, spec in wanted.items():
                if cid not in self._workers:
                    self._spawn(spec)
            self._retired = [w for w in self._retired if w.alive]

    def _spawn(self, spec: CameraSpec) -> None:
        worker = self._worker_factory(
            spec,
            self.settings,
            self._publish,
            on_status=self._on_status,
            stagger=self.stagger,
            first_epoch=self._next_epoch.get(spec.id, 1),
        )
        self._workers[spec.id] = worker
        worker.start()

    def _retire(self, cid: int, why: str) -> None:
        worker = self._workers.pop(cid)
        worker.mute()
        worker.stop()
        # Bounded: a worker that is still connecting may bump its epoch once more.
        self._next_epoch[cid] = worker.status().epoch + 2
        self._retired.append(worker)
        log.info("ingest: camera %s worker retired (%s)", cid, why)
        finals: dict[str, tuple[CameraState, str | None]] = {
            "hung": ("error", "reader hung"),
            "disabled": ("disabled", None),
        }
        final = finals.get(why)
        if final is not None and self._on_status is not None:
            state, error = final
            self._on_status(cid, replace(worker.status(), state=state, last_error=error))

    def _hung(self, worker: CameraWorker, now: float) -> bool:
        if worker.status().state != "online":
            return False
        limit = self.settings.stall_timeout_s + self.settings.read_timeout_s + self.watchdog_grace_s
        return now - worker.last_progress > limit

    @staticmethod
    def _restartable(worker: CameraWorker) -> bool:
        # A file source that reached its end, or a worker that hit a bug, stays down until
        # its spec changes: restarting would re-import the file or crash-loop.
        return worker.status().state not in ("offline", "error")
