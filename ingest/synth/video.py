"""Synthetic scenes to H.264 files (PyAV's bundled libx264) with ``<file>.truth.json`` beside.

Why these encoder settings: no B-frames and a fixed GOP (keyframe every ``gop`` frames, no
scene-cut keyframes) match what the ingest worker and the RTSP test server expect from real
cameras, and a single encoder thread keeps the bitstream byte-identical run to run.

Live RTSP for tests: ``tests/rtsp_test_server.py`` serves an MP4 file (no re-encoding), so a
synthetic live camera is :func:`write_camera_file` followed by
``rtsp_server({"/cam": path})``; stream time 0 is scene time 0.
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from ingest.synth.scene import Scene
from ingest.synth.truth import GroundTruth


def truth_path(video: str | Path) -> Path:
    """Where the ground truth of a video lives: ``clip.mp4`` → ``clip.mp4.truth.json``."""
    p = Path(video)
    return p.with_name(p.name + ".truth.json")


def write_video(
    scene: Scene,
    path: str | Path,
    t0: float = 0.0,
    t1: float | None = None,
    fps: float | None = None,
    preset: str = "veryfast",
    gop: int | None = None,
    crf: int = 23,
) -> Path:
    """Encode frames ``t0 + i/fps`` for t in ``[t0, t1)`` and save the scene's truth beside.

    Defaults: the whole footage at the scene's fps, GOP = 2 s of frames. Frame i has
    pts = i (time base 1/fps), so the file's time 0 is scene time ``t0``; the truth JSON keeps
    scene times (subtract ``t0`` when t0 ≠ 0). Returns ``Path(path)``.
    """
    rate = Fraction(scene.fps if fps is None else fps).limit_denominator(1001)
    times = scene.times(t0, t1, float(rate))
    if not times:
        raise ValueError("no frames in the requested interval")
    keyint = gop if gop is not None else max(1, round(2 * float(rate)))
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(out), "w") as container:
        stream = container.add_stream("libx264", rate=rate)
        stream.width, stream.height, stream.pix_fmt = scene.width, scene.height, "yuv420p"
        stream.options = {
            "preset": preset,
            "crf": str(crf),
            "g": str(keyint),
            "keyint_min": str(keyint),
            "sc_threshold": "0",
            "bf": "0",
            "threads": "1",
        }
        for i, t in enumerate(times):
            frame = av.VideoFrame.from_ndarray(scene.render(t), format="rgb24")
            frame.pts = i
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    scene.truth.save(truth_path(out))
    return out


def write_camera_file(path: str | Path, scene: Scene, seconds: float) -> Path:
    """The first ``seconds`` of a scene as an MP4 for the RTSP test server (1 s GOP, like a
    typical camera, so a client joining mid-stream waits at most a second for a keyframe)."""
    return write_video(scene, path, 0.0, seconds, gop=max(1, round(scene.fps)))


def read_truth(video: str | Path) -> GroundTruth:
    """Load the ground truth written beside a video (or a ``.truth.json`` path itself)."""
    p = Path(video)
    return GroundTruth.load(p if p.name.endswith(".truth.json") else truth_path(p))


def decode_frames(path: str | Path, every: int = 1) -> list[tuple[float, np.ndarray]]:
    """Decode (seconds, RGB frame) pairs from a file, keeping every ``every``-th frame; a
    test/debug helper (the pipeline reads through ingest)."""
    out: list[tuple[float, np.ndarray]] = []
    with av.open(str(path)) as container:
        for i, frame in enumerate(container.decode(video=0)):
            if i % every == 0:
                t = float(frame.time) if frame.time is not None else float("nan")
                out.append((t, frame.to_ndarray(format="rgb24")))
    return out
