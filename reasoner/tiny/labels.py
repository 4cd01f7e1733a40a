"""Encoder training targets for the tiny model, from a window's ground truth.

The encoder and video stages supervise the vision side directly as well as through the LLM:
a per-clip probe learns which actors and events each clip shows (`clip_labels`), each patch
before ToMe learns which actor stands in it doing what (`token_labels`), and the apart loss
keeps a moving actor's body in two frames apart on ToMe's metric (`moved_pairs`), and the
motion labels say which body patches belong to an actor that moves during its clip
(`motion_labels`). The questions the LLM learns from live in `reasoner.tiny.data`.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ingest.synth import COLOURS, Event, GroundTruth, Track, body_centre
from reasoner.tiny.data import EVENTS, Window, on_screen, seen_events

AUX_ACTORS = ("person", "car", "bag")
MOTION_IGNORE, MOTION_STILL, MOTION_MOVING = -1, 0, 1
MOTION_KINDS = ("person", "car")
STILL_BELOW, MOVING_ABOVE = 0.012, 0.03
"""Speed across a clip, in frame widths (x) and heights (y) a second, below which an actor
stands and above which it moves; loiterers shuffle at about 0.007, walkers go 0.045-0.08,
cars 0.12-0.2 (`ingest.synth.script`). Speeds between (arriving, slowing) are left out."""


AUX_ACTOR_LABELS = len(AUX_ACTORS) * len(COLOURS)
AUX_LABELS = AUX_ACTOR_LABELS + len(EVENTS) * len(COLOURS)


def actor_column(kind: str, colour: str) -> int:
    """Column of (actor kind, colour) in the auxiliary labels."""
    return AUX_ACTORS.index(kind) * len(COLOURS) + COLOURS.index(colour)


def event_column(kind: str, colour: str) -> int:
    """Column of (event, colour) in the auxiliary labels, after the actor columns."""
    return AUX_ACTOR_LABELS + list(EVENTS).index(kind) * len(COLOURS) + COLOURS.index(colour)


def actor_events(truth: GroundTruth, track: Track, times: Sequence[float]) -> list[Event]:
    """Events of `track`'s actor that are happening at one of `times` or more."""
    return [
        ev
        for ev in truth.events
        if ev.actor_id == track.actor_id and any(ev.t_start <= t < ev.t_end for t in times)
    ]


def clip_labels(w: Window) -> np.ndarray:
    """(n_clips, AUX_LABELS) float32 targets of the auxiliary per-clip loss on the encoder:
    which (actor kind, colour) is on screen in each 4-frame clip, then which (event, colour)
    is happening there (a red car parked, not just a red car).

    Why the events: distilled onto the oracle tokens alone, the encoder learned actors and
    colours but barely where a car stands (a bay or the road), so "a red car is parked"
    scored about the same on red cars driving past (BENCHMARKS.md, stop 14).
    """
    times = w.times
    n_clips = len(times) // 4
    out = np.zeros((n_clips, AUX_LABELS), dtype=np.float32)
    for tr in w.truth.tracks:
        col = actor_column(tr.actor_kind, tr.colour)
        for c in range(n_clips):
            if any(on_screen(tr, t) for t in times[4 * c : 4 * c + 4]):
                out[c, col] = 1.0
    for kind in EVENTS:
        for c in range(n_clips):
            for ev in seen_events(w.truth, times[4 * c : 4 * c + 4], kind):
                out[c, event_column(kind, ev.colour)] = 1.0
    return out


def body_patch(track: Track, t: float, aspect: float, grid: int) -> int:
    """Index (row * grid + column) of the patch holding `track`'s body at time t, in a frame
    squashed from a camera of width / height `aspect` to grid x grid patches."""
    x, y = body_centre(track.actor_kind, *track.position(t), aspect)
    gx = min(grid - 1, max(0, int(x * grid)))
    gy = min(grid - 1, max(0, int(y * grid)))
    return gy * grid + gx


def token_labels(w: Window, grid: int) -> np.ndarray:
    """(n_clips, 4*grid*grid, AUX_LABELS) float32 per-patch targets for the encoder before
    ToMe: the patch holding each actor's body in each frame is labelled with the actor's
    (kind, colour) and with the (event, colour) it is doing during that clip, as `clip_labels`.

    Why: the clip-level labels say only that some token should light up. With them (and
    distillation) a fresh encoder never told a loitering person from a passing one, nor a car
    stopped on the road from a moving one (probe balanced accuracy 0.50 and 0.59): nothing
    said which token, so nothing rewarded comparing one actor across the clip's frames.
    """
    times = w.times
    n_clips, per_frame = len(times) // 4, grid * grid
    out = np.zeros((n_clips, 4 * per_frame, AUX_LABELS), dtype=np.float32)
    for c in range(n_clips):
        ts = times[4 * c : 4 * c + 4]
        for tr in w.truth.tracks:
            labels = [actor_column(tr.actor_kind, tr.colour)]
            labels += [
                event_column(ev.kind, ev.colour)
                for ev in actor_events(w.truth, tr, ts)
                if ev.kind in EVENTS
            ]
            for i, t in enumerate(ts):
                if not on_screen(tr, t):
                    continue
                out[c, i * per_frame + body_patch(tr, t, w.aspect, grid), labels] = 1.0
    return out


def moved_pairs(w: Window, grid: int) -> np.ndarray:
    """(K, 3) int64 rows (clip, patch a, patch b) in the encoder's (4*grid*grid) patch order
    before ToMe: the patches holding one actor's body in two frames of a clip where it stands
    in different patches (it moved between them).

    Why: ToMe merges every token of a tiny clip (256 -> 128 -> 64, all even tokens each
    step) into its most similar odd one, and a car's body in one frame is most like its body
    in the next: 58 of 131 held-out clips of a car driving past ended with its four body
    patches in one output token, the trajectory averaged away (BENCHMARKS.md, stop 25). These
    pairs let training push such patches apart on the merge metric.
    """
    times = w.times
    per_frame = grid * grid
    rows: list[tuple[int, int, int]] = []
    for c in range(len(times) // 4):
        ts = times[4 * c : 4 * c + 4]
        for tr in w.truth.tracks:
            at = [
                (i, body_patch(tr, t, w.aspect, grid)) for i, t in enumerate(ts) if on_screen(tr, t)
            ]
            rows += [
                (c, i * per_frame + p, j * per_frame + q)
                for n, (i, p) in enumerate(at)
                for j, q in at[n + 1 :]
                if p != q
            ]
    return np.array(rows, dtype=np.int64).reshape(-1, 3)


def motion_labels(w: Window, grid: int) -> tuple[np.ndarray, np.ndarray]:
    """(n_clips, 4*grid*grid) int64 labels (MOTION_IGNORE / _STILL / _MOVING) at the patch
    under each person or car in each frame, from its speed across the clip, and the index in
    `MOTION_KINDS` of the actor there (-1: none).

    Why: a linear probe on the bundled encoder's patches (`bench/frozen_motion_probe.py`) tells
    a moving car from a standing one at 0.76 (balanced) and a walker from a loiterer at 0.62,
    where an encoder trained on this label alone reaches 0.96 and 0.88 (BENCHMARKS.md, stops 19
    and 28): the event labels of `token_labels` carry motion only inside (event, colour)
    columns, a sparse way to ask for it. Also the probe's labels.
    """
    ts, per = w.times, grid * grid
    n = len(ts) // 4
    labels = np.full((n, 4 * per), MOTION_IGNORE, dtype=np.int64)
    kinds = np.full((n, 4 * per), -1, dtype=np.int64)
    for c in range(n):
        clip = ts[4 * c : 4 * c + 4]
        for tr in w.truth.tracks:
            seen = [t for t in clip if on_screen(tr, t)]
            if tr.actor_kind not in MOTION_KINDS or len(seen) < 2:
                continue
            (x0, y0), (x1, y1) = tr.position(seen[0]), tr.position(seen[-1])
            speed = float(np.hypot(x1 - x0, y1 - y0)) / (seen[-1] - seen[0])
            label = (
                MOTION_MOVING
                if speed > MOVING_ABOVE
                else MOTION_STILL
                if speed < STILL_BELOW
                else MOTION_IGNORE
            )
            for i, t in enumerate(clip):
                if t not in seen:
                    continue
                j = i * per + body_patch(tr, t, w.aspect, grid)
                labels[c, j], kinds[c, j] = label, MOTION_KINDS.index(tr.actor_kind)
    return labels, kinds
