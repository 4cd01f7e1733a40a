"""ACCEPTANCE I3 (flapping), I4 (mass reconnect), I7 (camera faster than configured)
against gst-rtsp-server on loopback."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

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
from tests import services
from tests.media import make_h264
from tests.waiting import wait_for

pytestmark = [pytest.mark.integration, pytest.mark.slow]

BASE = WorkerSettings(
    level0_interval_s=0.25,
    pyramid_levels=2,
    frame_size=32,
    open_timeout_s=3.0,
    read_timeout_s=1.5,
    stall_timeout_s=3.0,
    backoff_initial_s=0.1,
    backoff_max_s=0.8,
    stable_uptime_s=30.0,
    network_policy=NetworkPolicy(allow_loopback=True),
)


def test_i3_flapping_grows_backoff_resets_after_stable_uptime_and_stays_flat(
    rtsp_server: Callable[..., services.RtspServer], tmp_path: Path
) -> None:
    """A camera whose stream lasts 1.5 s and ends, again and again: reconnects are counted,
    the backoff keeps growing (never stable) and reaches its cap; with stable_uptime below
    the stream length it resets instead. Threads and fds stay flat over the flaps."""
    short = make_h264(tmp_path / "short.mp4", seconds=1.5, fps=25, size=(160, 120), gop=25)
    server = rtsp_server({"/flap": short, "/flap2": short})  # no shared media between them
    spec = CameraSpec(id=31, name="flap", url=server.url("/flap"))
    spec2 = CameraSpec(id=32, name="flap2", url=server.url("/flap2"))
    fds0, threads0 = len(os.listdir("/proc/self/fd")), threading.active_count()

    flappy = CameraWorker(spec, BASE, lambda c: None)
    stable = CameraWorker(
        spec2, BASE.__class__(**{**BASE.__dict__, "stable_uptime_s": 0.2}), lambda c: None
    )
    attempts: list[int] = []
    flappy.start()
    stable.start()
    try:
        wait_for(lambda: flappy.status().counters.reconnects >= 5, 40, "five flaps")
        attempts = [flappy.backoff_attempt, stable.backoff_attempt]
        fds_mid = len(os.listdir("/proc/self/fd"))
    finally:
        flappy.stop()
        stable.stop()
        assert flappy.join(5) and stable.join(5)
    st = flappy.status()
    print(
        f"I3: reconnects={st.counters.reconnects} backoff attempts flappy/stable={attempts} "
        f"fds {fds0}->{fds_mid}->{len(os.listdir('/proc/self/fd'))}"
    )
    assert attempts[0] >= 5  # grew with every flap: cap min(0.8, 0.1 * 2**5) reached
    assert attempts[1] <= 1  # reset after each run (online ~0.4 s, preroll eats the rest)
    assert stable.status().counters.reconnects >= 3
    assert fds_mid <= fds0 + 8  # one open connection per worker at most
    time.sleep(0.2)
    assert threading.active_count() <= threads0
    assert len(os.listdir("/proc/self/fd")) <= fds0 + 2


def test_i4_mass_reconnect_is_staggered_and_all_return(
    rtsp_server: Callable[..., services.RtspServer],
) -> None:
    """Eight cameras on one server; the server dies and comes back on the same port. The
    shared token bucket (rate 4/s, burst 2) spreads the reconnects; all are back online
    within a bound."""
    n = 8
    # One mount (one live pipeline) per camera, as eight real cameras would be. Eight clients
    # of one shared gst-rtsp-server media interfere: every PLAY seeks (flushes) the shared
    # pipeline under the clients still probing or streaming, and when the media starts slowly
    # (a loaded box) and clients drop mid-setup, gst-rtsp-server 1.22 was seen to wedge (all
    # opens failing for 40 s) or abort (rtsp-media.c gst_rtsp_media_get_rates assertion).
    mounts = {f"/live{i}": "test:160x120@10" for i in range(n)}
    server = rtsp_server(mounts)
    port = server.port
    cams = [CameraSpec(id=100 + i, name=f"c{i}", url=server.url(f"/live{i}")) for i in range(n)]
    # The open timeout bounds the whole av.open, stream probing included. Against this server
    # an open left alone takes ~3.9 s (measured on a 2-core box under load: the handshake,
    # media start-up, then FFmpeg probing the live stream), so BASE's 3 s ends every open at
    # the interrupt, which succeeds only if the codec parameters have arrived by then: under
    # load they may not have. The product default (10 s) gives the open its natural length;
    # the stagger and the "all back within 20 s" bound below are unchanged.
    settings = BASE.__class__(
        **{
            **BASE.__dict__,
            "open_timeout_s": 10.0,
            "reconnect_rate_per_s": 4.0,
            "reconnect_burst": 2,
        }
    )
    events: list[tuple[float, int, str]] = []
    lock = threading.Lock()

    def on_status(cid: int, st: CameraStatus) -> None:
        with lock:
            events.append((time.monotonic(), cid, st.state))

    def online() -> set[int]:
        with lock:
            last: dict[int, str] = {}
            for _, cid, state in events:
                last[cid] = state
        return {cid for cid, s in last.items() if s == "online"}

    sup = Supervisor(lambda: cams, lambda c: None, settings, on_status=on_status, reconcile_s=1.0)
    sup.start()
    proc2 = None
    try:
        wait_for(lambda: len(online()) == n, 30, "all cameras online")
        services.stop(server.proc)
        wait_for(lambda: not online(), 10, "all cameras offline")
        t_down = time.monotonic()
        time.sleep(1.0)
        proc2 = services.start_rtsp_server(mounts, port=port)
        back = wait_for(lambda: len(online()) == n, 30, "all cameras back")
        print(f"I4: all {n} cameras back {back:.1f} s after the server restarted")
        with lock:
            connects = sorted(t for t, _, s in events if s == "connecting" and t > t_down + 1.0)
        assert back < 20
    finally:
        assert sup.stop(timeout_s=8)
        services.stop(proc2)
    # The first reconnect wave after the restart: no more than burst + rate*dt in any window.
    first = connects[:n]
    span = first[-1] - first[0]
    print(f"I4: first {len(first)} reconnect attempts spread over {span:.2f} s")
    assert span >= (n - 2) / 4.0 * 0.8


def test_i7_fast_camera_is_sampled_to_the_configured_rate_without_blocking(
    rtsp_server: Callable[..., services.RtspServer],
) -> None:
    """A 100 fps camera sampled every 0.25 s: 4 samples/s exactly, every frame decoded, and a
    full bus (no consumer, capacity 3) drops the oldest clips, counted, never blocking."""
    server = rtsp_server({"/fast": "test:160x120@100"})
    bus = InProcessBus(capacity=3)
    watcher = bus.consumer("fw.clips", "watch")
    spec = CameraSpec(id=41, name="fast", url=server.url("/fast"))
    worker = CameraWorker(spec, BASE, clip_publisher(bus, "fw.clips"))
    worker.start()
    try:
        wait_for(lambda: worker.status().state == "online", 15, "online")
        time.sleep(4.0)
        st = worker.status()
    finally:
        worker.stop()
        assert worker.join(5)
    kept = [decode(r.value, Clip) for r in watcher.poll(10, timeout_s=0.1)]
    duration = st.counters.frames / 100
    bus_dropped = bus.dropped("fw.clips", "watch")
    c = st.counters
    print(f"I7: frames={c.frames} sampled={c.sampled} clips={c.clips} bus dropped={bus_dropped}")
    assert st.counters.frames >= 250  # kept up with ~100 fps
    assert abs(st.counters.sampled - duration * 4) <= 3
    assert bus.dropped("fw.clips", "watch") >= 1  # overflow counted by the bus
    assert len(kept) == 3
    for c in kept:
        if c.level == 0:
            assert all(0.2 <= b - a <= 0.3 for a, b in zip(c.t, c.t[1:], strict=False))
