"""Wall-clock mapping, pyramid sampling and clip assembly on synthetic timestamps."""

from __future__ import annotations

import itertools
import math

import pytest

from flashwatch.messages import Clip, decode, encode
from ingest.sampling import (
    ClipAssembler,
    GopEstimator,
    LevelSampler,
    Pyramid,
    WallClock,
    choose_decode_mode,
    level_interval,
)

T0 = 1_700_000_000.0  # an arbitrary UNIX time


def run(pyramid: Pyramid, times: list[float]) -> list[Clip]:
    clips: list[Clip] = []
    for t in times:
        levels = pyramid.sample(t)
        if levels:
            clips += pyramid.add(
                t, levels, f"{t:.3f}".encode(), b"thumb" if pyramid.needs_thumb(levels) else None
            )
    return clips


# ---- WallClock -------------------------------------------------------------------------


def test_wall_is_anchor_plus_pts_offset() -> None:
    c = WallClock(fps=25, max_drift_s=None)
    assert c.map(10.0, arrival_wall=T0) == T0
    assert c.map(10.04, arrival_wall=T0 + 5) == pytest.approx(T0 + 0.04)
    assert c.map(12.0, arrival_wall=T0 + 9) == pytest.approx(T0 + 2.0)


def test_file_sources_anchor_at_the_given_start_time() -> None:
    c = WallClock(fps=25, max_drift_s=None)
    start = 1_600_000_000.0
    assert c.map(0.0, arrival_wall=T0, anchor_wall=start) == start
    assert c.map(3.5, arrival_wall=T0, anchor_wall=start) == pytest.approx(start + 3.5)


def test_missing_pts_is_previous_plus_one_frame() -> None:
    c = WallClock(fps=25, max_drift_s=None)
    assert c.map(None, arrival_wall=T0) == T0  # first frame without pts (gst-rtsp-server)
    assert c.map(None, arrival_wall=T0) == pytest.approx(T0 + 0.04)
    assert c.map(0.12, arrival_wall=T0) == pytest.approx(T0 + 0.12)
    assert c.map(float("nan"), arrival_wall=T0) == pytest.approx(T0 + 0.16)


def test_times_are_strictly_increasing_by_at_least_a_millisecond() -> None:
    c = WallClock(fps=25, max_drift_s=None)
    out = [c.map(p, arrival_wall=T0) for p in (1.0, 1.0, 1.0, 0.9999, 1.0)]
    assert all(b - a >= 0.001 - 1e-6 for a, b in itertools.pairwise(out))
    assert len({round(t * 1000) for t in out}) == len(out)  # distinct clip ids


def test_pts_going_backwards_reanchors_after_the_last_time() -> None:
    c = WallClock(fps=25, max_drift_s=None)
    c.map(100.0, arrival_wall=T0)
    last = c.map(101.0, arrival_wall=T0 + 1)
    after = c.map(0.0, arrival_wall=T0 + 1.04)  # the camera restarted its clock
    assert after > last
    assert c.map(0.5, arrival_wall=T0 + 1.5) == pytest.approx(after + 0.5)


def test_live_drift_beyond_limit_reanchors_to_arrival() -> None:
    c = WallClock(fps=25, max_drift_s=5.0)
    c.map(0.0, arrival_wall=T0)
    assert c.map(1.0, arrival_wall=T0 + 1.2) == pytest.approx(T0 + 1.0)  # small jitter kept
    assert c.map(2.0, arrival_wall=T0 + 60.0) == T0 + 60.0  # pts jumped / server paused
    assert c.reanchors == 1
    assert c.map(2.5, arrival_wall=T0 + 60.6) == pytest.approx(T0 + 60.5)


def test_new_epoch_reanchors_but_keeps_times_increasing() -> None:
    c = WallClock(fps=25, max_drift_s=None)
    c.map(50.0, arrival_wall=T0)
    c.new_epoch()
    assert c.map(0.0, arrival_wall=T0 + 10) == T0 + 10
    c.new_epoch()
    assert c.map(7.0, arrival_wall=T0 + 5) > T0 + 10  # wall clock stepped back: clamped


# ---- LevelSampler ----------------------------------------------------------------------


def test_level_intervals_follow_four_to_the_k() -> None:
    assert [level_interval(1.0, k) for k in range(4)] == [1, 4, 16, 64]
    assert level_interval(0.5, 2) == 8


def test_sampler_takes_first_frame_of_each_slot() -> None:
    s = LevelSampler(1.0)
    times = [T0 + i * 0.04 for i in range(100)]  # 25 fps for 4 s
    picked = [t for t in times if s.offer(t)]
    assert picked == [times[0], times[25], times[50], times[75]]


def test_sampler_at_low_fps_takes_every_frame() -> None:
    s = LevelSampler(1.0)
    times = [T0 + i * 2.0 for i in range(5)]
    assert [s.offer(t) for t in times] == [True] * 5


def test_sampler_slots_are_absolute_so_levels_nest() -> None:
    s0, s1 = LevelSampler(1.0), LevelSampler(4.0)
    times = [T0 + 0.3 + i * 0.1 for i in range(200)]
    a = {t for t in times if s0.offer(t)}
    b = {t for t in times if s1.offer(t)}
    assert b <= a


# ---- assembly --------------------------------------------------------------------------


def test_synthetic_stream_gives_exact_clips_at_every_level() -> None:
    """25 fps for 256 s starting on a 64-s boundary: exact sampled times per level."""
    start = math.floor(T0 / 64) * 64
    times = [start + i / 25 for i in range(256 * 25)]
    clips = run(Pyramid(camera_id=7, s0=1.0, n_levels=3), times)
    by_level = {k: [c for c in clips if c.level == k] for k in range(3)}
    for k, interval in enumerate((1, 4, 16)):
        n = 256 // interval // 4
        assert len(by_level[k]) == n
        for j, clip in enumerate(by_level[k]):
            expected = tuple(start + (4 * j + i) * interval for i in range(4))
            assert clip.t == pytest.approx(expected, abs=1e-6)
            assert clip.frames == [f"{t:.3f}".encode() for t in clip.t]
            assert clip.camera_id == 7
            assert clip.epoch == 0
            assert clip.thumb == (b"thumb" if k == 0 else None)
            assert clip.clip_id == (7, k, round(expected[0] * 1000))
    # Clip ids are unique and a Clip survives the wire format.
    assert len({c.clip_id for c in clips}) == len(clips)
    assert decode(encode(clips[0]), Clip) == clips[0]


def test_no_clip_spans_a_reconnect() -> None:
    p = Pyramid(camera_id=1, s0=1.0, n_levels=2)
    p.new_epoch(1)
    before = run(p, [T0 + i for i in range(6)])  # 6 samples: one clip, 2 pending
    p.new_epoch(2)
    after = run(p, [T0 + 10 + i for i in range(8)])
    assert [c.epoch for c in before] == [1]
    assert [c.epoch for c in after if c.level == 0] == [2, 2]
    assert all(c.t[0] >= T0 + 10 for c in after)
    assert p.assemblers[0].discarded == 2


def test_gap_inside_an_epoch_restarts_the_clip() -> None:
    a = ClipAssembler(camera_id=1, level=0, interval_s=1.0)
    assert a.add(1, T0, b"a") is None
    assert a.add(1, T0 + 1, b"b") is None
    assert a.add(1, T0 + 9, b"c") is None  # 8 s gap > 2.5 intervals
    assert a.discarded == 2
    assert a.add(1, T0 + 10, b"d") is None
    assert a.add(1, T0 + 11, b"e") is None
    clip = a.add(1, T0 + 12, b"f")
    assert clip is not None and clip.frames == [b"c", b"d", b"e", b"f"]


def test_thumb_comes_from_the_first_sample_only() -> None:
    a = ClipAssembler(camera_id=1, level=0, interval_s=1.0)
    a.add(0, T0, b"a", thumb=b"T1")
    a.add(0, T0 + 1, b"b", thumb=b"T2")
    a.add(0, T0 + 2, b"c")
    clip = a.add(0, T0 + 3, b"d")
    assert clip is not None and clip.thumb == b"T1"


def test_replay_gives_the_same_clip_ids() -> None:
    times = [T0 + 0.013 + i * 0.2 for i in range(400)]
    a = [c.clip_id for c in run(Pyramid(3, 1.0, 3), times)]
    b = [c.clip_id for c in run(Pyramid(3, 1.0, 3), times)]
    assert a == b and len(a) > 0


# ---- decode mode -----------------------------------------------------------------------


def test_gop_estimate_is_a_median_of_keyframe_intervals() -> None:
    g = GopEstimator()
    assert g.interval() is None
    for t in (0.0, 2.0, 4.0, 9.0, 11.0):
        g.observe_keyframe(t)
    assert g.interval() == 2.0
    g.reset()
    assert g.interval() is None


@pytest.mark.parametrize(
    ("sample", "gop", "mode"),
    [
        (1.0, 2.0, "all"),
        (1.0, 1.0, "keyframes"),
        (4.0, 2.0, "keyframes"),
        (1.0, None, "all"),
        (1.0, 1.005, "keyframes"),
        (1.0, 1.1, "all"),
    ],
)
def test_choose_decode_mode(sample: float, gop: float | None, mode: str) -> None:
    assert choose_decode_mode(sample, gop) == mode


def test_live_anchor_converges_on_the_least_delayed_frame() -> None:
    c = WallClock(fps=25, max_drift_s=5.0)
    # The first frame (pts 10.0) arrives 1 s late; the next ones arrive in a catch-up burst.
    assert c.map(10.0, arrival_wall=T0 + 1.0) == T0 + 1.0
    assert c.map(10.04, arrival_wall=T0 + 1.0) == pytest.approx(T0 + 1.0 + 0.001)  # clamped
    assert c.map(11.0, arrival_wall=T0 + 1.05) == pytest.approx(T0 + 1.05)  # pulled back
    # From here on the mapping follows pts (capture time), not arrival jitter.
    assert c.map(12.0, arrival_wall=T0 + 2.3) == pytest.approx(T0 + 2.05)
    assert c.reanchors == 0
