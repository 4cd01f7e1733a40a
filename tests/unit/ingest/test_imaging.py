"""Encoder-input JPEGs match the reference resize; thumbnails keep the aspect ratio."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from ingest.imaging import encoder_jpeg, resize_square, thumbnail_jpeg


def frame(h: int = 240, w: int = 320, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(h, w, 3), dtype=np.uint8)


def test_resize_is_an_exact_bicubic_squash() -> None:
    rgb = frame()
    out = resize_square(rgb, 224)
    assert out.shape == (224, 224, 3) and out.dtype == np.uint8
    ref = np.asarray(Image.fromarray(rgb).resize((224, 224), Image.Resampling.BICUBIC))
    assert np.array_equal(out, ref)


def test_ingest_imaging_does_not_load_torch() -> None:
    """Ingest shares the encoder's resize but must stay a light process without torch."""
    import subprocess
    import sys

    code = "import sys, ingest.imaging; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_encoder_jpeg_is_s_by_s_rgb() -> None:
    from PIL import JpegImagePlugin

    data = encoder_jpeg(frame(), 448, quality=90)
    with Image.open(io.BytesIO(data)) as im:
        assert im.format == "JPEG" and im.mode == "RGB" and im.size == (448, 448)
        assert JpegImagePlugin.get_sampling(im) == 0  # 4:4:4: colour of small objects kept


def test_thumbnail_keeps_aspect_and_never_upscales() -> None:
    with Image.open(io.BytesIO(thumbnail_jpeg(frame(1080, 1920), 320))) as im:
        assert im.size == (320, 180)
    with Image.open(io.BytesIO(thumbnail_jpeg(frame(120, 160), 320))) as im:
        assert im.size == (160, 120)


def test_rejects_non_rgb_input() -> None:
    with pytest.raises(ValueError, match="uint8 RGB"):
        resize_square(np.zeros((10, 10), dtype=np.uint8), 224)
