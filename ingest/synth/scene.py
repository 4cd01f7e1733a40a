"""Renderer: ground truth (tracks) → RGB frames of a fixed surveillance camera, statelessly.

Why stateless: ``Scene.render(t)`` depends only on the seed, the size and t, so a 4-hour
needle test that samples one frame per second renders 14,400 frames, not 360,000, and any
frame can be regenerated for debugging. Determinism: same seed/size/t → byte-identical frame.

Per frame: copy the cached procedural background, draw the actors on screen (far ones first),
apply a slow global lighting drift (a per-frame lookup table) and add sensor noise (a small
seeded bank of noise fields picked by a hash of t; cheap and still different frame to frame).
Actor colours are saturated and the background is muted greys/olives, so a simple colour mask
(:func:`colour_mask`) finds red/blue/green/yellow actors reliably; white and black are also
used for actors but overlap lane markings and tyres, so masks for them are only approximate.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from ingest.synth.script import BAY_XS, FENCE_Y, REGIONS, EventSpec, make_truth
from ingest.synth.truth import Box, GroundTruth, Track

RGB: dict[str, tuple[int, int, int]] = {
    "red": (200, 30, 35),
    "blue": (30, 60, 205),
    "white": (238, 238, 235),
    "black": (22, 22, 26),
    "green": (30, 165, 50),
    "yellow": (232, 200, 28),
}
_SKIN = (205, 160, 125)
_TROUSERS = (58, 56, 64)
_GLASS = (55, 65, 75)
_TYRE = (30, 30, 30)
_NOISE_BANK = 16


def colour_mask(frame: np.ndarray, colour: str) -> np.ndarray:
    """Boolean HxW mask of pixels that look like a saturated actor colour (red/blue/green/yellow).

    Channel-difference tests, so lighting drift and noise do not matter; background pixels
    never pass. White/black use brightness thresholds and are approximate.
    """
    f = frame.astype(np.int16)
    r, g, b = f[..., 0], f[..., 1], f[..., 2]
    if colour == "red":
        return (r > 120) & (r - g > 80) & (r - b > 80)
    if colour == "blue":
        return (b > 120) & (b - r > 80) & (b - g > 60)
    if colour == "green":
        return (g > 110) & (g - r > 70) & (g - b > 50)
    if colour == "yellow":
        return (r > 150) & (g > 130) & (r - b > 100) & (g - b > 90)
    if colour == "white":
        return (r > 200) & (g > 200) & (b > 195)
    if colour == "black":
        return (r < 40) & (g < 40) & (b < 45)
    raise ValueError(f"unknown colour {colour!r}")


def _smooth(rng: np.random.Generator, h: int, w: int, cell: int) -> np.ndarray:
    """Value noise in 0..1: a coarse random grid, bilinearly interpolated (separable)."""
    grid = rng.random((h // cell + 2, w // cell + 2)).astype(np.float32)
    ys, xs = np.arange(h, dtype=np.float32) / cell, np.arange(w, dtype=np.float32) / cell
    y0, x0 = ys.astype(np.int64), xs.astype(np.int64)
    fy, fx = (ys - y0)[:, None], (xs - x0)[None, :]
    rows = grid[y0] * (1 - fy) + grid[y0 + 1] * fy
    return rows[:, x0] * (1 - fx) + rows[:, x0 + 1] * fx


def _band(h: int, box: Box) -> slice:
    return slice(round(box[1] * h), round(box[3] * h))


def make_background(seed: int, width: int, height: int) -> np.ndarray:
    """The empty scene for a seed: wall, fence, parking bays, road, walkway, grass (uint8)."""
    rng = np.random.default_rng([seed, 2])
    h, w = height, width
    coarse = _smooth(rng, h, w, max(4, w // 16)) - 0.5
    fine = rng.random((h, w), dtype=np.float32) - 0.5
    img = np.empty((h, w, 3), np.float32)
    img[:] = (108, 112, 92)  # ground
    wall = slice(0, round(FENCE_Y * h))
    img[wall] = (122, 118, 112)
    img[wall][::6] -= 14  # brick courses
    for name, base in (
        ("parking", (92, 92, 96)),
        ("road", (72, 72, 78)),
        ("walkway", (158, 152, 140)),
    ):
        img[_band(h, REGIONS[name])] = base
    walk = _band(h, REGIONS["walkway"])
    img[walk, :: max(8, w // 32)] -= 16  # paving joints
    img[walk][:: max(6, h // 40)] -= 16
    kerb = slice(round(0.74 * h), round(0.76 * h))
    img[kerb] = (140, 138, 132)
    img[round(0.93 * h) :] = (104, 112, 84)  # grass
    img += 22 * coarse[..., None] + 8 * fine[..., None]
    # lane dashes (dim so they never pass a colour mask), bay lines, fence rails and posts
    cy, dash = round(0.645 * h), max(6, w // 20)
    for x in range(0, w, 2 * dash):
        img[cy : cy + 1, x : x + dash] = (160, 160, 154)
    pk = REGIONS["parking"]
    for bx in BAY_XS:
        for edge in (bx - 0.1, bx + 0.1):
            xe = min(w - 1, max(0, round(edge * w)))
            img[round(pk[1] * h) : round(pk[3] * h), xe] = (165, 165, 160)
    fy = round(FENCE_Y * h)
    for yy in (fy, fy - round(0.06 * h)):
        img[max(0, yy - 1) : yy + 1] = (88, 80, 70)
    for x in range(0, w, max(8, w // 16)):
        img[max(0, fy - round(0.09 * h)) : fy + 2, x : x + 2] = (80, 72, 62)
    tint = rng.uniform(0.94, 1.06, size=3).astype(np.float32)
    return np.clip(img * tint, 0, 255).astype(np.uint8)


class _Canvas:
    """Clipped filled rectangles and discs on an HxWx3 uint8 image."""

    def __init__(self, img: np.ndarray) -> None:
        self.img = img
        self.h, self.w = img.shape[:2]

    def rect(self, x0: float, y0: float, x1: float, y1: float, c: tuple[int, int, int]) -> None:
        a, b = max(0, round(x0)), min(self.w, round(x1))
        d, e = max(0, round(y0)), min(self.h, round(y1))
        if a < b and d < e:
            self.img[d:e, a:b] = c

    def disc(self, cx: float, cy: float, r: float, c: tuple[int, int, int]) -> None:
        ri = max(1, math.ceil(r))
        x0, y0 = round(cx) - ri, round(cy) - ri
        yy, xx = np.ogrid[-ri : ri + 1, -ri : ri + 1]
        m = (xx * xx + yy * yy) <= r * r
        a, b = max(0, x0), min(self.w, x0 + 2 * ri + 1)
        d, e = max(0, y0), min(self.h, y0 + 2 * ri + 1)
        if a < b and d < e:
            self.img[d:e, a:b][m[d - y0 : e - y0, a - x0 : b - x0]] = c


def _scale(y: float) -> float:
    """Crude perspective: actors lower in the frame (nearer) are drawn larger."""
    return 0.55 + 0.6 * y


PERSON_HEIGHT = 0.17  # of the frame height, before perspective
CAR_LENGTH, CAR_HEIGHT = 0.16, 0.36  # of the frame width; height as a share of the length
BAG_SIZE = 0.05  # of the frame height


def body_centre(kind: str, x: float, y: float, aspect: float) -> tuple[float, float]:
    """Normalised middle of an actor's drawn body given its foot point (x, y), for a frame
    `aspect` = width / height: where training can say "this patch shows the actor"."""
    scale = _scale(y)
    if kind == "person":
        return x, y - 0.62 * PERSON_HEIGHT * scale  # the shirt
    if kind == "car":
        return x, y - 0.4 * CAR_HEIGHT * CAR_LENGTH * scale * aspect
    return x, y - 0.5 * BAG_SIZE * scale


def _person(cv: _Canvas, x: float, y: float, c: tuple[int, int, int], t: float, move: bool) -> None:
    h = PERSON_HEIGHT * cv.h * _scale(y)
    px, py = x * cv.w, y * cv.h
    stride = 0.12 * h * math.sin(2 * math.pi * 1.6 * t) if move else 0.0
    lw = max(1.0, 0.1 * h)
    cv.rect(px - lw - stride / 2 - lw / 2, py - 0.45 * h, px - stride / 2 + lw / 2, py, _TROUSERS)
    cv.rect(px + stride / 2 - lw / 2, py - 0.45 * h, px + stride / 2 + lw + lw / 2, py, _TROUSERS)
    cv.rect(px - 0.17 * h, py - 0.82 * h, px + 0.17 * h, py - 0.43 * h, c)
    cv.disc(px, py - 0.91 * h, 0.1 * h, _SKIN)


def _car(cv: _Canvas, x: float, y: float, c: tuple[int, int, int]) -> None:
    length = CAR_LENGTH * cv.w * _scale(y)
    hgt = CAR_HEIGHT * length
    px, py = x * cv.w, y * cv.h
    left = px - length / 2
    cv.rect(left, py - 0.6 * hgt, left + length, py - 0.15 * hgt, c)
    cv.rect(left + 0.2 * length, py - hgt, left + 0.78 * length, py - 0.55 * hgt, c)
    cv.rect(left + 0.26 * length, py - 0.9 * hgt, left + 0.47 * length, py - 0.6 * hgt, _GLASS)
    cv.rect(left + 0.52 * length, py - 0.9 * hgt, left + 0.72 * length, py - 0.6 * hgt, _GLASS)
    for wx in (0.2, 0.8):
        cv.disc(left + wx * length, py - 0.15 * hgt, 0.12 * length, _TYRE)


def _bag(cv: _Canvas, x: float, y: float, c: tuple[int, int, int]) -> None:
    s = BAG_SIZE * cv.h * _scale(y)
    px, py = x * cv.w, y * cv.h
    cv.rect(px - 0.7 * s, py - s, px + 0.7 * s, py, c)
    cv.rect(px - 0.3 * s, py - 1.35 * s, px + 0.3 * s, py - 1.0 * s, _TROUSERS)


@dataclass(frozen=True)
class SceneSpec:
    """What to generate; everything else follows from these values (see ``Scene.from_spec``)."""

    seed: int = 0
    duration: float = 60.0
    events: tuple[str | EventSpec, ...] = ()
    width: int = 320
    height: int = 240
    fps: float = 25.0
    people_per_min: float = 2.0
    cars_per_min: float = 1.0
    random_needles: int = 0


class Scene:
    """A rendered camera view of a :class:`GroundTruth`. ``render(t)`` is pure in t."""

    def __init__(self, truth: GroundTruth, width: int = 320, height: int = 240, fps: float = 25.0):
        if width % 2 or height % 2 or width < 32 or height < 32:
            raise ValueError(f"size must be even and ≥ 32, got {width}x{height}")
        self.truth, self.width, self.height, self.fps = truth, width, height, float(fps)
        self.background = make_background(truth.seed, width, height)
        rng = np.random.default_rng([truth.seed, 3])
        self._noise = np.clip(
            np.round(rng.normal(0.0, 2.0, (_NOISE_BANK, height, width, 3))), -6, 6
        ).astype(np.int8)
        self._phase = rng.uniform(0, 2 * math.pi, 2)
        self._t_in = np.array([tr.t_in for tr in truth.tracks], dtype=np.float64)
        self._t_out = np.array([tr.t_out for tr in truth.tracks], dtype=np.float64)

    @classmethod
    def from_spec(cls, spec: SceneSpec) -> Scene:
        truth = make_truth(
            spec.seed,
            spec.duration,
            list(spec.events),
            people_per_min=spec.people_per_min,
            cars_per_min=spec.cars_per_min,
            random_needles=spec.random_needles,
        )
        return cls(truth, spec.width, spec.height, spec.fps)

    @property
    def n_frames(self) -> int:
        return max(1, round(self.truth.duration * self.fps))

    def gain(self, t: float) -> float:
        """Global lighting factor: slow drift (15 min and ~2 min periods), within ±7%."""
        p = self._phase
        return (
            1.0
            + 0.05 * math.sin(2 * math.pi * t / 900.0 + p[0])
            + 0.02 * math.sin(2 * math.pi * t / 131.0 + p[1])
        )

    def visible(self, t: float) -> list[Track]:
        idx = np.flatnonzero((self._t_in <= t) & (t < self._t_out))
        return [self.truth.tracks[i] for i in idx]

    def render(self, t: float) -> np.ndarray:
        """The HxWx3 uint8 RGB frame at time t (seconds); no earlier frame is needed."""
        img = self.background.copy()
        cv = _Canvas(img)
        placed = [(tr, tr.position(t)) for tr in self.visible(t)]
        placed.sort(key=lambda p: (p[1][1], p[0].actor_id))  # far (higher up) first
        for tr, (x, y) in placed:
            c = RGB[tr.colour]
            if tr.actor_kind == "person":
                _person(cv, x, y, c, t, tr.moving(t))
            elif tr.actor_kind == "car":
                _car(cv, x, y, c)
            else:
                _bag(cv, x, y, c)
        g = self.gain(t)
        lut = np.clip(np.round(np.arange(256, dtype=np.float64) * g), 0, 255).astype(np.uint8)
        lit = lut[img].astype(np.int16)
        # Fibonacci hash of (ms, seed); the top bits pick the noise field, so every frame rate
        # cycles through the whole bank rather than a few fields.
        h = (round(t * 1000) * 0x9E3779B1 + self.truth.seed * 0x85EBCA77) & 0xFFFFFFFF
        lit += self._noise[(h >> 16) % _NOISE_BANK]
        np.clip(lit, 0, 255, out=lit)
        return lit.astype(np.uint8)

    def times(
        self, t0: float = 0.0, t1: float | None = None, fps: float | None = None
    ) -> list[float]:
        """Frame times ``t0 + i/fps`` in ``[t0, t1)`` (defaults: whole footage, scene fps)."""
        rate = self.fps if fps is None else float(fps)
        end = self.truth.duration if t1 is None else t1
        n = max(0, math.ceil((end - t0) * rate - 1e-9))
        return [t0 + i / rate for i in range(n)]

    def frames(
        self, t0: float = 0.0, t1: float | None = None, fps: float | None = None
    ) -> Iterator[tuple[float, np.ndarray]]:
        """(t, frame) pairs, e.g. ``scene.frames(600, 608, fps=1)`` for a sparse clip."""
        for t in self.times(t0, t1, fps):
            yield t, self.render(t)

    def clip(self, times: list[float]) -> np.ndarray:
        """Frames at the given times stacked as (N, H, W, 3) uint8 (training batches)."""
        return np.stack([self.render(t) for t in times])
