"""Prometheus metrics of ingest, read from the supervisor's status at scrape time.

A custom collector instead of counters incremented in the hot loop: the workers already keep
their counts (they are what `GET /v1/cameras/{id}/status` shows), so a scrape simply turns
the current snapshot into metric families and there is one source of truth. Labels are the
camera id (never its name or URL: those are operator text and may hold secrets) and level.

Register once in the composition root:
    prometheus_client.REGISTRY.register(IngestCollector(supervisor, bus))
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any, get_args

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from ingest.camera import CameraState, CameraStatus

_COUNTERS = {
    "frames": "Frames decoded.",
    "sampled": "Frames sampled into at least one pyramid level.",
    "clips": "Clips handed to the bus.",
    "dropped": "Clips the bus refused plus frames skipped to catch up with the camera.",
    "decode_errors": "Packets that failed to decode or decoded to corrupt frames.",
    "reconnects": "Connections after the first.",
    "stalls": "Connections ended because no frame arrived in time.",
}


class IngestCollector(Collector):
    """Per-camera counters, state, decode mode and lag; bus buffer depth and drops."""

    def __init__(
        self,
        status: Callable[[], dict[int, CameraStatus]] | Any,
        bus: Any | None = None,
        wall_time: Callable[[], float] = time.time,
    ) -> None:
        # Accept the Supervisor itself or any callable returning {camera_id: CameraStatus}.
        self._status = status.status if hasattr(status, "status") else status
        self._bus = bus
        self._wall_time = wall_time

    def collect(self) -> Iterator[Metric]:
        statuses: dict[int, CameraStatus] = self._status()
        counters = {
            name: CounterMetricFamily(f"fw_ingest_{name}", text, labels=["camera"])
            for name, text in _COUNTERS.items()
        }
        per_level = CounterMetricFamily(
            "fw_ingest_level_clips", "Clips produced per pyramid level.", labels=["camera", "level"]
        )
        state = GaugeMetricFamily(
            "fw_ingest_camera_state",
            "1 for the camera's current state.",
            labels=["camera", "state"],
        )
        keyframes = GaugeMetricFamily(
            "fw_ingest_keyframe_only", "1 when decoding keyframes only.", labels=["camera"]
        )
        lag = GaugeMetricFamily(
            "fw_ingest_lag_seconds", "Now minus the wall time of the last frame.", labels=["camera"]
        )
        now = self._wall_time()
        for cid, st in sorted(statuses.items()):
            cam = str(cid)
            for name, family in counters.items():
                family.add_metric([cam], getattr(st.counters, name))
            for level, n in enumerate(st.clips_per_level):
                per_level.add_metric([cam, str(level)], n)
            for s in get_args(CameraState):
                state.add_metric([cam, s], 1.0 if st.state == s else 0.0)
            keyframes.add_metric([cam], 1.0 if st.decode_mode == "keyframes" else 0.0)
            if st.last_frame_time is not None:
                lag.add_metric([cam], max(0.0, now - st.last_frame_time))
        yield from counters.values()
        yield from (per_level, state, keyframes, lag)
        yield from self._bus_metrics()

    def _bus_metrics(self) -> Iterator[Metric]:
        bus = self._bus
        stats = getattr(bus, "stats", None)
        if bus is None or stats is None:
            return
        depth = GaugeMetricFamily("fw_ingest_bus_buffered", "Records waiting for the broker.")
        depth.add_metric([], float(bus.buffered))
        yield depth
        dropped = CounterMetricFamily(
            "fw_ingest_bus_dropped", "Records dropped because the local buffer was full."
        )
        dropped.add_metric([], float(stats.dropped))
        yield dropped
        failures = CounterMetricFamily("fw_ingest_bus_send_failures", "Sends to be retried.")
        failures.add_metric([], float(stats.send_failures))
        yield failures
