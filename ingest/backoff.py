"""Reconnect policy: capped exponential backoff with full jitter, and a shared token bucket.

Both are pure policy objects driven by an explicit clock value (`now`), so they are tested
with a fake clock and no sleeping (STYLE §9). The worker asks `Backoff.next_delay()` after
each failed or ended connection and `ReconnectStagger.reserve(now)` before each attempt.

Why full jitter: when a switch reboots, hundreds of cameras drop at the same instant; a
delay drawn uniformly from [floor, cap] spreads their retries over the whole window instead
of synchronising them into waves (the AWS "exponential backoff and jitter" result). The
floor keeps a camera that fails instantly (connection refused) from spinning.

Why reset after stable uptime and not on connect: a camera that flaps (connects, streams
for two seconds, drops) must keep growing its delay (ACCEPTANCE I3); only a connection
that stayed up for `stable_s` proves the camera healthy again.
"""

from __future__ import annotations

import random
import threading
from dataclasses import dataclass, field


@dataclass
class Backoff:
    """Delay before the next connection attempt of one camera.

    `attempt` counts consecutive failures since the last stable connection; the cap for
    attempt n is `min(max_s, initial_s * 2**n)` and the delay is uniform in
    [`floor_ratio` * that cap, cap].
    """

    initial_s: float = 1.0
    max_s: float = 60.0
    stable_s: float = 60.0
    floor_ratio: float = 0.1
    rng: random.Random = field(default_factory=random.Random)
    attempt: int = 0
    _up_since: float | None = None

    def __post_init__(self) -> None:
        if not 0 < self.initial_s <= self.max_s:
            raise ValueError(f"need 0 < initial_s <= max_s, got {self.initial_s}, {self.max_s}")
        if not 0 <= self.floor_ratio <= 1:
            raise ValueError(f"floor_ratio must be in [0, 1], got {self.floor_ratio}")

    def cap(self) -> float:
        """Upper bound of the next delay (no jitter)."""
        # min() before the power would overflow for large attempt counts.
        exponent = min(self.attempt, 62)
        return min(self.max_s, self.initial_s * (2.0**exponent))

    def next_delay(self) -> float:
        """Delay before the next attempt; counts one more consecutive failure."""
        cap = self.cap()
        self.attempt += 1
        return self.rng.uniform(self.floor_ratio * cap, cap)

    def connected(self, now: float) -> None:
        """The stream delivered its first frame at `now`."""
        self._up_since = now

    def disconnected(self, now: float) -> None:
        """The stream ended at `now`; forget past failures if it had been up long enough."""
        if self._up_since is not None and now - self._up_since >= self.stable_s:
            self.attempt = 0
        self._up_since = None

    def reset(self) -> None:
        self.attempt = 0
        self._up_since = None


class ReconnectStagger:
    """Token bucket shared by all workers of a supervisor: at most `rate` opens per second
    after an initial `burst`.

    `reserve` never refuses; it books the next free slot and returns how long to wait for
    it, so N cameras that drop together reconnect one slot apart (ACCEPTANCE I4) and each
    knows its start time up front. Thread-safe.
    """

    def __init__(self, rate_per_s: float = 5.0, burst: int = 5) -> None:
        if rate_per_s <= 0 or burst < 1:
            raise ValueError(f"need rate_per_s > 0 and burst >= 1, got {rate_per_s}, {burst}")
        self.rate_per_s = rate_per_s
        self.burst = burst
        self._tokens = float(burst)
        self._last: float | None = None
        self._lock = threading.Lock()

    def reserve(self, now: float) -> float:
        """Take one token (possibly from the future); seconds to wait before using it."""
        with self._lock:
            if self._last is None:
                self._last = now
            elapsed = max(0.0, now - self._last)
            self._tokens = min(float(self.burst), self._tokens + elapsed * self.rate_per_s)
            self._last = max(self._last, now)
            self._tokens -= 1.0
            if self._tokens >= 0:
                return 0.0
            return -self._tokens / self.rate_per_s
