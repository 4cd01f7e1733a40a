"""Alert policy as small pure functions (STYLE.md §9): no I/O, no clock reads.

Every function takes the times it needs as arguments, so tests drive them with a fake clock
and the scheduler, the backfill runner and the delivery worker all share one definition of
"due", "passes", "fires" and "retry when".

Times are UNIX seconds (floats). Windows end on step boundaries aligned to the epoch
(`floor(t / step) * step`): two scheduler instances, a restart or a replay all pick exactly the
same windows, which is what makes the dedup key `(rule, camera, window)` meaningful.

Cooldown is measured on window time (event time), not wall-clock time, so a backfill over
yesterday's footage applies the same cooldown as live evaluation would have.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

CLIP_FRAMES = 4
_MS = 1000.0


# ------------------------------------------------------------------------------- windows


def align_down(t: float, step_s: float) -> float:
    """The newest step boundary at or before `t` (boundaries are multiples of `step_s`)."""
    if step_s <= 0:
        raise ValueError(f"step_s must be > 0, got {step_s}")
    # Round through milliseconds first so 1700000008.0000002 does not fall a step short.
    return math.floor(round(t * _MS) / round(step_s * _MS)) * step_s


def window_bounds(end: float, window_s: float) -> tuple[float, float]:
    """[start, end) of the window that ends at `end`."""
    return end - window_s, end


def due_window_ends(
    last_end: float | None,
    covered_until: float,
    step_s: float,
    *,
    max_catchup: int,
) -> tuple[list[float], int]:
    """Window ends ready to evaluate, oldest first, and how many older ones were dropped.

    A window is ready once footage reaches its end (`covered_until`, the end of the newest
    level-0 clip). Without a previous evaluation only the newest ready window is due (older
    history is the backfill's job). After an outage at most `max_catchup` windows are
    evaluated; the older ones are skipped and counted so the lag stays bounded.
    """
    newest = align_down(covered_until, step_s)
    if last_end is None:
        return [newest], 0
    first = align_down(last_end, step_s) + step_s
    if newest < first - 1e-9:
        return [], 0
    count = round((newest - first) / step_s) + 1
    dropped = max(0, count - max(1, max_catchup))
    return [first + i * step_s for i in range(dropped, count)], dropped


def clip_span_s(sample_interval_s: float) -> float:
    """Seconds one level-0 clip covers: four sampled frames, one sample interval each."""
    return CLIP_FRAMES * sample_interval_s


def coverage_fraction(
    clip_starts: Sequence[float], start: float, end: float, sample_interval_s: float
) -> float:
    """Share of [start, end) covered by clips (each spanning `clip_span_s`), 0..1.

    Overlapping clips are not double counted, so a stuttering camera cannot fake coverage.
    Pass every clip that overlaps the window (parts outside it are not counted), not just
    `clips_in_window`: a clip straddling an edge covers its part of the window either way.
    """
    if end <= start:
        return 0.0
    span = clip_span_s(sample_interval_s)
    covered, reach = 0.0, start
    for t0 in sorted(clip_starts):
        lo, hi = max(t0, reach), min(t0 + span, end)
        if hi > lo:
            covered += hi - lo
            reach = hi
    return min(1.0, covered / (end - start))


def clips_in_window(
    clip_starts: Iterable[float], start: float, end: float, sample_interval_s: float
) -> list[float]:
    """Starts of the clips lying mostly (at least half) inside [start, end): what a window
    is scored on.

    Clips start wherever the camera's 4-frame grouping put them, not on the step grid, so
    "wholly inside" lost up to a clip at each edge: with a 2 s phase an 8 s window was only
    ever half covered and was skipped as missing footage forever. The same holds for
    coverage: measure it on every overlapping clip (`coverage_fraction`), not on these.
    """
    span = clip_span_s(sample_interval_s)
    return sorted(t for t in clip_starts if min(t + span, end) - max(t, start) >= span / 2 - 1e-6)


# ------------------------------------------------------------------ hysteresis, cooldown


def push_history(history: Sequence[bool], passed: bool, n: int) -> list[bool]:
    """The last `n` pass/fail results after appending `passed` (oldest first)."""
    return [*history, passed][-max(1, n) :]


def hysteresis_passes(history: Sequence[bool], k: int, n: int) -> bool:
    """True when at least `k` of the last `n` evaluations passed."""
    return sum(1 for p in history[-n:] if p) >= k


def in_cooldown(window_end: float, cooldown_until: float | None) -> bool:
    """True while a window ends before the rule's cooldown (on window time) is over."""
    return cooldown_until is not None and window_end < cooldown_until


@dataclass(frozen=True)
class RuleState:
    """What the policy remembers per (rule, camera) between evaluations."""

    last_end: float | None = None
    history: tuple[bool, ...] = ()
    last_fired_end: float | None = None
    cooldown_until: float | None = None


@dataclass(frozen=True)
class Decision:
    state: RuleState
    passed: bool
    fire: bool
    suppressed_by_cooldown: bool = False


def decide(
    state: RuleState,
    *,
    window_end: float,
    p_yes: float,
    threshold: float,
    k: int,
    n: int,
    cooldown_s: float,
) -> Decision:
    """One evaluation: record pass/fail, fire on k-of-n unless cooling down.

    Firing clears the history, so the next alert needs k fresh passes after the cooldown
    rather than re-firing on the passes that caused this one.
    """
    passed = p_yes >= threshold
    history = tuple(push_history(state.history, passed, n))
    after = replace(state, last_end=window_end, history=history)
    if not (passed and hysteresis_passes(history, k, n)):
        return Decision(after, passed, fire=False)
    if in_cooldown(window_end, state.cooldown_until):
        return Decision(after, passed, fire=False, suppressed_by_cooldown=True)
    fired = replace(
        after, history=(), last_fired_end=window_end, cooldown_until=window_end + cooldown_s
    )
    return Decision(fired, passed, fire=True)


def passing_span(ends: Sequence[float], window_s: float) -> tuple[float, float]:
    """The time all the given windows share: where the evidence for a k-of-n alert lies."""
    if not ends:
        raise ValueError("no window ends")
    return max(ends) - window_s, min(ends)


# -------------------------------------------------------------------------- active hours


def _minutes(hhmm: str) -> int:
    hours, _, minutes = hhmm.partition(":")
    value = int(hours) * 60 + int(minutes)
    if not 0 <= value <= 24 * 60:
        raise ValueError(f"{hhmm!r} is not a time of day HH:MM")
    return value


def is_active(active_hours: Sequence[Mapping[str, Any]] | None, timezone: str, t: float) -> bool:
    """Whether a rule is active at `t` in its camera's IANA time zone.

    No ranges means always active. Each range holds `days` (0 = Monday) and `start`/`end`
    ("HH:MM", start inclusive, end exclusive). An end at or before the start wraps past
    midnight: the range belongs to the day it starts on, so Friday 22:00–06:00 covers
    Saturday 03:00 too. An unknown zone falls back to UTC rather than silencing the rule.
    """
    if not active_hours:
        return True
    try:
        zone = ZoneInfo(timezone)
    except (ZoneInfoNotFoundError, ValueError):
        zone = ZoneInfo("UTC")
    local = datetime.fromtimestamp(t, zone)
    now_min = local.hour * 60 + local.minute
    today, yesterday = local.weekday(), (local.weekday() - 1) % 7
    for rng in active_hours:
        days = set(rng.get("days") or range(7))
        start, end = _minutes(str(rng["start"])), _minutes(str(rng["end"]))
        if start < end:
            if today in days and start <= now_min < end:
                return True
        elif (today in days and now_min >= start) or (yesterday in days and now_min < end):
            return True
    return False


# ------------------------------------------------------------------------ dedup, retries


def dedup_key(rule_id: int, camera_id: int, window_start: float, window_end: float) -> str:
    """Stable id of one (rule, camera, window): the Alert's unique key and the webhook's
    Idempotency-Key. Millisecond integers, so float noise never splits a window in two."""
    return f"fw-r{rule_id}-c{camera_id}-{round(window_start * _MS)}-{round(window_end * _MS)}"


def retry_delay(attempt: int, *, base_s: float, cap_s: float, jitter: float = 0.0) -> float:
    """Capped exponential backoff before retry number `attempt` (1 = first retry).

    `jitter` in [0, 1) is supplied by the caller (random in production, fixed in tests) and
    shortens the delay by up to that fraction, spreading retries of many deliveries.
    """
    raw = base_s * (2.0 ** max(0, attempt - 1))
    return min(cap_s, raw) * (1.0 - min(max(jitter, 0.0), 0.999))


def classify_http_status(status: int) -> str:
    """'ok', 'retry' or 'fail' for a webhook response status.

    Redirects are never followed (a signed request must not be re-sent somewhere else) and
    count as failures, like other client errors; 408, 425, 429 and 5xx are worth retrying.
    """
    if 200 <= status < 300:
        return "ok"
    if status in (408, 425, 429) or status >= 500:
        return "retry"
    return "fail"
