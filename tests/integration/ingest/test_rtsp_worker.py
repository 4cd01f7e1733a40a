"""Workers against real RTSP servers on loopback: clips, I1 (silent server), I2 (stall),
I6 (wrong credentials), supervisor lifecycle. gst-rtsp-server via the `rtsp_server` fixture;
the silent and 401 servers are tiny sockets here."""

from __future__ import annotations

import io
import os
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from PIL import Image

from flashwatch.bus import InProcessBus
from flashwatch.messages import Clip, decode
from flashwatch.security import NetworkPolicy
from ingest import (
    CameraSpec,
    CameraStatus,
    CameraWorker,
    Supervisor,
    WorkerSettings,
    clip_publisher,
)
from tests.waiting import wait_for

pytestmark = [pytest.mark.integration, pytest.mark.slow]

FAST = WorkerSettings(
    level0_interval_s=0.25,
    pyramid_levels=3,
    frame_size=64,
    open_timeout_s=3.0,
    read_timeout_s=1.5,
    stall_timeout_s=3.0,
    backoff_initial_s=0.2,
    backoff_max_s=1.0,
    stable_uptime_s=30.0,
    auth_retry_s=30.0,
    network_policy=NetworkPolicy(allow_loopback=True),
)


class Collector:
    def __init__(self) -> None:
        self.bus = InProcessBus(capacity=100_000)
        self.consumer = self.bus.consumer("fw.clips", "t")
        self.publish = clip_publisher(self.bus, "fw.clips")
        self.clips: list[Clip] = []

    def drain(self) -> list[Clip]:
        self.clips += [decode(r.value, Clip) for r in self.consumer.poll(100_000, timeout_s=0.05)]
        return self.clips


def assert_no_clip_spans_a_gap(clips: list[Clip], s0: float) -> None:
    for c in clips:
        interval = s0 * 4**c.level
        steps = [b - a for a, b in zip(c.t, c.t[1:], strict=False)]
        assert all(0 < d <= 2.5 * interval for d in steps), (c.level, c.epoch, c.t)  # no frames


@pytest.fixture
def long_clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tests.media import make_h264

    return make_h264(
        tmp_path_factory.mktemp("m") / "c60.mp4", seconds=60, fps=25, size=(320, 240), gop=25
    )


def test_rtsp_stream_to_clips_on_the_bus(
    rtsp_server: Callable[..., object], h264_clip: Path
) -> None:
    server = rtsp_server({"/cam1": h264_clip})
    col = Collector()
    spec = CameraSpec(id=11, name="c", url=server.url("/cam1"))  # type: ignore[attr-defined]
    worker = CameraWorker(spec, FAST, col.publish)
    t_start = time.time()
    worker.start()
    try:
        wait_for(lambda: sum(c.level == 1 for c in col.drain()) >= 2, 20, "two level-1 clips")
    finally:
        worker.stop()
        assert worker.join(5)
    clips = col.drain()
    st = worker.status()
    assert (
        st.state == "offline"
        and st.last_error == "ingest stopped"
        and st.epoch == 1
        and st.counters.decode_errors == 0
    )
    level0 = [c for c in clips if c.level == 0]
    assert len(level0) >= 6
    assert_no_clip_spans_a_gap(clips, 0.25)
    for c in level0[1:]:
        # The first frame of each 0.25 s slot of a 25 fps stream: 0.21..0.29 s apart (only the
        # epoch's very first sample may fall mid-slot).
        assert all(0.2 <= b - a <= 0.3 for a, b in zip(c.t, c.t[1:], strict=False)), c.t
    for c in level0:
        assert t_start - 1 <= c.t[0] <= time.time() + 1  # mapped to wall clock
        assert c.thumb is not None
    times = [c.t[0] for c in level0]
    assert times == sorted(times) and len({c.clip_id for c in clips}) == len(clips)
    with Image.open(io.BytesIO(level0[0].frames[0])) as im:
        assert im.mode == "RGB" and im.size == (64, 64)


@pytest.fixture
def silent_server() -> Iterator[int]:
    """Accepts TCP connections and never says a word (ACCEPTANCE I1)."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(64)
    conns: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        srv.settimeout(0.1)
        while not stop.is_set():
            try:
                conns.append(srv.accept()[0])
            except OSError:
                continue

    th = threading.Thread(target=accept, daemon=True)
    th.start()
    yield srv.getsockname()[1]
    stop.set()
    th.join(2)
    for c in conns:
        c.close()
    srv.close()


def test_i1_silent_server_open_fails_within_bound(silent_server: int) -> None:
    states: list[CameraStatus] = []
    spec = CameraSpec(id=12, name="silent", url=f"rtsp://127.0.0.1:{silent_server}/x")
    worker = CameraWorker(spec, FAST, lambda c: None, on_status=lambda cid, s: states.append(s))
    threads_before = threading.active_count()
    worker.start()
    elapsed = wait_for(lambda: worker.status().state == "offline", 10, "offline")
    print(f"I1: open failed after {elapsed:.2f} s (open_timeout_s={FAST.open_timeout_s})")
    assert elapsed <= FAST.open_timeout_s + 1.5
    assert "timed out" in (worker.status().last_error or "").lower() or worker.status().last_error
    wait_for(lambda: worker.status().counters.reconnects >= 2, 15, "two retries")
    t0 = time.monotonic()
    worker.stop()
    assert worker.join(FAST.open_timeout_s + 2), "worker thread hung"
    print(
        f"I1: stop joined in {time.monotonic() - t0:.2f} s; states={[s.state for s in states][:6]}"
    )
    assert threading.active_count() <= threads_before
    assert [s.state for s in states][:3] == ["connecting", "offline", "connecting"]


def test_i2_stall_reconnects_with_a_new_epoch(
    rtsp_server: Callable[..., object], long_clip: Path
) -> None:
    server = rtsp_server({"/cam": "test"})
    col = Collector()
    spec = CameraSpec(id=13, name="stall", url=server.url("/cam"))  # type: ignore[attr-defined]
    worker = CameraWorker(spec, FAST, col.publish)
    worker.start()
    pid = server.proc.pid  # type: ignore[attr-defined]
    try:
        wait_for(lambda: len(col.drain()) >= 3, 20, "clips before the stall")
        os.kill(pid, signal.SIGSTOP)
        t_stall = time.time()
        detected = wait_for(lambda: worker.status().state != "online", 10, "stall detection")
        print(f"I2: stall detected after {detected:.2f} s: {worker.status().last_error}")
        assert detected <= FAST.read_timeout_s + FAST.stall_timeout_s + 1
        time.sleep(1.0)
        os.kill(pid, signal.SIGCONT)
        wait_for(
            lambda: any(c.epoch >= 2 and c.level == 0 for c in col.drain()), 25, "clips after stall"
        )
    finally:
        os.kill(pid, signal.SIGCONT)
        worker.stop()
        assert worker.join(6)
    clips = col.drain()
    assert worker.status().epoch >= 2 and worker.status().counters.reconnects >= 1
    assert_no_clip_spans_a_gap(clips, 0.25)
    before = [c for c in clips if c.epoch == 1]
    after = [c for c in clips if c.epoch >= 2]
    assert before and after
    # Nothing of epoch 1 after the stall began (plus pipeline latency), nothing of later
    # epochs before the server came back.
    assert max(c.t[3] for c in before) < t_stall + 1.0
    assert min(c.t[0] for c in after) > t_stall + 1.0


UNAUTHORIZED = (
    b"RTSP/1.0 401 Unauthorized\r\nCSeq: %s\r\n"
    b'WWW-Authenticate: Basic realm="cam"\r\nContent-Length: 0\r\n\r\n'
)


@pytest.fixture
def auth_server() -> Iterator[tuple[int, list[bytes]]]:
    """A minimal RTSP server that answers every request 401 (wrong credentials, I6)."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(16)
    seen: list[bytes] = []
    stop = threading.Event()

    def serve() -> None:
        srv.settimeout(0.1)
        while not stop.is_set():
            try:
                conn, _ = srv.accept()
            except OSError:
                continue
            conn.settimeout(2)
            with conn:
                try:
                    while True:
                        req = conn.recv(4096)
                        if not req:
                            break
                        seen.append(req)
                        lines = req.split(b"\r\n")
                        cseq = next(
                            (ln[5:].strip() for ln in lines if ln.lower().startswith(b"cseq:")),
                            b"1",
                        )
                        conn.sendall(UNAUTHORIZED % cseq)
                except OSError:
                    pass

    th = threading.Thread(target=serve, daemon=True)
    th.start()
    yield srv.getsockname()[1], seen
    stop.set()
    th.join(2)
    srv.close()


def test_i6_wrong_credentials(
    auth_server: tuple[int, list[bytes]], caplog: pytest.LogCaptureFixture
) -> None:
    port, seen = auth_server
    password = "s3cr@t:pa/ss%40word"
    states: list[CameraStatus] = []
    spec = CameraSpec(
        id=14, name="auth", url=f"rtsp://127.0.0.1:{port}/x", username="admin", password=password
    )
    worker = CameraWorker(spec, FAST, lambda c: None, on_status=lambda cid, s: states.append(s))
    caplog.set_level("DEBUG")
    worker.start()
    try:
        wait_for(lambda: worker.status().state == "auth_failed", 10, "auth_failed")
        time.sleep(1.0)  # slow retry: no second attempt within auth_retry_s
        st = worker.status()
        assert st.state == "auth_failed" and st.counters.reconnects == 0
    finally:
        worker.stop()
        assert worker.join(5)
    assert seen, "the server saw no request"
    text = repr(states) + repr(spec) + caplog.text + repr(worker.status())
    for form in (password, "s3cr@t", "pa/ss", "%40word"):
        assert form not in text
    print(f"I6: last_error={st.last_error!r}")


def test_supervisor_start_change_stop_threads_flat(
    rtsp_server: Callable[..., object], h264_clip: Path
) -> None:
    server = rtsp_server({"/a": h264_clip, "/b": "test"})
    cams = {1: CameraSpec(id=1, name="a", url=server.url("/a"))}  # type: ignore[attr-defined]
    col = Collector()
    statuses: dict[int, str] = {}
    threads0 = threading.active_count()
    fds0 = len(os.listdir("/proc/self/fd"))
    for _round in range(2):
        sup = Supervisor(
            lambda: list(cams.values()),
            col.publish,
            FAST,
            on_status=lambda cid, s: statuses.__setitem__(cid, s.state),
            reconcile_s=0.3,
        )
        sup.start()
        wait_for(lambda: statuses.get(1) == "online", 15, "camera 1 online")
        cams[2] = CameraSpec(id=2, name="b", url=server.url("/b"))  # type: ignore[attr-defined]
        wait_for(lambda: statuses.get(2) == "online", 15, "camera 2 added and online")
        del cams[2]
        wait_for(lambda s=sup: 2 not in s.status(), 5, "camera 2 removed")  # type: ignore[misc]
        t0 = time.monotonic()
        assert sup.stop(timeout_s=8)
        print(f"supervisor stop: {time.monotonic() - t0:.2f} s")
        statuses.clear()
    time.sleep(0.2)
    assert threading.active_count() <= threads0
    assert len(os.listdir("/proc/self/fd")) <= fds0 + 2
