"""Frame conversion for the bus: encoder-input JPEGs and thumbnails.

`encoder_jpeg` squashes an RGB frame to exactly S×S with PIL's antialiased bicubic filter
(aspect not kept, no crop), which is what the reference `UMTImageProcessor` does before
normalising (reference §1.5), then JPEG-encodes it. It mirrors
`encoder_trt.preprocess.resize_frame`; ingest does not import that module because it pulls
in torch, and ingest must stay a light CPU process. A unit test checks the two agree.

Resizing before JPEG means the encoder input differs from the reference only by JPEG loss,
and a clip of four 224² frames stays around 100 kB on the bus.
"""

from __future__ import annotations

import io

import numpy as np
import numpy.typing as npt
from PIL import Image

Uint8Array = npt.NDArray[np.uint8]


def resize_square(rgb: Uint8Array, size: int) -> Uint8Array:
    """(H, W, 3) uint8 RGB -> (size, size, 3) uint8, PIL BICUBIC squash like the reference."""
    if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"expected (H, W, 3) uint8 RGB, got {rgb.shape} {rgb.dtype}")
    image = Image.fromarray(rgb, mode="RGB")
    if image.size != (size, size):
        image = image.resize((size, size), Image.Resampling.BICUBIC)
    return np.asarray(image, dtype=np.uint8)


def jpeg_bytes(rgb: Uint8Array, quality: int) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(rgb, mode="RGB").save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def encoder_jpeg(rgb: Uint8Array, size: int, quality: int = 90) -> bytes:
    """The bytes of one `Clip.frames` entry: S×S RGB JPEG."""
    return jpeg_bytes(resize_square(rgb, size), quality)


def thumbnail_jpeg(rgb: Uint8Array, width: int, quality: int = 75) -> bytes:
    """A small JPEG at the frame's own aspect ratio, `width` pixels wide (never upscaled)."""
    height_in, width_in = rgb.shape[0], rgb.shape[1]
    width = min(width, width_in)
    height = max(1, round(height_in * width / width_in))
    image = Image.fromarray(rgb, mode="RGB")
    if (width, height) != (width_in, height_in):
        image = image.resize((width, height), Image.Resampling.BILINEAR)
    buf = io.BytesIO()
    image.save(buf, format="JPEG", quality=quality)
    return buf.getvalue()
