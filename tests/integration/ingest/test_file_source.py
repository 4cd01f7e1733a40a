"""The worker on real H.264 files (file:// sources): exact timestamps, decode modes, I5.

No server needed, but real PyAV decoding, so these sit with the integration tests.
"""

from __future__ import annotations

import io
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from flashwatch.bus import InProcessBus
from flashwatch.messages import Clip, decode
from ingest import CameraSpec, CameraWorker, WorkerSettings, clip_publisher
from tests.media import make_h264

pytestmark = pytest.mark.integration

START = 1_600_000_000.0  # a multiple of 64 s, so every level's grid starts at frame 0


def run_file(
    path: Path, settings: WorkerSettings, timeout: float = 30.0, **spec_kw: object
) -> tuple[CameraWorker, list[Clip]]:
    bus = InProcessBus(capacity=10_000)
    consumer = bus.consumer("fw.clips", "test")
    spec = CameraSpec(id=5, name="file", url=f"file://{path}", file_start_time=START, **spec_kw)  # type: ignore[arg-type]
    worker = CameraWorker(spec, settings, clip_publisher(bus, "fw.clips"))
    worker.start()
    assert worker.join(timeout), "file worker did not finish"
    clips = [decode(r.value, Clip) for r in consumer.poll(max_records=10_000, timeout_s=0.1)]
    return worker, clips


def test_file_clips_have_exact_times_at_every_level(h264_clip: Path) -> None:
    settings = WorkerSettings(allow_file_sources=True, frame_size=64, pyramid_levels=3)
    worker, clips = run_file(h264_clip, settings)
    status = worker.status()
    assert status.state == "offline" and status.last_error == "end of file"
    assert status.decode_mode == "all"  # s0 = 1 s < GOP 2 s
    by_level = {k: [c for c in clips if c.level == k] for k in range(3)}
    # 30 s at 1 s: 30 samples -> 7 clips; at 4 s: 8 samples -> 2 clips; at 16 s: 2 -> none.
    assert [len(by_level[k]) for k in range(3)] == [7, 2, 0]
    for k, interval in ((0, 1), (1, 4)):
        for j, clip in enumerate(by_level[k]):
            expected = [START + (4 * j + i) * interval for i in range(4)]
            assert list(clip.t) == pytest.approx(expected, abs=1e-6)
            assert clip.epoch == 1
    assert status.counters.frames == 750
    assert status.counters.decode_errors == 0
    assert status.clips_per_level == (7, 2, 0)
    for clip in by_level[0]:
        assert clip.thumb is not None
        with Image.open(io.BytesIO(clip.thumb)) as th:
            assert th.size == (320, 240)  # original aspect, thumb_width 320
    for frame in clips[0].frames:
        with Image.open(io.BytesIO(frame)) as im:
            assert im.mode == "RGB" and im.size == (64, 64)
    assert all(c.thumb is None for c in by_level[1])


def test_keyframe_mode_when_sampling_is_sparser_than_the_gop(h264_clip: Path) -> None:
    settings = WorkerSettings(allow_file_sources=True, frame_size=64, pyramid_levels=2)
    worker, clips = run_file(h264_clip, settings, interval_s=2.0)
    status = worker.status()
    assert status.decode_mode == "keyframes"
    assert status.keyframe_interval_s == pytest.approx(2.0)
    # Full decode until two GOP intervals are seen (~4-6 s), keyframes only afterwards.
    assert status.counters.frames < 750 / 2
    level0 = [c for c in clips if c.level == 0]
    assert [c.t for c in level0] == [
        pytest.approx([START + 2 * (4 * j + i) for i in range(4)]) for j in range(len(level0))
    ]
    assert len(level0) == 3  # 15 samples


def test_file_sources_refused_unless_allowed(h264_clip: Path) -> None:
    worker, clips = run_file(h264_clip, WorkerSettings(allow_file_sources=False), timeout=5)
    assert worker.status().state == "error"
    assert "allow_file_sources" in (worker.status().last_error or "")
    assert clips == []


def corrupt(
    src: Path, dst: Path, every: int = 20_000, span: int = 64, truncate: float = 0.8
) -> Path:
    data = bytearray(src.read_bytes())
    rng = np.random.default_rng(1)
    for off in range(4_000, len(data), every):
        data[off : off + span] = rng.integers(
            0, 256, size=len(data[off : off + span]), dtype=np.uint8
        ).tobytes()
    dst.write_bytes(bytes(data[: int(len(data) * truncate)]))
    return dst


def test_i5_corrupt_and_truncated_h264_is_survived(tmp_path: Path) -> None:
    """ACCEPTANCE I5: decode errors are counted, the worker survives and keeps producing."""
    clean = make_h264(
        tmp_path / "noise.ts", seconds=12, fps=25, size=(320, 240), gop=50, pattern="noise"
    )
    bad = corrupt(clean, tmp_path / "bad.ts")
    settings = WorkerSettings(allow_file_sources=True, frame_size=64, pyramid_levels=1)
    t0 = time.monotonic()
    worker, clips = run_file(bad, settings)
    status = worker.status()
    print(
        f"I5: decode_errors={status.counters.decode_errors} frames={status.counters.frames} "
        f"clips={len(clips)} state={status.state} in {time.monotonic() - t0:.1f}s"
    )
    assert status.counters.decode_errors > 0
    assert status.state == "offline"  # reached the (truncated) end, no crash
    assert len(clips) >= 1
