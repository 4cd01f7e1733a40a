"""A synthetic camera served live over RTSP (tests/rtsp_test_server.py, file mode): the
scripted red car shows up in its bay in the streamed frames; a control camera never has one.
This is the media side of acceptance A3."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

import av
import numpy as np
import pytest

from ingest.synth import REGIONS, Scene, SceneSpec, colour_mask, write_camera_file
from tests import services

pytestmark = pytest.mark.integration

SECONDS, FPS = 7.0, 10.0


def read_rtsp(url: str, out: dict[str, list[np.ndarray]], key: str) -> None:
    frames: list[np.ndarray] = []
    opts = {"rtsp_transport": "tcp", "timeout": "3000000"}
    with av.open(url, options=opts) as c:
        for frame in c.decode(video=0):
            frames.append(frame.to_ndarray(format="rgb24"))
    out[key] = frames


def test_red_car_parks_on_the_live_camera_and_not_on_the_control(
    rtsp_server: Callable[..., services.RtspServer], tmp_path: Path
) -> None:
    cam = Scene.from_spec(
        SceneSpec(seed=8, duration=SECONDS, events=("red_car_parks@0",), fps=FPS, cars_per_min=6)
    )
    control = Scene.from_spec(SceneSpec(seed=9, duration=SECONDS, fps=FPS, cars_per_min=6))
    server = rtsp_server(
        {
            "/cam": write_camera_file(tmp_path / "cam.mp4", cam, SECONDS),
            "/control": write_camera_file(tmp_path / "control.mp4", control, SECONDS),
        }
    )
    got: dict[str, list[np.ndarray]] = {}
    threads = [
        threading.Thread(target=read_rtsp, args=(server.url(f"/{k}"), got, k))
        for k in ("cam", "control")
    ]
    for th in threads:
        th.start()
    for th in threads:
        th.join(30)
    assert set(got) == {"cam", "control"}
    n = round(SECONDS * FPS)
    assert n - 2 <= len(got["cam"]) <= n and n - 2 <= len(got["control"]) <= n

    park = cam.truth.first("park", colour="red")
    assert park is not None and park.t_start < SECONDS - 1
    x0, y0, x1, y1 = REGIONS[park.region]
    bay = slice(round(y0 * 240), round(y1 * 240)), slice(round(x0 * 320), round(x1 * 320))
    lot = slice(round(REGIONS["parking"][1] * 240), round(REGIONS["parking"][3] * 240))
    for i, frame in enumerate(got["cam"]):
        t = i / FPS  # the file streams from scene time 0, every frame, over TCP
        red = int(colour_mask(frame, "red")[bay].sum())
        if t >= park.t_start + 0.3:
            assert red > 100, t
        elif t < 0.5:
            assert red == 0, t
    for frame in got["control"]:
        assert colour_mask(frame, "red")[lot].sum() == 0
    assert not control.truth.happened("park", 0.0, SECONDS)
