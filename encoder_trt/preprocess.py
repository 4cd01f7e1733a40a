"""Frame preprocessing identical to the reference `UMTImageProcessor` (spec §1.5).

The reference squashes every RGB uint8 frame to exactly S×S with PIL's antialiased bicubic filter
(aspect ratio not kept, no crop), rescales by 1/255 and normalises with the ImageNet mean/std,
channels first: (T, 3, S, S) float32.

Who does what in FlashWatch:
  * **ingest** calls `resize_frame(rgb, S)` on each decoded frame, then JPEG-encodes the S×S
    uint8 result onto the bus (small messages; the resize is the expensive, lossy-free step the
    reference does on uint8, so doing it before JPEG keeps the encoder input identical up to
    JPEG loss).
  * **the encoder worker** calls `decode_jpeg(...)` on each frame and `normalise(frames)` on the
    stacked (T, S, S, 3) uint8 array; it never resizes.
`preprocess_frames` does both for offline use and for parity tests against the reference.
Importing this module does not import torch (ingest processes need only the uint8 helpers).
"""

from __future__ import annotations

import io
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt
from PIL import Image

if TYPE_CHECKING:  # torch is imported lazily: ingest uses only the uint8 helpers
    import torch

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
RESCALE = 1 / 255

Uint8Array = npt.NDArray[np.uint8]


def resize_frame(rgb: Uint8Array, size: int) -> Uint8Array:
    """(H, W, 3) uint8 RGB -> (size, size, 3) uint8 with PIL BICUBIC, exactly as the reference."""
    if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"expected (H, W, 3) uint8 RGB, got {rgb.shape} {rgb.dtype}")
    image = Image.fromarray(rgb, mode="RGB")
    if image.size != (size, size):
        image = image.resize((size, size), Image.Resampling.BICUBIC)
    return np.asarray(image, dtype=np.uint8)


def normalise(frames: Uint8Array | torch.Tensor) -> torch.Tensor:
    """(T, S, S, 3) uint8 -> (T, 3, S, S) float32 normalised pixels.

    Arithmetic follows transformers' `rescale` (float64 multiply, cast to float32) then
    `normalize` (float32 subtract and divide) so results are bit-identical to the reference.
    """
    import torch

    arr = frames.numpy() if isinstance(frames, torch.Tensor) else np.asarray(frames)
    if arr.dtype != np.uint8 or arr.ndim != 4 or arr.shape[-1] != 3:
        raise ValueError(f"expected (T, S, S, 3) uint8 frames, got {arr.shape} {arr.dtype}")
    x = (arr.astype(np.float64) * RESCALE).astype(np.float32)  # (T, S, S, 3)
    mean = np.asarray(IMAGENET_MEAN, dtype=np.float32)
    std = np.asarray(IMAGENET_STD, dtype=np.float32)
    x = (x - mean) / std  # (T, S, S, 3) float32
    return torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))  # (T, 3, S, S)


def preprocess_frames(frames: list[Uint8Array] | Uint8Array, size: int) -> torch.Tensor:
    """Reference preprocessing of T RGB uint8 frames of any size -> (T, 3, S, S) float32."""
    resized = np.stack([resize_frame(np.asarray(f), size) for f in frames])  # (T, S, S, 3)
    return normalise(resized)


def encode_jpeg(rgb: Uint8Array, quality: int = 90) -> bytes:
    """(S, S, 3) uint8 -> JPEG bytes (what ingest puts on the bus after `resize_frame`).

    Full-resolution chroma (4:4:4), not JPEG's usual 4:2:0: the frame is already at the model's
    input size, where halving the colour resolution blurs the colour of small objects, and
    colour is what rules ask about ("a red car"). At 64 px it dropped the tiny model's P(yes)
    for a parked red car from 0.6-0.8 to 0.1-0.2 (BENCHMARKS.md, stop 15); the bytes grow
    11-14% (64-448 px synthetic frames, quality 90)."""
    buf = io.BytesIO()
    Image.fromarray(rgb, mode="RGB").save(buf, format="JPEG", quality=quality, subsampling=0)
    return buf.getvalue()


def jpeg_round_trip(rgb: Uint8Array, quality: int = 90) -> Uint8Array:
    """What the encoder sees of a frame ingest sent: for evaluating on the product's path."""
    return decode_jpeg(encode_jpeg(rgb, quality))


def decode_jpeg(data: bytes, size: int | None = None) -> Uint8Array:
    """JPEG bytes -> (H, W, 3) uint8 RGB; with `size`, refuse frames that are not size×size.

    Raises ValueError for undecodable data so the worker can dead-letter the clip.
    """
    try:
        with Image.open(io.BytesIO(data)) as image:
            rgb = np.asarray(image.convert("RGB"), dtype=np.uint8)
    except (OSError, Image.DecompressionBombError) as exc:
        raise ValueError(f"undecodable JPEG ({len(data)} bytes): {exc}") from exc
    if size is not None and rgb.shape[:2] != (size, size):
        raise ValueError(f"frame is {rgb.shape[1]}x{rgb.shape[0]}, expected {size}x{size}")
    return rgb
