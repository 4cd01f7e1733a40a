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


def test_resize_matches_the_encoder_preprocessing() -> None:
    preprocess = pytest.importorskip("encoder_trt.preprocess")
    for h, w in ((240, 320), (1080, 1920), (480, 270)):
        rgb = frame(h, w, seed=h)
        assert np.array_equal(resize_square(rgb, 224), preprocess.resize_frame(rgb, 224))


def test_encoder_jpeg_is_s_by_s_rgb() -> None:
    data = encoder_jpeg(frame(), 448, quality=90)
    with Image.open(io.BytesIO(data)) as im:
        assert im.format == "JPEG" and im.mode == "RGB" and im.size == (448, 448)


def test_thumbnail_keeps_aspect_and_never_upscales() -> None:
    with Image.open(io.BytesIO(thumbnail_jpeg(frame(1080, 1920), 320))) as im:
        assert im.size == (320, 180)
    with Image.open(io.BytesIO(thumbnail_jpeg(frame(120, 160), 320))) as im:
        assert im.size == (160, 120)


def test_rejects_non_rgb_input() -> None:
    with pytest.raises(ValueError, match="uint8 RGB"):
        resize_square(np.zeros((10, 10), dtype=np.uint8), 224)
