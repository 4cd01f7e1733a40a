"""Query planning over the memory pyramid (DESIGN §4): which level, which clips, which strategy.

Pure functions of (a camera's coverage, the asked range, limits): no store, no model, no clock,
so every choice is unit-tested by hand.

Level k samples every `s_k = s0 * 4**k` seconds and a clip is 4 consecutive samples, so a range
of D seconds holds about D / s_k frames (D / (4 s_k) clips) at level k.

**pyramid** (the trained regime): the finest level whose frame count fits the frame budget,
every clip of that level in the range, so frames are uniform over the range exactly as in
training (64..512 frames at ~1 fps or coarser). Below the budget the count is whatever the range
holds: a finer level would not fit and a coarser one has fewer frames, so the 64-frame floor of
the reference is met whenever D / s_k >= 64 at the chosen level ("where the range allows"). A
level whose retention no longer covers the range is skipped in favour of a coarser one that
does. If even the coarsest level has too many frames its clips are thinned evenly to the budget.

**zoom** (long ranges): a uniform stride of 64 s steps over a 20 s event. Zoom cuts the range
into fixed windows of a finer level, scores every window's relevance to the question (one
batched yes/no pass with the same prompt text for all windows), and answers over the `top_k`
most relevant windows (each moved back to the start of a run of about equally relevant
windows: `onset_windows`), each labelled with its true offset. `auto` picks zoom when the pyramid
level would sample coarser than `max_pyramid_stride_s` and a finer level covers the range;
the scan is capped at `zoom_max_windows` prefills by widening windows. A scan above level 0
only locates the event: the engine scans each kept window again one level finer inside its
span, down to level 0, and answers from there (the plan's cost counts the first scan only).
At level 0 each kept window's clips are scored one by one and the leading clips that are not
relevant alone are left out (`first_relevant`), so the answer's times start near the event.
A checkpoint trained on short prompts caps the budget and the zoom window (`capped`).

**sparse**: evenly spaced level-0 clips over the range, up to the budget (cheap, non-uniform
gaps; the duration sentence still states the full range).

Every plan carries its cost (frames answered over, windows and frames scanned) so the answer
can report what it paid.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Literal

from memory.store import LevelCoverage

Strategy = Literal["pyramid", "zoom", "sparse"]
RequestedStrategy = Literal["auto", "pyramid", "zoom", "sparse"]
FRAMES_PER_CLIP = 4
_COVERAGE_SLACK = 0.05  # a level within 5% of the best coverage counts as covering the range


class NoFootage(LookupError):
    """Memory holds no clips of this camera in the asked range (the API answers 404)."""

    def __init__(self, camera_id: int, t_from: float, t_to: float) -> None:
        super().__init__(f"no footage of camera {camera_id} between {t_from:.3f} and {t_to:.3f}")
        self.camera_id, self.t_from, self.t_to = camera_id, t_from, t_to


@dataclass(frozen=True)
class PlanLimits:
    """Knobs of the planner; defaults follow the reference (512-frame budget, 64-frame floor)."""

    frame_budget: int = 512
    min_frames: int = 64
    s0: float = 1.0
    max_pyramid_stride_s: float = 16.0  # auto: coarser than this -> zoom if possible
    zoom_window_frames: int = 64
    zoom_max_windows: int = 256

    def __post_init__(self) -> None:
        if self.frame_budget < FRAMES_PER_CLIP or self.zoom_window_frames < FRAMES_PER_CLIP:
            raise ValueError("frame budget and zoom window need at least one clip (4 frames)")
        if self.s0 <= 0 or self.zoom_max_windows < 1:
            raise ValueError("s0 must be > 0 and zoom_max_windows >= 1")

    @property
    def max_clips(self) -> int:
        return self.frame_budget // FRAMES_PER_CLIP

    def capped(self, max_frames: int, max_step_s: float | None = None) -> PlanLimits:
        """These limits within the frames a model reads in one prompt (a checkpoint's
        `fw_max_frames`): the answer budget, the floor and the zoom window never exceed it,
        so a zoom scan asks the model about windows as long as those it was trained on.
        `max_step_s` (`fw_max_frame_step_s`), the widest frame spacing it was trained on,
        bounds the pyramid's stride the same way: `auto` zooms rather than show it frames
        further apart than it has seen (the tiny model: 1-2 s, so a 2-minute range is
        scanned on level 0 instead of read as 32 level-1 frames 4 s apart)."""
        most = max(FRAMES_PER_CLIP, max_frames // FRAMES_PER_CLIP * FRAMES_PER_CLIP)
        stride = self.max_pyramid_stride_s
        if max_step_s is not None:
            stride = min(stride, max_step_s)
        return replace(
            self,
            frame_budget=min(self.frame_budget, most),
            min_frames=min(self.min_frames, most),
            zoom_window_frames=min(self.zoom_window_frames, most),
            max_pyramid_stride_s=stride,
        )

    def stride(self, level: int) -> float:
        return self.s0 * 4.0**level


@dataclass(frozen=True)
class ZoomPlan:
    """Relevance scan: `windows` windows of `window_clips` clips at `level`, keep `top_k`."""

    level: int
    stride_s: float
    window_clips: int
    windows: int  # estimated from coverage; the engine recounts on the clips it reads
    top_k: int


@dataclass(frozen=True)
class WindowPlan:
    """What to read for one camera and how to present it."""

    camera_id: int
    strategy: Strategy
    level: int  # level of the clips the answer sees
    stride_s: float
    t_from: float  # part of the asked range this level covers
    t_to: float
    duration_s: float  # estimate; the engine states the duration of the clips it read
    max_clips: int  # thin evenly to this many clips if more are read
    est_frames: int
    zoom: ZoomPlan | None = None

    @property
    def cost(self) -> dict[str, int]:
        """Frames the answer sees and frames/windows the zoom scan reads (for the answer)."""
        scan = self.zoom.windows * self.zoom.window_clips * FRAMES_PER_CLIP if self.zoom else 0
        return {
            "answer_frames": self.est_frames,
            "scan_windows": self.zoom.windows if self.zoom else 0,
            "scan_frames": scan,
        }


def _covered(cov: LevelCoverage, stride: float, t_from: float, t_to: float) -> tuple[float, float]:
    """Part of [t_from, t_to] a level's clips span (a clip covers 4 strides from its start)."""
    return max(t_from, cov.earliest), min(t_to, cov.latest + FRAMES_PER_CLIP * stride)


def frames_in(duration_s: float, stride_s: float) -> int:
    """Frames a level holds over a duration, whole clips only (a multiple of 4)."""
    clips = math.floor(duration_s / (FRAMES_PER_CLIP * stride_s) + 1e-9)
    return max(clips, 1) * FRAMES_PER_CLIP


def usable_levels(
    coverage: Mapping[int, LevelCoverage], t_from: float, t_to: float, limits: PlanLimits
) -> list[tuple[int, float, float]]:
    """Levels (finest first) whose coverage of the range is within 5% of the best one's,
    with the covered interval: a level trimmed by retention is not used for an older range."""
    spans: list[tuple[int, float, float]] = []
    for level in sorted(coverage):
        cov = coverage[level]
        if cov.clips <= 0:
            continue
        a, b = _covered(cov, limits.stride(level), t_from, t_to)
        if b > a or (b == a and cov.clips > 0 and t_from <= cov.earliest <= t_to):
            spans.append((level, a, b))
    if not spans:
        return []
    best = max(b - a for _, a, b in spans)
    need = best - _COVERAGE_SLACK * max(t_to - t_from, best)
    return [s for s in spans if s[2] - s[1] >= need]


def pyramid_level(
    levels: Sequence[tuple[int, float, float]], limits: PlanLimits
) -> tuple[int, float, float]:
    """Finest usable level whose frame count fits the budget, else the coarsest usable one."""
    for level, a, b in levels:
        if frames_in(b - a, limits.stride(level)) <= limits.frame_budget:
            return level, a, b
    return levels[-1]


def zoom_plan(
    levels: Sequence[tuple[int, float, float]],
    answer_level: int,
    limits: PlanLimits,
    thinned: bool = False,
) -> ZoomPlan | None:
    """The finest usable level finer than `answer_level` (or that level itself when the pyramid
    had to thin it) that the scan can afford; windows of `zoom_window_frames` frames, widened
    (whole clips) to keep <= zoom_max_windows. None when no such level covers the range (zoom
    would add nothing)."""
    finer = [lv for lv in levels if lv[0] < answer_level or (thinned and lv[0] == answer_level)]
    if not finer:
        return None
    for level, a, b in finer:  # finest first: the first that fits the scan cap without widening
        stride = limits.stride(level)
        clips = frames_in(b - a, stride) // FRAMES_PER_CLIP
        window_clips = max(1, limits.zoom_window_frames // FRAMES_PER_CLIP)
        if math.ceil(clips / window_clips) <= limits.zoom_max_windows:
            break
    else:  # even the coarsest finer level needs widened windows
        window_clips = math.ceil(clips / limits.zoom_max_windows)
    windows = max(1, math.ceil(clips / window_clips))
    top_k = max(1, min(windows, limits.max_clips // window_clips))
    return ZoomPlan(level, stride, window_clips, windows, top_k)


def plan_window(
    camera_id: int,
    coverage: Mapping[int, LevelCoverage],
    t_from: float,
    t_to: float,
    limits: PlanLimits | None = None,
    strategy: RequestedStrategy = "auto",
) -> WindowPlan:
    """Plan one camera's range. Raises `NoFootage` when no level holds clips in it."""
    limits = limits or PlanLimits()
    if t_to < t_from:
        raise ValueError(f"t_to {t_to} is before t_from {t_from}")
    levels = usable_levels(coverage, t_from, t_to, limits)
    if not levels:
        raise NoFootage(camera_id, t_from, t_to)
    if strategy == "sparse":
        zero = [lv for lv in levels if lv[0] == 0] or levels[:1]
        level, a, b = zero[0]
        stride = limits.stride(level)
        frames = min(frames_in(b - a, stride), limits.frame_budget)
        return WindowPlan(camera_id, "sparse", level, stride, a, b, b - a, limits.max_clips, frames)
    level, a, b = pyramid_level(levels, limits)
    stride = limits.stride(level)
    frames = min(frames_in(b - a, stride), limits.frame_budget)
    thinned = frames_in(b - a, stride) > limits.frame_budget
    zoom = None
    coarse = stride > limits.max_pyramid_stride_s or thinned
    if strategy == "zoom" or (strategy == "auto" and coarse):
        zoom = zoom_plan(levels, level, limits, thinned)
    if zoom is None:
        return WindowPlan(
            camera_id, "pyramid", level, stride, a, b, b - a, limits.max_clips, frames
        )
    _, za, zb = next(lv for lv in levels if lv[0] == zoom.level)
    answer_clips = zoom.top_k * zoom.window_clips
    return WindowPlan(
        camera_id,
        "zoom",
        zoom.level,
        zoom.stride_s,
        za,
        zb,
        answer_clips * FRAMES_PER_CLIP * zoom.stride_s,
        answer_clips,
        answer_clips * FRAMES_PER_CLIP,
        zoom,
    )


def split_budget(limits: PlanLimits, cameras: int) -> PlanLimits:
    """Per-camera limits for a multi-camera question: the frame budget is shared evenly
    (whole clips), never below one clip per camera."""
    if cameras <= 1:
        return limits
    per = max(
        FRAMES_PER_CLIP, (limits.frame_budget // cameras) // FRAMES_PER_CLIP * FRAMES_PER_CLIP
    )
    return PlanLimits(
        per,
        min(limits.min_frames, per),
        limits.s0,
        limits.max_pyramid_stride_s,
        min(limits.zoom_window_frames, per),
        limits.zoom_max_windows,
    )


def even_indices(n: int, k: int) -> list[int]:
    """k indices spread evenly over range(n), first and last included (all of them if k >= n)."""
    if k >= n:
        return list(range(n))
    if k <= 0:
        return []
    if k == 1:
        return [n // 2]
    return [round(i * (n - 1) / (k - 1)) for i in range(k)]


def fixed_windows(n_clips: int, window_clips: int) -> list[tuple[int, int]]:
    """[start, end) clip ranges of equal size covering range(n_clips); the last one is aligned
    to the end (it may overlap its neighbour) so every window has the same token count and the
    windows can be scored as one batch."""
    if n_clips <= 0:
        return []
    w = min(window_clips, n_clips)
    starts = list(range(0, n_clips - w + 1, w))
    if starts[-1] + w < n_clips:
        starts.append(n_clips - w)
    return [(s, s + w) for s in starts]


def top_windows(scores: Sequence[float], k: int) -> list[int]:
    """Indices of the k highest scores, returned in temporal (index) order."""
    order = sorted(range(len(scores)), key=lambda i: (-scores[i], i))
    return sorted(order[:k])


ONSET_FLOOR = 0.5  # a window counts as relevant from this P(yes) on
ONSET_MARGIN = 0.15  # ... and as "about as relevant" as the best within this much of it


def onset_windows(
    scores: Sequence[float],
    keep: Sequence[int],
    runs: Sequence[int],
    floor: float = ONSET_FLOOR,
    margin: float = ONSET_MARGIN,
) -> list[int]:
    """Move each kept window that lies inside a longer event back over the windows just
    before it (same run, i.e. adjacent in time) that are relevant and score within `margin`
    of it; returned in temporal order. A window lies inside a longer event when the window
    after it is relevant too, or when the two before it are (the event ends in it).

    Why: an event that lasts longer than a window (a car parked for a minute) makes every
    window it covers about equally relevant, and the top score then falls on any of them,
    the last included; "when did it park?" asks for the first one, where the event begins.
    A window with at most one relevant window before and none after is kept: a short event
    (a 20 s parking) is relevant in its own window and at most in the one before (the car
    driving in), which is not where it began. A clearly better window (more than `margin`)
    is kept as well.
    """

    def close(j: int, i: int) -> bool:  # window j is as relevant as kept window i, same run
        return (
            0 <= j < len(scores)
            and runs[j] == runs[i]
            and scores[j] >= max(floor, scores[i] - margin)
        )

    out = set()
    for i in keep:
        j = i
        after = i + 1 < len(scores) and runs[i + 1] == runs[i] and scores[i + 1] >= floor
        ends_here = close(i - 1, i) and close(i - 2, i) and not {i - 1, i - 2} & set(keep)
        while (after or ends_here) and j > 0 and j - 1 not in keep and close(j - 1, i):
            j -= 1
        out.add(j)
    return sorted(out)


def first_relevant(scores: Sequence[float], floor: float = ONSET_FLOOR) -> int:
    """Index of the first clip whose own relevance reaches `floor`; 0 when none does.

    Why: a kept zoom window (32 s for the tiny model) starts wherever the fixed grid put it,
    and "when did the red car park?" was answered from its start, 10 s before the car stood
    still. Scored one clip at a time, the clips before the event score low; the answer reads
    the window from its first relevant clip on. With no clip relevant alone (the event needs
    the window's context) the window is kept whole.
    """
    return next((i for i, sc in enumerate(scores) if sc >= floor), 0)
