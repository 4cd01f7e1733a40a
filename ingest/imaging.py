"""Frame conversion for the bus: encoder-input JPEGs and thumbnails.

`encoder_jpeg` squashes an RGB frame to exactly S×S with PIL's antialiased bicubic filter
(aspect not kept, no crop), which is what the reference `UMTImageProcessor` does before
normalising (reference §1.5), then JPEG-encodes it. The resize is
`encoder_trt.preprocess.resize_frame` itself (one definition of the reference resize);
that module imports torch only inside the encoder-side functions, so ingest stays a light
CPU process (a unit test guards it).

Resizing before JPEG means the encoder input differs from the reference only by JPEG loss,
and a clip of four 224² frames stays around 100 kB on the bus.
"""

from __future__ import annotations

import io

import numpy as np
import numpy.typing as npt
from PIL import Image

from encoder_trt.preprocess import encode_jpeg
from encoder_trt.preprocess import resize_frame as resize_square

Uint8Array = npt.NDArray[np.uint8]


def encoder_jpeg(rgb: Uint8Array, size: int, quality: int = 90) -> bytes:
    """The bytes of one `Clip.frames` entry: S×S RGB JPEG with full-resolution chroma
    (`encode_jpeg` says why)."""
    return encode_jpeg(resize_square(rgb, size), quality)


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
