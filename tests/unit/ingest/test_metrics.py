"""The Prometheus collector renders supervisor status without touching credentials."""

from __future__ import annotations

from types import SimpleNamespace

from prometheus_client import CollectorRegistry, generate_latest

from ingest.camera import CameraCounters, CameraStatus
from ingest.metrics import IngestCollector


def test_collector_exposes_per_camera_counters_state_and_bus_depth() -> None:
    statuses = {
        7: CameraStatus(
            camera_id=7,
            state="online",
            decode_mode="keyframes",
            last_frame_time=990.0,
            clips_per_level=(5, 1),
            counters=CameraCounters(frames=100, reconnects=2, decode_errors=3),
        ),
        8: CameraStatus(camera_id=8, state="auth_failed", last_error="401 'rtsp://***@h/x'"),
    }
    bus = SimpleNamespace(stats=SimpleNamespace(dropped=4, send_failures=1), buffered=12)
    reg = CollectorRegistry()
    reg.register(IngestCollector(lambda: statuses, bus, wall_time=lambda: 1000.0))
    text = generate_latest(reg).decode()
    assert 'fw_ingest_frames_total{camera="7"} 100.0' in text
    assert 'fw_ingest_reconnects_total{camera="7"} 2.0' in text
    assert 'fw_ingest_decode_errors_total{camera="7"} 3.0' in text
    assert 'fw_ingest_level_clips_total{camera="7",level="1"} 1.0' in text
    assert 'fw_ingest_camera_state{camera="8",state="auth_failed"} 1.0' in text
    assert 'fw_ingest_camera_state{camera="8",state="online"} 0.0' in text
    assert 'fw_ingest_keyframe_only{camera="7"} 1.0' in text
    assert 'fw_ingest_lag_seconds{camera="7"} 10.0' in text
    assert "fw_ingest_bus_buffered 12.0" in text
    assert "fw_ingest_bus_dropped_total 4.0" in text
    assert "rtsp" not in text
