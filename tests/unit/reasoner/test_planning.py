"""Query planning over the pyramid: hand-checked levels, retention, zoom, sparse, helpers."""

from __future__ import annotations

import pytest

from memory.store import LevelCoverage
from reasoner.answers import (
    explain_question,
    mentioned_times,
    merge_adjacent,
    rule_question,
    top_clips,
)
from reasoner.planning import (
    NoFootage,
    PlanLimits,
    even_indices,
    first_relevant,
    fixed_windows,
    frames_in,
    onset_windows,
    plan_window,
    split_budget,
    top_windows,
)

NOW = 1_700_000_000.0
H = 3600.0
DAY = 24 * H


def cov(*levels: tuple[float, float]) -> dict[int, LevelCoverage]:
    """Coverage of levels 0..k as (hours back, hours back of the latest clip) with s0 = 1."""
    out = {}
    for k, (back_h, _) in enumerate(levels):
        stride = 4 * 4.0**k
        earliest, latest = NOW - back_h * H, NOW - stride
        out[k] = LevelCoverage(earliest, latest, int((latest - earliest) / stride) + 1)
    return out


FULL = cov((6, 0), (24, 0), (168, 0))  # retention 6 h / 24 h / 7 days (DESIGN §4 example)


@pytest.mark.parametrize(
    ("range_s", "level", "frames"),
    [
        (30, 0, 28),  # short: level 0 holds only 7 clips; fewer than 64 frames is all there is
        (64, 0, 64),
        (500, 0, 500),
        (512, 0, 512),
        (600, 1, 148),  # 10 min: 600 level-0 frames > 512 -> level 1: 37 clips of 4 s frames
        (2 * H, 2, 448),  # 2 h: 7200 / 16 s = 450 frames -> 112 whole clips
        (8 * H, 2, 512),  # level 0 is gone after 6 h anyway; level 2: 1800 > 512 -> thinned
    ],
)
def test_finest_level_that_fits(range_s: float, level: int, frames: int) -> None:
    p = plan_window(1, FULL, NOW - range_s, NOW, strategy="pyramid")
    assert (p.strategy, p.level, p.est_frames) == ("pyramid", level, frames)
    assert p.est_frames % 4 == 0
    assert p.max_clips == 128
    assert p.duration_s == pytest.approx(range_s)


def test_floor_of_64_frames_where_the_range_allows() -> None:
    # every level that fits holds > budget/4 frames, so any range >= 64 s gets >= 64 frames
    for minutes in (1.1, 3, 9, 20, 40, 120, 360):
        p = plan_window(1, FULL, NOW - minutes * 60, NOW, strategy="pyramid")
        assert p.est_frames >= 64, minutes


def test_retention_skips_levels_that_no_longer_cover_the_range() -> None:
    # 7 days back: level 0 (6 h) and 1 (24 h) cover a sliver; level 2 covers it all
    p = plan_window(1, FULL, NOW - 7 * DAY, NOW, strategy="pyramid")
    assert p.level == 2 and p.est_frames == 512  # 37,800 frames thinned to the budget
    assert p.t_from == pytest.approx(NOW - 7 * DAY)
    # an old 10-minute range only level 2 still holds: 600 / 16 = 37 frames -> 36
    old = plan_window(1, FULL, NOW - 3 * DAY, NOW - 3 * DAY + 600, strategy="pyramid")
    assert (old.level, old.est_frames) == (2, 36)


def test_auto_zooms_when_the_pyramid_would_be_coarse_or_thinned() -> None:
    assert plan_window(1, FULL, NOW - 2 * H, NOW).strategy == "pyramid"  # 16 s stride: ok
    p = plan_window(1, FULL, NOW - 5 * H, NOW)  # level 2 thinned (1125 frames)
    assert p.strategy == "zoom" and p.zoom is not None
    # finest level within the scan cap: level 0 has 4500 clips / 16 = 282 windows > 256,
    # level 1 has 1125 clips -> 71 windows of 16 clips (64 frames), keep 512/64 = 8
    assert (p.zoom.level, p.zoom.window_clips, p.zoom.windows, p.zoom.top_k) == (1, 16, 71, 8)
    assert (p.level, p.est_frames, p.max_clips) == (1, 512, 128)
    assert p.duration_s == pytest.approx(128 * 4 * 4.0)
    assert p.cost == {"answer_frames": 512, "scan_windows": 71, "scan_frames": 71 * 64}


def test_zoom_widens_windows_to_cap_the_scan() -> None:
    p = plan_window(1, FULL, NOW - 7 * DAY, NOW)  # only level 2 covers 7 days
    assert p.zoom is not None and p.zoom.level == 2
    assert p.zoom.windows <= 256
    assert p.zoom.window_clips == 37  # ceil(9450 clips / 256)
    assert p.zoom.top_k == 3  # 128 clips of budget // 37


def test_zoom_requested_on_a_short_range_falls_back_to_pyramid() -> None:
    p = plan_window(1, FULL, NOW - 300, NOW, strategy="zoom")
    assert p.strategy == "pyramid" and p.level == 0  # no finer level than 0 to zoom into


def test_sparse_reads_level_zero_up_to_the_budget() -> None:
    p = plan_window(1, FULL, NOW - H, NOW, strategy="sparse")
    assert (p.strategy, p.level, p.est_frames, p.max_clips) == ("sparse", 0, 512, 128)
    assert p.duration_s == pytest.approx(H)


def test_no_footage() -> None:
    with pytest.raises(NoFootage) as err:
        plan_window(4, FULL, NOW - 30 * DAY, NOW - 10 * DAY)
    assert err.value.camera_id == 4
    with pytest.raises(NoFootage):
        plan_window(4, {}, NOW - 60, NOW)


def test_budget_split_between_cameras() -> None:
    two = split_budget(PlanLimits(), 2)
    assert (two.frame_budget, two.max_clips) == (256, 64)
    assert split_budget(PlanLimits(), 3).frame_budget == 168  # whole clips
    assert split_budget(PlanLimits(), 1) == PlanLimits()


def test_helpers() -> None:
    assert frames_in(600, 4.0) == 148 and frames_in(3, 1.0) == 4
    assert even_indices(10, 4) == [0, 3, 6, 9]
    assert even_indices(3, 5) == [0, 1, 2] and even_indices(5, 1) == [2]
    assert fixed_windows(10, 4) == [(0, 4), (4, 8), (6, 10)]  # last aligned to the end
    assert fixed_windows(3, 4) == [(0, 3)]
    assert top_windows([0.1, 0.9, 0.5, 0.9], 2) == [1, 3]
    assert merge_adjacent([(0, 4), (4, 8), (12, 16), (14, 18)]) == [(0, 8), (12, 18)]
    assert top_clips([0.0, 0.5, 0.2, 0.5], 3) == [1, 3, 2]


def test_onset_windows_start_where_a_long_event_begins() -> None:
    runs = [0, 0, 0, 0, 0]
    # a car parked over windows 1-3, the top score on window 2: answer from window 1
    assert onset_windows([0.0, 0.51, 0.61, 0.54, 0.1], [2], runs) == [1]
    assert onset_windows([0.6, 0.7, 0.75, 0.6, 0.0], [2], runs) == [0]  # the whole run back
    # the top score on the last window of a run of three (the car parked at 43-110 s, 32 s
    # windows; the demo's scores): the event ends there and began two windows back
    assert onset_windows([0.01, 0.83, 0.81, 0.88, 0.01], [3], runs) == [1]
    assert onset_windows([0.01, 0.83, 0.6, 0.88, 0.01], [3], runs) == [3]  # one clearly lower
    # a short event (nothing relevant after the top window, one window before) stays: the
    # window before it shows the car driving in, not the parking
    assert onset_windows([0.0, 0.51, 0.61, 0.1, 0.0], [2], runs) == [2]
    assert onset_windows([0.0, 0.0, 0.51, 0.61, 0.1], [3], runs) == [3]
    # a clearly better window stays; so does one whose neighbour is not relevant at all
    assert onset_windows([0.0, 0.55, 0.9, 0.6, 0.0], [2], runs) == [2]
    assert onset_windows([0.0, 0.45, 0.5, 0.6, 0.0], [2], runs) == [2]
    # never across a run boundary (another kept window's segment), never onto a kept window
    assert onset_windows([0.8, 0.8, 0.8, 0.8, 0.0], [2], [0, 1, 1, 1, 2]) == [1]
    assert onset_windows([0.8, 0.8, 0.8, 0.8, 0.0], [2], [0, 1, 1, 2, 2]) == [2]
    assert onset_windows([0.8, 0.8, 0.8, 0.8, 0.0], [1, 2], runs) == [0, 2]


def test_times_in_answers() -> None:
    got = mentioned_times("At 12 s a car, at 1:05 a man, 0:02:00 gone, 3 minutes later, 999 s", 200)
    assert [(m.text, m.offset_s) for m in got] == [
        ("12 s", 12.0),
        ("1:05", 65.0),
        ("0:02:00", 120.0),
        ("3 minutes", 180.0),
    ]  # 999 s is beyond the 200 s video


def test_rule_questions() -> None:
    assert rule_question("a person  climbing the fence.") == (
        "Does the video show a person climbing the fence? Answer yes or no."
    )
    assert rule_question("Is there smoke?") == "Is there smoke? Answer yes or no."
    assert explain_question(" a red car  is parked.") == (
        "Does the video show a red car is parked? Explain briefly."
    )
    assert explain_question("Is there smoke?") == "Is there smoke?"


def test_limits_capped_to_a_models_prompt_length() -> None:
    """A checkpoint trained on 32-frame prompts (`fw_max_frames`): the answer budget and the
    zoom windows shrink to 32 frames, so a long range is scanned in windows of 8 clips and
    answered from the single best one."""
    short = PlanLimits().capped(32)
    assert (short.frame_budget, short.min_frames, short.zoom_window_frames) == (32, 32, 32)
    assert PlanLimits().capped(34).frame_budget == 32  # whole clips
    assert PlanLimits().capped(2).frame_budget == 4  # never below one clip
    assert PlanLimits().capped(4096) == PlanLimits()  # a longer model changes nothing
    p = plan_window(1, FULL, NOW - H, NOW, short)
    assert p.strategy == "zoom" and p.zoom is not None
    assert (p.zoom.level, p.zoom.window_clips, p.zoom.windows, p.zoom.top_k) == (0, 8, 113, 1)
    assert p.max_clips == 8
    # trained on frames 1-2 s apart: a 143 s range is scanned on level 0 rather than read as
    # 32 level-1 frames 4 s apart (the demo's question)
    demo = {0: LevelCoverage(NOW - 143, NOW - 4, 36), 1: LevelCoverage(NOW - 143, NOW - 16, 8)}
    assert plan_window(1, demo, NOW - 143, NOW, short).strategy == "pyramid"
    fine = PlanLimits().capped(32, 2.0)
    assert fine.max_pyramid_stride_s == 2.0 and PlanLimits().capped(32, 64.0) == short
    p = plan_window(1, demo, NOW - 143, NOW, fine)
    assert p.strategy == "zoom" and p.zoom is not None and p.zoom.level == 0


def test_first_relevant_clip_starts_the_answer_window() -> None:
    assert first_relevant([0.1, 0.2, 0.7, 0.9, 0.3]) == 2  # clips before the event left out
    assert first_relevant([0.6, 0.1, 0.9]) == 0  # relevant from the start: nothing cut
    assert first_relevant([0.1, 0.4, 0.45]) == 0  # no clip relevant alone: keep it whole
    assert first_relevant([0.1, 0.5]) == 1  # the floor itself counts
    assert first_relevant([0.2, 0.3, 0.35], floor=0.3) == 1
