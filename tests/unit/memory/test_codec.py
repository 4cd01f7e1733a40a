"""Stored precision: fp16 round trip, int8 per-token quantisation quality (issue 5 item 5)."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest

from memory.codec import cosine_rows, encode_tokens, quantize_int8, tokens_to_array
from memory.testing import postln_features

MIN_COSINE = 0.999


def _int8_vs_fp16(x: np.ndarray) -> np.ndarray:
    kw = {"camera_id": 1, "level": 0, "epoch": 0, "t": (0.0, 1.0, 2.0, 3.0)}
    ref = tokens_to_array(encode_tokens(x, "fp16", **kw))
    q = tokens_to_array(encode_tokens(x, "int8", **kw))
    return cosine_rows(q, ref)


def test_fp16_round_trip_within_half_precision() -> None:
    x = postln_features(np.random.default_rng(0))
    ct = encode_tokens(x, "fp16", camera_id=3, level=1, epoch=2, t=(1, 2, 3, 4))
    assert ct.dtype == "fp16" and ct.shape == (64, 1024) and len(ct.tokens) == 64 * 1024 * 2
    assert ct.scales is None
    np.testing.assert_allclose(tokens_to_array(ct), x, rtol=1e-3, atol=1e-3)


def test_int8_layout_matches_message_contract() -> None:
    x = postln_features(np.random.default_rng(1))
    ct = encode_tokens(x, "int8", camera_id=3, level=0, epoch=0, t=(1, 2, 3, 4))
    assert len(ct.tokens) == 64 * 1024 and ct.scales is not None and len(ct.scales) == 128
    q = np.frombuffer(ct.tokens, np.int8).reshape(64, 1024)
    scales = np.frombuffer(ct.scales, "<f2").astype(np.float32)
    assert np.abs(q).max() <= 127
    np.testing.assert_allclose(q * scales[:, None], tokens_to_array(ct))


def test_int8_cosine_on_postln_like_features() -> None:
    rng = np.random.default_rng(2)
    cos = np.concatenate([_int8_vs_fp16(postln_features(rng)) for _ in range(16)])
    print(f"\nint8 vs fp16, post-LN-like features (4 outlier dims ×8): min cosine {cos.min():.6f}")
    assert cos.min() >= MIN_COSINE


def test_int8_cosine_sweep_over_outlier_size() -> None:
    """Documents where per-token int8 stops meeting 0.999: 1 − cos ≈ absmax² / 387,000."""
    rng = np.random.default_rng(3)
    lines = []
    for dims, scale in ((4, 0.0), (4, 8.0), (4, 16.0), (4, 32.0), (1, 16.0), (1, 32.0)):
        x = postln_features(rng, outlier_channels=dims, outlier_scale=scale)
        cos = _int8_vs_fp16(x)
        absmax = np.abs(x).max(axis=1)
        predicted = 1 - absmax**2 / 387_000
        lines.append(
            f"{dims} outlier dims ×{scale:>4}: absmax {absmax.max():6.2f} min cos {cos.min():.6f}"
        )
        np.testing.assert_allclose(cos, predicted, atol=2e-4)
    print("\n" + "\n".join(lines))


@pytest.mark.skipif(
    importlib.util.find_spec("encoder_trt") is None, reason="encoder_trt not present"
)
def test_int8_cosine_on_tiny_random_umt_outputs() -> None:
    torch = pytest.importorskip("torch")
    from encoder_trt.modeling_umt import UMTClipEncoder
    from encoder_trt.testing import randomize_, tiny_config

    torch.manual_seed(0)
    cfg = tiny_config(embed_dim=1024, num_heads=16, depth=2)
    model = randomize_(UMTClipEncoder(cfg), seed=0).eval()
    pixels = torch.randn(4, cfg.num_frames, 3, cfg.image_size, cfg.image_size)
    with torch.no_grad():
        feats = model(pixels).float().numpy()  # (B, 64, C)
    cos = np.concatenate([_int8_vs_fp16(f) for f in feats])
    absmax = float(np.abs(feats).max())
    print(
        f"\nint8 vs fp16, tiny random UMT (C=1024): min cosine {cos.min():.6f}, absmax {absmax:.2f}"
    )
    assert feats.shape[1:] == (64, 1024)
    assert cos.min() >= MIN_COSINE


def test_zero_rows_and_bad_input() -> None:
    x = np.zeros((4, 8), np.float32)
    q, s = quantize_int8(x)
    assert not q.any() and not s.any()
    assert cosine_rows(x, x).tolist() == [1.0] * 4
    with pytest.raises(ValueError, match="NaN"):
        quantize_int8(np.full((2, 2), np.nan))
    with pytest.raises(ValueError, match="overflows fp16"):
        encode_tokens(np.full((2, 2), 1e6), "fp16", camera_id=0, level=0, epoch=0, t=(0, 1, 2, 3))
    with pytest.raises(ValueError, match="non-empty"):
        quantize_int8(np.zeros((0, 3)))
