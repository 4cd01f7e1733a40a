"""From decoded frames to clips: wall-clock mapping, pyramid sampling, 4-frame assembly.

Everything here is pure (no I/O, no clock reads): callers pass the times in. That is what
lets the unit tests state exactly which frames are sampled and which clips come out.

Wall-clock mapping (`WallClock`)
    Camera clocks are not trusted and RTSP pts start at arbitrary values, so each *epoch*
    (one connection) is anchored once, at its first frame:
        wall = anchor_wall + (pts_time - anchor_pts)
    where anchor_wall is the arrival time of that frame for live cameras, or the import
    start time for file sources, and anchor_pts its pts. Frames without pts (gst-rtsp-server
    sends the first one so) get the previous pts + 1/fps. The result is clamped to be
    strictly increasing by at least 1 ms (clip ids are in ms and must not collide).
    For live cameras two corrections keep it honest: a frame that maps *later* than its
    arrival pulls the anchor back to it (the anchor frame itself was delayed; over a few
    frames this converges on the smallest observed latency), and a frame that maps more
    than `max_drift_s` *earlier* than its arrival re-anchors (a pts jump, a session that
    paused and resumed, a wrapped clock).

Pyramid sampling (`LevelSampler`)
    Level k samples every `s0 * 4**k` seconds of that wall time: the first frame falling in
    each slot `floor(t / interval)` of an absolute grid. The grid is absolute so that levels
    nest (a level-1 sample is also a level-0 sample) and a replayed file yields the same ids.

Clip assembly (`ClipAssembler`)
    Four consecutive samples of one level form a `Clip`. A clip never spans a disconnect:
    a new epoch, or a gap of more than `max_gap_intervals` sample intervals inside one epoch,
    throws the partial clip away (counted in `discarded`).
"""

from __future__ import annotations

import math
import statistics
from collections import deque
from dataclasses import dataclass, field
from typing import Literal

from flashwatch.messages import CLIP_FRAMES, Clip

DecodeMode = Literal["all", "keyframes"]
_MIN_STEP_S = 0.001
_EARLY_TOLERANCE_S = 0.02


class WallClock:
    """Maps one stream's frame timestamps (seconds, or None) to UNIX wall-clock seconds."""

    def __init__(self, fps: float = 25.0, max_drift_s: float | None = 5.0) -> None:
        if fps <= 0:
            raise ValueError(f"fps must be > 0, got {fps}")
        self.fps = fps
        self.max_drift_s = max_drift_s
        self.reanchors = 0
        self._anchor_wall: float | None = None
        self._anchor_pts = 0.0
        self._last_pts: float | None = None
        self._last_wall: float | None = None

    def new_epoch(self) -> None:
        """Forget the anchor: the next frame starts a new mapping (a new connection)."""
        self._anchor_wall = None
        self._last_pts = None
        # _last_wall survives: times stay increasing across epochs of one camera.

    def map(
        self, pts_time: float | None, arrival_wall: float, anchor_wall: float | None = None
    ) -> float:
        """Wall time of a frame.

        `arrival_wall` is when the frame was decoded; `anchor_wall`, when given, is used
        instead of it to anchor a new epoch (file sources: the import start time).
        """
        if pts_time is None or not math.isfinite(pts_time):
            pts_time = self._last_pts + 1.0 / self.fps if self._last_pts is not None else 0.0
        backwards = self._last_pts is not None and pts_time < self._last_pts
        if self._anchor_wall is None or backwards:
            self._anchor(pts_time, arrival_wall if anchor_wall is None else anchor_wall)
        assert self._anchor_wall is not None
        wall = self._anchor_wall + (pts_time - self._anchor_pts)
        if self.max_drift_s is not None and anchor_wall is None:
            if wall > arrival_wall + _EARLY_TOLERANCE_S:
                # A frame cannot arrive before it was captured: the anchor frame came late
                # (startup buffering, a burst). Pull the anchor back to this frame.
                self._anchor_wall -= wall - arrival_wall
                wall = arrival_wall
            elif arrival_wall - wall > self.max_drift_s:
                self.reanchors += 1
                self._anchor(pts_time, arrival_wall)
                wall = self._anchor_wall
        if self._last_wall is not None and wall < self._last_wall + _MIN_STEP_S:
            wall = self._last_wall + _MIN_STEP_S
        self._last_pts = pts_time
        self._last_wall = wall
        return wall

    def _anchor(self, pts_time: float, wall: float) -> None:
        self._anchor_pts = pts_time
        self._anchor_wall = wall
        if self._last_wall is not None and wall < self._last_wall + _MIN_STEP_S:
            self._anchor_wall = self._last_wall + _MIN_STEP_S


def level_interval(s0: float, level: int) -> float:
    """Sampling interval of pyramid level `level` (DESIGN §4): s0 * 4**level seconds."""
    return s0 * 4.0**level


class LevelSampler:
    """Picks the first frame of each `interval_s` slot of absolute wall time."""

    def __init__(self, interval_s: float) -> None:
        if interval_s <= 0:
            raise ValueError(f"interval_s must be > 0, got {interval_s}")
        self.interval_s = interval_s
        self._last_slot: int | None = None

    def wants(self, t: float) -> bool:
        """Whether the frame at wall time `t` would be sampled (no state change)."""
        return self._last_slot is None or self._slot(t) > self._last_slot

    def offer(self, t: float) -> bool:
        """Sample the frame at `t` if it opens a new slot."""
        if not self.wants(t):
            return False
        self._last_slot = self._slot(t)
        return True

    def _slot(self, t: float) -> int:
        # The epsilon keeps t = 3.0000000001 * interval / interval from rounding into slot 2.
        return math.floor(t / self.interval_s + 1e-9)


@dataclass
class ClipAssembler:
    """Groups the samples of one (camera, level) four at a time into `Clip`s."""

    camera_id: int
    level: int
    interval_s: float
    max_gap_intervals: float = 2.5
    discarded: int = 0
    _epoch: int | None = None
    _times: list[float] = field(default_factory=list)
    _frames: list[bytes] = field(default_factory=list)
    _thumb: bytes | None = None

    @property
    def pending(self) -> int:
        """Samples waiting for the next clip; 0 means the next sample starts a clip."""
        return len(self._times)

    def reset(self) -> None:
        """Drop the partial clip (disconnect, stop)."""
        self.discarded += len(self._times)
        self._times.clear()
        self._frames.clear()
        self._thumb = None

    def add(self, epoch: int, t: float, jpeg: bytes, thumb: bytes | None = None) -> Clip | None:
        """Add one sample; returns a Clip when it completes four. `thumb` is kept only from
        the clip's first sample."""
        if self._epoch != epoch:
            self.reset()
            self._epoch = epoch
        elif self._times and t - self._times[-1] > self.max_gap_intervals * self.interval_s:
            self.reset()
        if not self._times:
            self._thumb = thumb
        self._times.append(t)
        self._frames.append(jpeg)
        if len(self._times) < CLIP_FRAMES:
            return None
        clip = Clip(
            camera_id=self.camera_id,
            level=self.level,
            epoch=epoch,
            t=(self._times[0], self._times[1], self._times[2], self._times[3]),
            frames=list(self._frames),
            thumb=self._thumb,
        )
        self._times.clear()
        self._frames.clear()
        self._thumb = None
        return clip


class GopEstimator:
    """Keyframe interval of a stream, from the keyframe flags of demuxed packets.

    Packets carry the flag without decoding, so the estimate keeps running in keyframe-only
    mode and the mode can switch back if the camera's GOP grows.
    """

    def __init__(self, window: int = 8) -> None:
        self._intervals: deque[float] = deque(maxlen=window)
        self._last_key: float | None = None

    def reset(self) -> None:
        self._intervals.clear()
        self._last_key = None

    def observe_keyframe(self, t: float) -> None:
        if self._last_key is not None and t > self._last_key:
            self._intervals.append(t - self._last_key)
        self._last_key = t

    def interval(self) -> float | None:
        """Median keyframe interval in seconds once two intervals are known, else None."""
        if len(self._intervals) < 2:
            return None
        return statistics.median(self._intervals)


def choose_decode_mode(
    sample_interval_s: float, keyframe_interval_s: float | None, tolerance: float = 0.01
) -> DecodeMode:
    """`keyframes` (decoder skips non-key frames) when every sampling slot is sure to hold a
    keyframe, i.e. the sample interval is at least the keyframe interval; otherwise `all`
    (decode every frame, convert only the sampled ones). Unknown GOP -> `all`."""
    if keyframe_interval_s is None:
        return "all"
    if sample_interval_s >= keyframe_interval_s * (1.0 - tolerance):
        return "keyframes"
    return "all"


class Pyramid:
    """The samplers and assemblers of one camera's levels 0..n_levels-1.

    Samplers keep their slot across epochs (a reconnect never samples a slot twice);
    assemblers drop their partial clip at each new epoch.
    """

    def __init__(self, camera_id: int, s0: float, n_levels: int) -> None:
        if n_levels < 1:
            raise ValueError(f"n_levels must be >= 1, got {n_levels}")
        self.s0 = s0
        self.samplers = [LevelSampler(level_interval(s0, k)) for k in range(n_levels)]
        self.assemblers = [
            ClipAssembler(camera_id, k, level_interval(s0, k)) for k in range(n_levels)
        ]
        self.epoch = 0

    def new_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        self.reset()

    def reset(self) -> None:
        """Drop every partial clip (the connection ended)."""
        for asm in self.assemblers:
            asm.reset()

    def sample(self, t: float) -> list[int]:
        """Levels that sample the frame at wall time `t` (empty: skip converting it)."""
        return [k for k, s in enumerate(self.samplers) if s.offer(t)]

    def needs_thumb(self, levels: list[int]) -> bool:
        """Whether this sample starts a level-0 clip (the clip's thumbnail comes from it)."""
        return bool(levels) and levels[0] == 0 and self.assemblers[0].pending == 0

    def add(self, t: float, levels: list[int], jpeg: bytes, thumb: bytes | None) -> list[Clip]:
        out = []
        for k in levels:
            clip = self.assemblers[k].add(self.epoch, t, jpeg, thumb if k == 0 else None)
            if clip is not None:
                out.append(clip)
        return out

    @property
    def discarded(self) -> int:
        return sum(a.discarded for a in self.assemblers)
