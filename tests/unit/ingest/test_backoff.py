"""Reconnect policy with a fake clock: growth, cap, jitter bounds, reset, staggering."""

from __future__ import annotations

import random

import pytest

from ingest.backoff import Backoff, ReconnectStagger


def make(seed: int = 0, **kw: float) -> Backoff:
    args = {"initial_s": 1.0, "max_s": 30.0, "stable_s": 60.0, **kw}
    return Backoff(rng=random.Random(seed), **args)


def test_caps_double_until_the_maximum() -> None:
    b = make()
    caps = []
    for _ in range(8):
        caps.append(b.cap())
        b.next_delay()
    assert caps == [1, 2, 4, 8, 16, 30, 30, 30]


def test_delays_are_full_jitter_within_floor_and_cap() -> None:
    for seed in range(50):
        b = make(seed)
        for _ in range(10):
            cap = b.cap()
            d = b.next_delay()
            assert 0.1 * cap <= d <= cap


def test_jitter_spreads_simultaneous_failures() -> None:
    delays = []
    for seed in range(100):
        b = make(seed)
        for _ in range(5):
            d = b.next_delay()
        delays.append(d)
    # 100 cameras at attempt 5 (cap 16 s): spread over most of the window, not one instant.
    assert max(delays) - min(delays) > 10
    assert len({round(d, 3) for d in delays}) > 90


def test_flapping_keeps_growing_and_stable_uptime_resets() -> None:
    b = make()
    now = 0.0
    for _ in range(4):  # connects, streams 2 s, drops: not stable
        b.connected(now)
        now += 2
        b.disconnected(now)
        now += b.next_delay()
    assert b.attempt == 4
    b.connected(now)
    b.disconnected(now + 60.0)  # up for stable_s
    assert b.attempt == 0
    assert b.cap() == 1.0


def test_disconnect_without_connect_does_not_reset() -> None:
    b = make()
    b.next_delay()
    b.next_delay()
    b.disconnected(1e9)
    assert b.attempt == 2


def test_huge_attempt_counts_do_not_overflow() -> None:
    b = make()
    b.attempt = 10_000
    assert b.cap() == 30.0
    assert b.next_delay() <= 30.0


def test_invalid_arguments() -> None:
    with pytest.raises(ValueError, match="initial_s"):
        Backoff(initial_s=5, max_s=1)
    with pytest.raises(ValueError):
        ReconnectStagger(rate_per_s=0)


def test_stagger_allows_a_burst_then_spaces_reconnects() -> None:
    s = ReconnectStagger(rate_per_s=10.0, burst=3)
    waits = [s.reserve(100.0) for _ in range(8)]
    assert waits[:3] == [0.0, 0.0, 0.0]
    assert waits[3:] == pytest.approx([0.1, 0.2, 0.3, 0.4, 0.5])


def test_stagger_refills_with_time() -> None:
    s = ReconnectStagger(rate_per_s=2.0, burst=2)
    assert [s.reserve(0.0) for _ in range(2)] == [0.0, 0.0]
    assert s.reserve(0.0) == pytest.approx(0.5)
    # 10 s later the bucket is full again (capped at burst).
    assert [s.reserve(10.0) for _ in range(2)] == [0.0, 0.0]
    assert s.reserve(10.0) == pytest.approx(0.5)


def test_stagger_bounds_total_time_for_mass_reconnect() -> None:
    s = ReconnectStagger(rate_per_s=20.0, burst=5)
    waits = [s.reserve(0.0) for _ in range(100)]
    assert max(waits) == pytest.approx(95 / 20.0)
    assert waits == sorted(waits)
