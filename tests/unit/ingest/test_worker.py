"""CameraWorker state machine with a scripted fake reader (no network, no decoding)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pytest

from flashwatch.messages import Clip
from ingest.camera import CameraSpec, CameraStatus, WorkerSettings
from ingest.reader import AuthError, RawFrame, ReaderError, StreamEnded
from ingest.sampling import GopEstimator
from ingest.worker import CameraWorker

T0 = 1_700_000_000.0
SETTINGS = WorkerSettings(
    level0_interval_s=1.0,
    pyramid_levels=2,
    frame_size=16,
    thumb_width=16,
    backoff_initial_s=0.01,
    backoff_max_s=0.02,
    auth_retry_s=30.0,
    allow_file_sources=True,
)


class FakeFrame:
    def to_ndarray(self, format: str) -> np.ndarray:
        assert format == "rgb24"
        return np.full((24, 32, 3), 128, dtype=np.uint8)


class FakeClock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> float:
        return self.now


def scripted(script: list[Any], clock: FakeClock, log: list[str]) -> Callable[..., Any]:
    """A reader factory playing one script entry per connection:
    "auth" | "refused" | (list of (pts, lag), exception at the end)."""
    entries = iter(script)

    class Reader:
        def __init__(self, url: str, **kw: float) -> None:
            self.url = url
            self.entry = next(entries, "refused")
            self.gop = GopEstimator()
            self.fps, self.mode, self.catching_up = 25.0, "all", False
            self.decode_errors = self.skipped = 0
            self.modes: list[tuple[str, bool]] = []

        def open(self) -> None:
            log.append(f"open {self.url}")
            if self.entry == "auth":
                raise AuthError("HTTPUnauthorizedError: 401 'rtsp://***@cam/x'")
            if self.entry == "refused":
                raise ReaderError("ConnectionRefusedError: refused")

        def set_mode(self, mode: str, catching_up: bool = False) -> None:
            self.mode, self.catching_up = mode, catching_up
            log.append(f"mode {mode} {catching_up}")

        def frames_iter(self) -> Iterator[RawFrame]:
            frames, end = self.entry
            base = clock.now + 1.0  # wall time moves on between connections
            for pts, lag in frames:
                clock.now = base + pts + lag
                yield RawFrame(pts, False, FakeFrame())  # type: ignore[arg-type]
            raise end

        def close(self) -> None:
            log.append("close")

    return Reader


def wait_for(pred: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.005)


Made = tuple[CameraWorker, list[Clip], list[CameraStatus], list[str]]


def make(script: list[Any], url: str = "rtsp://cam/x", **kw: Any) -> Made:
    clock, log = FakeClock(), []
    clips: list[Clip] = []
    states: list[CameraStatus] = []
    spec = CameraSpec(id=3, name="c", url=url, password="hunter2pw", username="u")
    worker = CameraWorker(
        spec,
        kw.pop("settings", SETTINGS),
        kw.pop("publish", clips.append),
        on_status=lambda cid, st: states.append(st),
        wall_time=clock,
        reader_factory=scripted(script, clock, log),
        **kw,
    )
    return worker, clips, states, log


def run_frames(seconds: float, fps: float = 25.0, lag: float = 0.0) -> list[tuple[float, float]]:
    return [(i / fps, lag) for i in range(int(seconds * fps))]


def test_stream_clips_disconnect_new_epoch() -> None:
    script = [(run_frames(8.5), StreamEnded("end of stream")), (run_frames(4.5), StreamEnded("x"))]
    worker, clips, states, log = make(script)
    worker.start()
    wait_for(lambda: worker.status().counters.reconnects >= 2)  # third connection: refused
    worker.stop()
    assert worker.join(2)
    st = worker.status()
    assert [c.epoch for c in clips if c.level == 0] == [1, 1, 2]
    assert [c.level for c in clips].count(1) == 0  # 4-s level needs 16 s
    assert st.counters.frames == int(8.5 * 25) + int(4.5 * 25)
    assert st.counters.clips == 3 and st.clips_per_level == (3, 0)
    assert st.counters.discarded_samples >= 1  # the partial clips at each disconnect
    seq = [s.state for s in states]
    assert seq[:4] == ["connecting", "online", "offline", "connecting"]
    assert all(c.thumb is not None for c in clips)
    assert log[0] == "open rtsp://u:hunter2pw@cam/x"  # credentials only in what PyAV gets
    assert all("hunter2pw" not in repr(s) for s in states)
    assert "hunter2pw" not in repr(worker.spec)


def test_auth_failure_retries_slowly() -> None:
    worker, _, _, log = make(["auth"])
    worker.start()
    wait_for(lambda: worker.status().state == "auth_failed")
    time.sleep(0.2)
    st = worker.status()
    assert st.counters.reconnects == 0 and log.count("open rtsp://u:hunter2pw@cam/x") == 1
    assert "***" in (st.last_error or "") and "hunter2pw" not in (st.last_error or "")
    t0 = time.monotonic()
    worker.stop()
    assert worker.join(1) and time.monotonic() - t0 < 0.5  # the 30 s wait is interruptible


def test_publish_failures_are_counted_and_survived() -> None:
    def broken(clip: Clip) -> None:
        raise RuntimeError("bus is closed")

    worker, _, _, _ = make([(run_frames(8.5), StreamEnded("x"))], publish=broken)
    worker.start()
    wait_for(lambda: worker.status().counters.reconnects >= 1)
    worker.stop()
    assert worker.join(2)
    st = worker.status()
    assert st.counters.dropped == 2 and st.counters.clips == 0


def test_falling_behind_switches_to_catch_up_and_back() -> None:
    behind = [(i / 25, 5.0 if 50 <= i < 100 else 0.0) for i in range(150)]
    worker, _, _, log = make([(behind, StreamEnded("x"))])
    worker.start()
    wait_for(lambda: worker.status().counters.reconnects >= 1)
    worker.stop()
    assert worker.join(2)
    assert log.index("mode all True") < log.index("mode all False", log.index("mode all True"))


def test_file_source_ends_at_eof_without_retry() -> None:
    worker, clips, _, log = make([(run_frames(4.2), StreamEnded("eof"))], url="file:///x.mp4")
    worker.start()
    assert worker.join(2)
    st = worker.status()
    assert st.state == "offline" and st.last_error == "end of file"
    assert log.count("open file:///x.mp4") == 1 and len(clips) == 1


def test_file_source_refused_when_not_allowed() -> None:
    settings = WorkerSettings(allow_file_sources=False)
    worker, _, _, log = make([], url="file:///x.mp4", settings=settings)
    worker.start()
    assert worker.join(2)
    assert worker.status().state == "error" and log == []


def test_epochs_continue_from_first_epoch() -> None:
    worker, clips, _, _ = make([(run_frames(4.5), StreamEnded("x"))], first_epoch=7)
    worker.start()
    wait_for(lambda: worker.status().counters.reconnects >= 1)
    worker.stop()
    assert worker.join(2)
    assert clips[0].epoch == 7 and worker.status().epoch >= 8


@pytest.mark.parametrize("n", [16])
def test_many_workers_stop_promptly(n: int) -> None:
    workers = [make(["refused"] * 1000)[0] for _ in range(n)]
    for w in workers:
        w.start()
    time.sleep(0.1)
    before = threading.active_count()
    for w in workers:
        w.stop()
    assert all(w.join(1) for w in workers)
    assert threading.active_count() <= before - n


def test_file_source_can_be_paced_in_real_time() -> None:
    settings = WorkerSettings(allow_file_sources=True, frame_size=16, file_realtime=True)
    worker, _, _, _ = make(
        [(run_frames(1.0), StreamEnded("eof"))], url="file:///x.mp4", settings=settings
    )
    t0 = time.monotonic()
    worker.start()
    assert worker.join(5)
    assert time.monotonic() - t0 >= 0.9  # 25 frames at 25 fps, not as fast as decoding


def test_settings_from_config() -> None:
    from flashwatch.config import IngestConfig

    cfg = IngestConfig(
        level0_interval_s=0.5,
        pyramid_levels=4,
        allow_loopback=True,
        camera_networks=["10.1.0.0/16"],
        backoff_max_s=120.0,
    )
    s = WorkerSettings.from_config(cfg, frame_size=448)
    assert (s.level0_interval_s, s.pyramid_levels, s.frame_size) == (0.5, 4, 448)
    assert s.auth_retry_s == 120.0 and s.open_timeout_s == cfg.open_timeout_s
    assert s.network_policy is not None and s.network_policy.allow_loopback
    assert s.network_policy.allowed_networks == ("10.1.0.0/16",)
