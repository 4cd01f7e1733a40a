"""Camera ingest: supervised RTSP readers, pyramid sampling, 4-frame clips, Kafka bus.

Public API (what the composition root uses):

* `Supervisor(list_cameras, publish, settings, on_status, replica_index, replica_count)`
  with `start()` / `stop()` / `status()`; `CameraSpec` in, `CameraStatus` out.
* `WorkerSettings.from_config(IngestConfig, frame_size=S)`.
* `clip_publisher(bus, topic)`: a `publish(Clip)` callable for the supervisor.
* `KafkaBus` (in `ingest.kafka_bus`, imported on demand: kafka-python is slow to import).
* `IngestCollector(supervisor, bus)` (in `ingest.metrics`): Prometheus metrics.

`on_status(camera_id, CameraStatus)` is called from the camera's worker thread on every
state, error, epoch or decode-mode change; keep it quick (queue the registry write).

See the module docstrings of `sampling` (timestamps and levels), `reader` (timeouts,
whitelist), `worker` (states, epochs) and `supervisor` (reconciliation, replica split).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from flashwatch.messages import Clip, encode
from ingest.camera import CameraCounters, CameraSpec, CameraState, CameraStatus, WorkerSettings
from ingest.supervisor import Supervisor, owned, replica_of
from ingest.worker import CameraWorker


class _BusLike(Protocol):  # the one method of flashwatch.bus.Bus that publishing needs
    def publish(self, topic: str, value: bytes, key: bytes | None = None) -> None: ...


def clip_publisher(bus: _BusLike, topic: str = "fw.clips") -> Callable[[Clip], None]:
    """`publish(clip)` onto `topic`, keyed by camera id so one camera keeps one partition."""

    def publish(clip: Clip) -> None:
        bus.publish(topic, encode(clip), key=str(clip.camera_id).encode())

    return publish


__all__ = [
    "CameraCounters",
    "CameraSpec",
    "CameraState",
    "CameraStatus",
    "CameraWorker",
    "Supervisor",
    "WorkerSettings",
    "clip_publisher",
    "owned",
    "replica_of",
]
