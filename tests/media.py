"""Synthetic test media, encoded with PyAV's bundled libx264 (no ffmpeg CLI needed)."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np

PATTERNS = ("moving_square", "noise", "static")


def _background(width: int, height: int, rng: np.random.Generator) -> np.ndarray:
    """A smooth two-axis gradient tinted with a seeded colour."""
    tint = rng.integers(40, 200, size=3, dtype=np.int64)
    ys = np.linspace(0, 1, height, dtype=np.float32)[:, None]
    xs = np.linspace(0, 1, width, dtype=np.float32)[None, :]
    img = np.empty((height, width, 3), dtype=np.uint8)
    img[..., 0] = (tint[0] * (0.5 + 0.5 * xs)).astype(np.uint8)
    img[..., 1] = (tint[1] * (0.5 + 0.5 * ys)).astype(np.uint8)
    img[..., 2] = np.uint8(tint[2])
    return img


def make_h264(
    path: str | Path,
    seconds: float,
    fps: int = 25,
    size: tuple[int, int] = (320, 240),
    gop: int = 50,
    seed: int = 0,
    pattern: str = "moving_square",
) -> Path:
    """Write a deterministic H.264 clip (container chosen from the suffix, e.g. ``.mp4``).

    ``size`` is (width, height), both even. Patterns:

    * ``moving_square``: a seeded gradient with a coloured square bouncing across it;
    * ``noise``: fresh seeded random pixels every frame (large, hard to compress);
    * ``static``: the gradient only (every frame identical).

    Keyframes every ``gop`` frames exactly (no scene-cut keyframes, no B-frames), so
    ``frame.key_frame`` is true at t = 0, gop/fps, 2*gop/fps, ... Same arguments give the same
    decoded pixels. Returns ``Path(path)``.
    """
    if pattern not in PATTERNS:
        raise ValueError(f"unknown pattern {pattern!r}; expected one of {PATTERNS}")
    width, height = size
    if width % 2 or height % 2:
        raise ValueError(f"size must be even, got {size}")
    n_frames = max(1, round(seconds * fps))
    rng = np.random.default_rng(seed)
    base = _background(width, height, rng)
    colour = rng.integers(0, 256, size=3, dtype=np.int64).astype(np.uint8)
    side = max(8, min(width, height) // 5)
    x, y = int(rng.integers(0, width - side)), int(rng.integers(0, height - side))
    dx, dy = (
        int(rng.choice([-1, 1])) * max(1, width // 80),
        int(rng.choice([-1, 1])) * max(1, height // 80),
    )

    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(out), "w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = {
            "preset": "veryfast",
            "g": str(gop),
            "keyint_min": str(gop),
            "sc_threshold": "0",
            "bf": "0",
        }
        frame_img = base.copy()
        for i in range(n_frames):
            if pattern == "moving_square":
                np.copyto(frame_img, base)
                frame_img[y : y + side, x : x + side] = colour
                x += dx
                y += dy
                if not 0 <= x <= width - side:
                    dx = -dx
                    x = min(max(x, 0), width - side)
                if not 0 <= y <= height - side:
                    dy = -dy
                    y = min(max(y, 0), height - side)
            elif pattern == "noise":
                frame_img = rng.integers(0, 256, size=(height, width, 3), dtype=np.uint8)
            frame = av.VideoFrame.from_ndarray(frame_img, format="rgb24")
            frame.pts = i
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return out
