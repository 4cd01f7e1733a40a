"""UMT-L model: position tables, attention paths, shapes, key names, param count (spec §1)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from encoder_trt.modeling_umt import (
    UMTClipEncoder,
    UMTConfig,
    UMTEncoder,
    build_pos_embed,
    count_parameters,
)
from encoder_trt.testing import randomize_, tiny_config


def test_pos_table_224_formula() -> None:
    table = build_pos_embed(UMTConfig(), 4).numpy()  # (784, 1024)
    assert table.shape == (784, 1024)
    for p in (0, 1, 195, 196, 14 * 3 + 5, 783):
        for j in (0, 1, 2, 3, 500, 511, 1022, 1023):
            angle = p / math.pow(10000.0, 2 * (j // 2) / 1024)
            value = math.sin(angle) if j % 2 == 0 else math.cos(angle)
            assert table[p, j] == np.float32(value), (p, j)
    # the whole table against a vectorised float64 computation
    pos = np.arange(784, dtype=np.float64)[:, None]
    j = np.arange(1024)
    angles = pos / np.power(10000.0, 2 * (j // 2) / 1024)
    direct = np.where(j % 2 == 0, np.sin(angles), np.cos(angles)).astype(np.float32)
    assert np.abs(direct - table).max() <= 3e-8


def test_pos_table_224_image_is_first_frame() -> None:
    torch.testing.assert_close(
        build_pos_embed(UMTConfig(), 1), build_pos_embed(UMTConfig(), 4)[:196]
    )


@pytest.mark.parametrize("frames", [4, 1])
def test_pos_table_448_is_per_frame_bicubic_of_224(frames: int) -> None:
    base = build_pos_embed(UMTConfig(), frames)  # (frames*196, 1024)
    grids = base.reshape(frames, 14, 14, 1024).permute(0, 3, 1, 2)  # (F, C, 14, 14)
    resized = []
    for f in range(frames):  # one frame at a time, as the spec states
        r = F.interpolate(grids[f : f + 1], size=(28, 28), mode="bicubic", align_corners=False)
        resized.append(r[0].permute(1, 2, 0).reshape(784, 1024))  # (784, C)
    expected = torch.cat(resized)
    got = build_pos_embed(UMTConfig(image_size=448), frames)
    assert got.shape == (frames * 784, 1024)
    torch.testing.assert_close(got, expected, rtol=0, atol=0)


def test_pos_embed_not_in_state_dict() -> None:
    model = UMTEncoder(tiny_config())
    keys = set(model.state_dict())
    assert not any("pos_embed" in k for k in keys)
    assert model.pos_embed.shape == (4 * 36, 64)


def test_state_dict_keys_match_checkpoint_names() -> None:
    with torch.device("meta"):
        model = UMTEncoder(UMTConfig())
    keys = set(model.state_dict())
    block = {
        "norm1.weight", "norm1.bias", "attn.q_bias", "attn.v_bias", "attn.qkv.weight",
        "attn.proj.weight", "attn.proj.bias", "norm2.weight", "norm2.bias",
        "mlp.fc1.weight", "mlp.fc1.bias", "mlp.fc2.weight", "mlp.fc2.bias",
    }  # fmt: skip
    expected = {"patch_embed.proj.weight", "patch_embed.proj.bias"}
    expected |= {"vision_layernorm.weight", "vision_layernorm.bias"}
    expected |= {f"blocks.{i}.{k}" for i in range(23) for k in block}
    assert keys == expected
    assert len(keys) == 303
    sd = model.state_dict()
    assert sd["patch_embed.proj.weight"].shape == (1024, 3, 1, 16, 16)
    assert sd["blocks.22.attn.qkv.weight"].shape == (3072, 1024)
    assert sd["blocks.0.mlp.fc1.weight"].shape == (4096, 1024)


def test_param_count_umt_l() -> None:
    for size in (224, 448):
        with torch.device("meta"):
            model = UMTEncoder(UMTConfig(image_size=size))
        assert count_parameters(model) == 290_479_104


def test_layernorm_eps() -> None:
    model = UMTEncoder(tiny_config())
    assert model.blocks[0].norm1.eps == 1e-6
    assert model.vision_layernorm.eps == 1e-12


@pytest.mark.parametrize("frames", [4, 1])
def test_eager_and_sdpa_agree(frames: int) -> None:
    cfg = tiny_config(image_size=128)  # 64 tokens per frame so still images are valid too
    sdpa = randomize_(UMTClipEncoder(cfg), seed=1).eval()
    eager = UMTClipEncoder(cfg.with_attention("eager")).eval()
    eager.load_state_dict(sdpa.state_dict())
    x = torch.randn(2, frames, 3, 128, 128, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        a, b = sdpa(x), eager(x)
        fa, fb = sdpa.encoder(x), eager.encoder(x)
    assert a.shape == (2, 64, 64)
    torch.testing.assert_close(fa, fb, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


def test_attention_is_joint_over_frames() -> None:
    """Changing frame 3's pixels must change frame 0's output tokens (no per-frame attention)."""
    cfg = tiny_config()
    model = randomize_(UMTEncoder(cfg), seed=2).eval()
    x = torch.randn(1, 4, 3, 96, 96)
    y = x.clone()
    y[:, 3] += 1.0
    with torch.no_grad():
        fx, fy = model(x), model(y)
    assert not torch.allclose(fx[:, :36], fy[:, :36])


def test_patch_token_order_is_frame_then_raster() -> None:
    """Token t*L + row*G + col sees only patch (t, row, col) in the patch embedding."""
    cfg = tiny_config()
    model = UMTEncoder(cfg).eval()
    x = torch.zeros(1, 4, 3, 96, 96)
    x[0, 2, :, 16:32, 48:64] = 1.0  # frame 2, row 1, col 3
    with torch.no_grad():
        base = model.patch_embed(torch.zeros_like(x))
        tokens = model.patch_embed(x)
    changed = (tokens - base).abs().sum(-1)[0].nonzero().flatten().tolist()
    assert changed == [2 * 36 + 1 * 6 + 3]


@pytest.mark.parametrize(("size", "tokens"), [(224, 784), (448, 3136)])
def test_real_resolutions_shapes(size: int, tokens: int) -> None:
    cfg = UMTConfig(image_size=size, embed_dim=32, depth=1, num_heads=2)
    model = UMTClipEncoder(cfg).eval()
    assert model.schedule == ([392, 196, 98, 34] if size == 224 else [1568, 784, 392, 196, 98, 34])
    assert model.encoder.pos_embed.shape == (tokens, 32)
    x = torch.randn(1, 4, 3, size, size)
    with torch.no_grad():
        feats = model.encoder(x)
        out = model(x)
    assert feats.shape == (1, tokens, 32)
    assert out.shape == (1, 64, 32)


def test_wrong_frame_count_rejected() -> None:
    model = UMTEncoder(tiny_config())
    with pytest.raises(ValueError, match="4 frames or 1 image, got 3"):
        model(torch.zeros(1, 3, 3, 96, 96))


def test_config_validation() -> None:
    with pytest.raises(ValueError, match="patch_size"):
        UMTConfig(image_size=100)
    with pytest.raises(ValueError, match="attn_implementation"):
        UMTConfig(attn_implementation="flash_v2")


def test_fp32_vs_bf16_cosine(capsys: pytest.CaptureFixture[str]) -> None:
    """Reported, loosely bounded: bf16 changes ToMe matches on near-ties (spec §2.2 numerics)."""
    cfg = tiny_config()
    model = randomize_(UMTClipEncoder(cfg), seed=3, std=0.05).eval()
    x = torch.randn(2, 4, 3, 96, 96, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        feats32 = model.encoder(x)
        feats16 = model.to(torch.bfloat16).encoder(x.bfloat16()).float()
    cos = F.cosine_similarity(feats32, feats16, dim=-1)
    with capsys.disabled():
        print(f"\n[encoder] fp32 vs bf16 token cosine: min {cos.min():.5f} mean {cos.mean():.5f}")
    assert cos.mean() > 0.99
