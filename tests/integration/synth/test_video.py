"""Synthetic scenes through real libx264 (PyAV): duration, fps, GOP, determinism, decodability."""

from __future__ import annotations

import hashlib
import time
from pathlib import Path

import av
import numpy as np
import pytest

from ingest.synth import (
    REGIONS,
    Scene,
    SceneSpec,
    colour_mask,
    decode_frames,
    read_truth,
    truth_path,
    write_video,
)

pytestmark = pytest.mark.integration

SPEC = SceneSpec(seed=21, duration=12.0, events=("red_car_parks@0+6",), people_per_min=6)


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_video_has_the_right_length_rate_and_gop_and_is_byte_identical(tmp_path: Path) -> None:
    scene = Scene.from_spec(SPEC)
    a = write_video(scene, tmp_path / "a.mp4")
    with av.open(str(a)) as c:
        st = c.streams.video[0]
        assert (st.codec_context.name, st.width, st.height) == ("h264", 320, 240)
        assert st.average_rate == 25 and st.frames == 300
        assert c.duration is not None and c.duration / 1e6 == pytest.approx(12.0, abs=0.05)
        keys = [i for i, f in enumerate(c.decode(video=0)) if f.key_frame]
    assert keys == list(range(0, 300, 50))
    assert read_truth(a) == scene.truth and truth_path(a).name == "a.mp4.truth.json"
    b = write_video(Scene.from_spec(SPEC), tmp_path / "b.mp4")
    assert sha(a) == sha(b)


def test_decoded_frames_match_rendered_and_keep_the_truth_visible(tmp_path: Path) -> None:
    scene = Scene.from_spec(SPEC)
    path = write_video(scene, tmp_path / "v.mp4")
    frames = decode_frames(path, every=5)
    assert len(frames) == 60
    park = scene.truth.first("park")
    assert park is not None
    bay, car = REGIONS[park.region], scene.truth.tracks[park.actor_id]
    rows, cols = (
        slice(round(bay[1] * 240), round(bay[3] * 240)),
        slice(round(bay[0] * 320), round(bay[2] * 320)),
    )
    for t, frame in frames:
        rendered = scene.render(t)
        assert np.abs(frame.astype(int) - rendered.astype(int)).mean() < 4.0, t
        red = int(colour_mask(frame, "red")[rows, cols].sum())
        if park.t_start + 0.3 <= t < park.t_end - 0.3:
            assert red > 100, t
        elif car.position(t)[1] >= 0.6 or not car.visible(t):  # on the road or gone
            assert red == 0, t


def test_sparse_subset_and_hours_cheaply(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    scene = Scene.from_spec(
        SceneSpec(seed=5, duration=4 * 3600.0, events=("red_car_parks@7200+20",), fps=25.0)
    )
    start = time.perf_counter()
    path = write_video(scene, tmp_path / "sparse.mp4", t0=0.0, t1=4 * 3600.0, fps=1 / 60)
    elapsed = time.perf_counter() - start
    with capsys.disabled():
        print(f"\nsynth: 4 h sampled once a minute -> 240 frames in {elapsed:.2f} s")
    with av.open(str(path)) as c:
        assert c.streams.video[0].frames == 240
    assert elapsed < 20
    assert scene.truth.happened("park", 7200.0, 7300.0, "car", "red")
