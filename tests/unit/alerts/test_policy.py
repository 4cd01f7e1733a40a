"""Alert policy with a fake clock: every time is an argument, nothing reads the real clock."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

import pytest

from alerts.policy import (
    RuleState,
    align_down,
    classify_http_status,
    clips_in_window,
    coverage_fraction,
    decide,
    dedup_key,
    due_window_ends,
    hysteresis_passes,
    in_cooldown,
    is_active,
    passing_span,
    push_history,
    retry_delay,
)

T0 = 1_700_000_000.0  # a multiple of 8 s: 2023-11-14T22:13:20Z


# ---------------------------------------------------------------- windows


def test_align_down_is_epoch_aligned_and_stable_under_float_noise() -> None:
    assert align_down(T0 + 7.999, 8) == T0
    assert align_down(T0 + 8, 8) == T0 + 8
    assert align_down(T0 + 8 - 1e-7, 8) == T0 + 8  # float noise does not lose a step
    assert align_down(T0 + 3, 2.5) % 2.5 == 0
    with pytest.raises(ValueError):
        align_down(T0, 0)


def test_first_evaluation_takes_only_the_newest_complete_window() -> None:
    assert due_window_ends(None, T0 + 13, 8, max_catchup=8) == ([T0 + 8], 0)


def test_due_windows_follow_each_step_and_wait_for_footage() -> None:
    assert due_window_ends(T0, T0 + 7.9, 8, max_catchup=8) == ([], 0)
    assert due_window_ends(T0, T0 + 8, 8, max_catchup=8) == ([T0 + 8], 0)
    assert due_window_ends(T0, T0 + 25, 8, max_catchup=8) == ([T0 + 8, T0 + 16, T0 + 24], 0)


def test_catchup_after_an_outage_is_bounded_and_counted() -> None:
    ends, dropped = due_window_ends(T0, T0 + 800, 8, max_catchup=3)
    assert ends == [T0 + 784, T0 + 792, T0 + 800]
    assert dropped == 97


def test_windows_are_the_same_for_every_scheduler_instance() -> None:
    a, _ = due_window_ends(T0 - 8, T0 + 17, 8, max_catchup=10)
    b, _ = due_window_ends(None, T0 + 17.5, 8, max_catchup=10)
    assert b[0] in a


def test_coverage_counts_each_second_once() -> None:
    full = [T0 + 4 * i for i in range(16)]  # 64 s of 4-s clips
    assert coverage_fraction(full, T0, T0 + 64, 1.0) == pytest.approx(1.0)
    half = full[:8]
    assert coverage_fraction(half, T0, T0 + 64, 1.0) == pytest.approx(0.5)
    doubled = half + [t + 0.5 for t in half]  # overlapping clips do not fake coverage
    assert coverage_fraction(doubled, T0, T0 + 64, 1.0) == pytest.approx(32.5 / 64)
    assert coverage_fraction([], T0, T0 + 64, 1.0) == 0.0


def test_clips_in_window_keeps_clips_mostly_inside() -> None:
    starts = [T0 - 4, T0 - 3, T0 - 2, T0, T0 + 60, T0 + 61, T0 + 62, T0 + 63]
    # a 4 s clip belongs to a window when at least 2 s of it lie inside
    assert clips_in_window(starts, T0, T0 + 64, 1.0) == [T0 - 2, T0, T0 + 60, T0 + 61, T0 + 62]


def test_window_off_the_clip_grid_is_fully_covered() -> None:
    """Clips phase-shifted by 2 s against the step grid still cover an 8 s window."""
    starts = [T0 - 2, T0 + 2, T0 + 6]
    inside = clips_in_window(starts, T0, T0 + 8, 1.0)
    assert inside == starts
    assert coverage_fraction(inside, T0, T0 + 8, 1.0) == 1.0


@pytest.mark.parametrize("phase", [0.0, 0.5, 1.0, 1.2, 2.0, 2.2, 3.0, 3.2, 3.9])
def test_continuous_clips_cover_a_window_at_any_phase(phase: float) -> None:
    """Coverage is measured on every clip overlapping the window: with continuous footage an
    8 s window is fully covered whatever the clips' phase against the step grid (measured on
    `clips_in_window` alone it fell to 77 % at a 2.2 s phase)."""
    starts = [T0 + phase + 4 * i for i in range(-3, 4)]
    overlapping = [t for t in starts if t + 4 > T0 and t < T0 + 8]
    assert coverage_fraction(overlapping, T0, T0 + 8, 1.0) == pytest.approx(1.0)
    assert coverage_fraction(starts, T0, T0 + 8, 1.0) == pytest.approx(1.0)


# ---------------------------------------------------------------- hysteresis, cooldown


def test_k_of_n() -> None:
    assert not hysteresis_passes([True], 2, 3)
    assert hysteresis_passes([True, False, True], 2, 3)
    assert not hysteresis_passes([True, False, False, True], 2, 3)  # the first fell out
    assert push_history([True, False, True], False, 3) == [False, True, False]


def _run(scores: list[float], **kw: float) -> list[bool]:
    st, fired = RuleState(), []
    params = {"threshold": 0.5, "k": 2, "n": 3, "cooldown_s": 0.0, **kw}
    for i, p in enumerate(scores):
        d = decide(
            st, window_end=T0 + 8 * i, p_yes=p, threshold=params["threshold"],
            k=int(params["k"]), n=int(params["n"]), cooldown_s=params["cooldown_s"],
        )  # fmt: skip
        st = d.state
        fired.append(d.fire)
    return fired


def test_one_spike_does_not_fire_two_of_three_do() -> None:
    assert _run([0.9, 0.1, 0.1, 0.1]) == [False] * 4
    assert _run([0.9, 0.1, 0.9]) == [False, False, True]
    assert _run([0.9, 0.9]) == [False, True]


def test_firing_restarts_the_count() -> None:
    # without cooldown a steady condition fires every k windows, not every window
    assert _run([0.9] * 6) == [False, True, False, True, False, True]


def test_cooldown_on_window_time() -> None:
    # fires at end 8, cools until 48; passes meanwhile count, so it fires again right at 48
    fired = _run([0.9] * 12, cooldown_s=40)
    assert [i for i, f in enumerate(fired) if f] == [1, 6, 11]
    assert in_cooldown(T0 + 10, T0 + 20)
    assert not in_cooldown(T0 + 20, T0 + 20)
    assert not in_cooldown(T0, None)


def test_decide_records_state() -> None:
    d = decide(RuleState(), window_end=T0, p_yes=0.7, threshold=0.5, k=1, n=1, cooldown_s=30)
    assert d.fire and d.passed
    assert d.state == RuleState(last_end=T0, history=(), last_fired_end=T0, cooldown_until=T0 + 30)
    again = decide(d.state, window_end=T0 + 8, p_yes=0.9, threshold=0.5, k=1, n=1, cooldown_s=30)
    assert not again.fire and again.suppressed_by_cooldown


def test_threshold_is_inclusive() -> None:
    assert _run([0.5], k=1, n=1) == [True]
    assert _run([0.4999], k=1, n=1) == [False]


def test_passing_span_is_the_shared_time() -> None:
    assert passing_span([T0 + 64, T0 + 80], 64) == (T0 + 16, T0 + 64)


# ---------------------------------------------------------------- active hours


def _at(tz: str, y: int, mo: int, d: int, h: int, mi: int = 0) -> float:
    return datetime(y, mo, d, h, mi, tzinfo=ZoneInfo(tz)).timestamp()


def test_no_hours_means_always() -> None:
    assert is_active(None, "UTC", T0)
    assert is_active([], "UTC", T0)


def test_hours_are_in_the_camera_time_zone() -> None:
    office = [{"days": [0, 1, 2, 3, 4], "start": "09:00", "end": "17:00"}]
    # Monday 2026-11-23, 09:30 in Tokyo is 00:30 UTC.
    assert is_active(office, "Asia/Tokyo", _at("Asia/Tokyo", 2026, 11, 23, 9, 30))
    assert not is_active(office, "UTC", _at("Asia/Tokyo", 2026, 11, 23, 9, 30))
    assert not is_active(office, "Asia/Tokyo", _at("Asia/Tokyo", 2026, 11, 23, 17, 0))  # end excl.
    assert not is_active(office, "Asia/Tokyo", _at("Asia/Tokyo", 2026, 11, 22, 10))  # Sunday


def test_ranges_wrap_midnight_and_belong_to_their_start_day() -> None:
    night = [{"days": [4], "start": "22:00", "end": "06:00"}]  # Friday night
    tz = "Europe/Paris"
    assert is_active(night, tz, _at(tz, 2026, 11, 27, 23))  # Friday 23:00
    assert is_active(night, tz, _at(tz, 2026, 11, 28, 3))  # Saturday 03:00
    assert not is_active(night, tz, _at(tz, 2026, 11, 28, 6))  # Saturday 06:00: end exclusive
    assert not is_active(night, tz, _at(tz, 2026, 11, 27, 3))  # Friday 03:00: Thursday's night
    assert not is_active(night, tz, _at(tz, 2026, 11, 28, 23))  # Saturday night


def test_dst_change_uses_local_wall_time() -> None:
    morning = [{"days": list(range(7)), "start": "02:30", "end": "03:30"}]
    tz = "America/New_York"
    # 2026-11-01: clocks go back at 02:00 EDT -> 01:00 EST; 02:45 EST exists once.
    assert is_active(morning, tz, _at(tz, 2026, 11, 1, 2, 45))
    assert not is_active(morning, tz, _at(tz, 2026, 11, 1, 1, 45))


def test_unknown_zone_falls_back_to_utc() -> None:
    hours = [{"days": list(range(7)), "start": "00:00", "end": "23:59"}]
    assert is_active(hours, "Not/AZone", T0)


# ---------------------------------------------------------------- dedup, retries


def test_dedup_key_is_stable_and_distinguishes_windows() -> None:
    k = dedup_key(3, 7, T0 - 64, T0)
    assert k == dedup_key(3, 7, T0 - 64 + 1e-7, T0 - 1e-7)
    assert k != dedup_key(3, 7, T0 - 56, T0 + 8)
    assert k != dedup_key(4, 7, T0 - 64, T0)
    assert k != dedup_key(3, 8, T0 - 64, T0)
    assert len(k) <= 200


def test_retry_delay_doubles_up_to_a_cap() -> None:
    delays = [retry_delay(a, base_s=1, cap_s=10) for a in range(1, 7)]
    assert delays == [1, 2, 4, 8, 10, 10]
    assert retry_delay(3, base_s=1, cap_s=10, jitter=0.5) == 2
    assert retry_delay(3, base_s=1, cap_s=10, jitter=5) > 0  # jitter is clamped


def test_http_status_classes() -> None:
    assert classify_http_status(204) == "ok"
    assert classify_http_status(503) == "retry"
    assert classify_http_status(429) == "retry"
    assert classify_http_status(302) == "fail"  # redirects are never followed
    assert classify_http_status(400) == "fail"
