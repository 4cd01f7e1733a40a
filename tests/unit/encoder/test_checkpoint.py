"""Checkpoint loading from a fake VideoChat-Flash directory (spec §1.1, §6)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from encoder_trt.checkpoint import (
    ENCODER_PREFIX,
    CheckpointError,
    image_size_for,
    load_clip_encoder,
    load_umt_encoder,
)
from encoder_trt.modeling_umt import UMTConfig
from encoder_trt.testing import FAKE_OTHER_KEYS, random_encoder_state, write_fake_checkpoint

# 224 px, patch 16 keeps the official 14x14 grid; width/depth are tiny.
SMALL = UMTConfig(embed_dim=32, depth=2, num_heads=2)


@pytest.mark.parametrize(
    ("tower", "size"),
    [("umt-large", 224), ("umt-hd-large", 448), ("OpenGVLab/umt-hd-large", 448), ("umt", 224)],
)
def test_image_size_from_tower_name(tower: str, size: int) -> None:
    assert image_size_for(tower) == size


def test_non_umt_tower_rejected() -> None:
    with pytest.raises(CheckpointError, match="internvideo2"):
        image_size_for("internvideo2")


@pytest.mark.parametrize("sharded", [False, True])
def test_round_trip(tmp_path: Path, sharded: bool) -> None:
    written = write_fake_checkpoint(tmp_path, SMALL, sharded=sharded, dtype=torch.bfloat16)
    model, report = load_umt_encoder(tmp_path, base_config=UMTConfig(num_heads=2))
    assert model.config.depth == 2
    assert model.config.embed_dim == 32
    assert model.config.image_size == 224
    assert report.stored_dtypes == {torch.bfloat16}
    loaded = model.state_dict()
    assert set(loaded) == set(written)
    for key, value in written.items():
        torch.testing.assert_close(loaded[key], value.float(), rtol=0, atol=0)
    # only encoder tensors were read; no LLM / projector tensor was touched
    assert sorted(report.keys_read) == sorted(ENCODER_PREFIX + k for k in written)
    assert not set(report.keys_read) & set(FAKE_OTHER_KEYS)
    if sharded:  # the LLM-only shard is never opened
        assert report.files_opened == [
            "model-00001-of-00003.safetensors",
            "model-00002-of-00003.safetensors",
        ]
    # position tables were rebuilt after materialising from the meta device
    assert torch.isfinite(model.pos_embed).all()
    assert model.pos_embed.shape == (784, 32)


def test_448_selection_and_forward(tmp_path: Path) -> None:
    write_fake_checkpoint(tmp_path, SMALL, mm_vision_tower="umt-hd-large")
    clip, report = load_clip_encoder(tmp_path, base_config=UMTConfig(num_heads=2))
    assert report.image_size == 448
    assert clip.config.image_size == 448
    assert clip.schedule == [1568, 784, 392, 196, 98, 34]


def test_loaded_model_matches_direct_model(tmp_path: Path) -> None:
    state = random_encoder_state(SMALL, seed=5)
    write_fake_checkpoint(tmp_path, SMALL, state=state, dtype=torch.float32)
    clip, _ = load_clip_encoder(tmp_path, base_config=UMTConfig(num_heads=2))
    from encoder_trt.modeling_umt import UMTClipEncoder

    direct = UMTClipEncoder(SMALL).eval()
    direct.encoder.load_state_dict(state)
    x = torch.randn(1, 4, 3, 224, 224)
    with torch.no_grad():
        torch.testing.assert_close(clip(x), direct(x), rtol=0, atol=0)


def test_missing_key_named(tmp_path: Path) -> None:
    state = random_encoder_state(SMALL)
    del state["blocks.1.attn.v_bias"]
    write_fake_checkpoint(tmp_path, SMALL, state=state)
    with pytest.raises(CheckpointError, match=r"missing keys: .*blocks\.1\.attn\.v_bias"):
        load_umt_encoder(tmp_path, base_config=UMTConfig(num_heads=2))


def test_renamed_key_named(tmp_path: Path) -> None:
    state = random_encoder_state(SMALL)
    state["norm.weight"] = state.pop("vision_layernorm.weight")  # UMT's pre-rename final norm
    write_fake_checkpoint(tmp_path, SMALL, state=state)
    with pytest.raises(CheckpointError) as info:
        load_umt_encoder(tmp_path, base_config=UMTConfig(num_heads=2))
    message = str(info.value)
    assert f"missing keys: {ENCODER_PREFIX}vision_layernorm.weight" in message
    assert f"unexpected keys: {ENCODER_PREFIX}norm.weight" in message


def test_unexpected_extra_block_and_bias_named(tmp_path: Path) -> None:
    state = random_encoder_state(SMALL)
    state["blocks.0.attn.qkv.bias"] = torch.zeros(96)
    write_fake_checkpoint(tmp_path, SMALL, state=state)
    with pytest.raises(CheckpointError, match=r"unexpected keys: .*blocks\.0\.attn\.qkv\.bias"):
        load_umt_encoder(tmp_path, base_config=UMTConfig(num_heads=2))


def test_shape_mismatch_named(tmp_path: Path) -> None:
    state = random_encoder_state(SMALL)
    state["blocks.1.mlp.fc2.bias"] = torch.zeros(31)
    write_fake_checkpoint(tmp_path, SMALL, state=state)
    with pytest.raises(CheckpointError, match=r"blocks\.1\.mlp\.fc2\.bias: checkpoint \(31,\)"):
        load_umt_encoder(tmp_path, base_config=UMTConfig(num_heads=2))


def test_no_weights_file(tmp_path: Path) -> None:
    write_fake_checkpoint(tmp_path, SMALL)
    (tmp_path / "model.safetensors").unlink()
    with pytest.raises(CheckpointError, match=r"model\.safetensors\.index\.json"):
        load_umt_encoder(tmp_path)


def test_missing_config_and_tower_field(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match=r"config\.json"):
        load_umt_encoder(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "qwen2"}))
    with pytest.raises(CheckpointError, match="mm_vision_tower"):
        load_umt_encoder(tmp_path)


def test_dtype_and_depth_inferred(tmp_path: Path) -> None:
    cfg = UMTConfig(embed_dim=32, depth=3, num_heads=2, mlp_ratio=2.0)
    write_fake_checkpoint(tmp_path, cfg)
    model, _ = load_umt_encoder(tmp_path, dtype=torch.bfloat16, base_config=UMTConfig(num_heads=2))
    assert model.config.depth == 3
    assert model.config.mlp_ratio == 2.0
    assert model.blocks[0].mlp.fc1.weight.dtype == torch.bfloat16


def test_umt_l_depth_checked_against_select_layer(tmp_path: Path) -> None:
    """A UMT-L-width checkpoint with a whole block missing is refused (23 blocks for -2)."""
    cfg = UMTConfig(image_size=32, embed_dim=1024, depth=2, mlp_ratio=0.0625)  # small MLP
    write_fake_checkpoint(tmp_path, cfg, dtype=torch.float16)
    with pytest.raises(CheckpointError, match=r"mm_vision_select_layer=-2 needs 23 blocks"):
        load_umt_encoder(tmp_path)
