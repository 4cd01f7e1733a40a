"""Preprocessing equals the reference: PIL bicubic squash, /255, ImageNet mean/std (spec §1.5)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from encoder_trt.preprocess import (
    decode_jpeg,
    encode_jpeg,
    normalise,
    preprocess_frames,
    resize_frame,
)


def gradient_frame(h: int, w: int, phase: int) -> np.ndarray:
    """Deterministic non-trivial RGB content (no RNG)."""
    yy, xx = np.mgrid[0:h, 0:w]
    r = (xx * 255 // max(w - 1, 1) + phase) % 256
    g = (yy * 255 // max(h - 1, 1) + 3 * phase) % 256
    b = ((xx * yy) // 7 + 5 * phase) % 256
    return np.stack([r, g, b], axis=-1).astype(np.uint8)


def test_resize_is_pil_bicubic_squash() -> None:
    frame = gradient_frame(90, 160, 0)  # 16:9, squashed without crop
    got = resize_frame(frame, 64)
    expected = np.asarray(Image.fromarray(frame).resize((64, 64), Image.Resampling.BICUBIC))
    assert got.dtype == np.uint8 and got.shape == (64, 64, 3)
    assert np.array_equal(got, expected)


def test_numbers_against_manual_formula() -> None:
    frames = [gradient_frame(50, 70, p) for p in range(4)]
    got = preprocess_frames(frames, 32)
    assert got.shape == (4, 3, 32, 32) and got.dtype == torch.float32
    mean = np.array([0.485, 0.456, 0.406])
    std = np.array([0.229, 0.224, 0.225])
    for t, frame in enumerate(frames):
        resized = np.asarray(Image.fromarray(frame).resize((32, 32), Image.Resampling.BICUBIC))
        expected = ((resized / 255.0 - mean) / std).transpose(2, 0, 1)
        np.testing.assert_allclose(got[t].numpy(), expected, rtol=0, atol=1e-6)
    # a known pixel: value 255 in channel 0 -> (1 - 0.485) / 0.229
    white = normalise(np.full((1, 2, 2, 3), 255, dtype=np.uint8))
    assert white[0, 0, 0, 0].item() == pytest.approx((1 - 0.485) / 0.229, abs=1e-6)


def test_bit_identical_to_transformers_helpers() -> None:
    """The reference UMTImageProcessor chains exactly these transformers functions."""
    from transformers.image_transforms import normalize, rescale, resize
    from transformers.image_utils import ChannelDimension, PILImageResampling

    frames = [gradient_frame(61, 83, p) for p in range(4)]
    got = preprocess_frames(frames, 48).numpy()
    last = ChannelDimension.LAST
    for t, frame in enumerate(frames):
        x = resize(frame, (48, 48), resample=PILImageResampling.BICUBIC, data_format=last)
        x = rescale(x, 1 / 255, data_format=last)
        x = normalize(x, [0.485, 0.456, 0.406], [0.229, 0.224, 0.225], data_format=last)
        assert np.array_equal(got[t], x.transpose(2, 0, 1))


def test_jpeg_round_trip_and_errors() -> None:
    ramp = np.linspace(0, 255, 32, dtype=np.float64)
    frame = np.stack(np.broadcast_arrays(ramp[None, :], ramp[:, None], 128.0), -1)
    frame = frame.astype(np.uint8)  # smooth (32, 32, 3): JPEG error stays small
    decoded = decode_jpeg(encode_jpeg(frame, quality=95), size=32)
    assert decoded.shape == (32, 32, 3)
    assert np.abs(decoded.astype(int) - frame.astype(int)).mean() < 3
    with pytest.raises(ValueError, match="undecodable JPEG"):
        decode_jpeg(b"not a jpeg")
    with pytest.raises(ValueError, match="expected 64x64"):
        decode_jpeg(encode_jpeg(frame), size=64)


def test_input_validation() -> None:
    with pytest.raises(ValueError, match="uint8"):
        resize_frame(np.zeros((4, 4, 3), dtype=np.float32), 8)
    with pytest.raises(ValueError, match="uint8 frames"):
        normalise(np.zeros((4, 4, 3), dtype=np.uint8))
