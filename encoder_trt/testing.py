"""Test helpers: random weights and fake VideoChat-Flash checkpoint directories.

Used by the encoder's unit tests and by other components' tests (worker, memory) that need a small
but real encoder without the multi-GB official weights.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

from encoder_trt.checkpoint import ENCODER_PREFIX, INDEX_FILE, SINGLE_FILE
from encoder_trt.modeling_umt import UMTConfig, UMTEncoder

# Names of the LLM / projector tensors a real checkpoint holds next to the encoder; the fake
# directories include small ones so tests can prove the loader never reads them.
FAKE_OTHER_KEYS: dict[str, tuple[int, ...]] = {
    "model.embed_tokens.weight": (32, 16),
    "model.layers.0.self_attn.q_proj.weight": (16, 16),
    "model.norm.weight": (16,),
    "model.mm_projector.mlp.0.weight": (16, 8),
    "lm_head.weight": (32, 16),
}


def tiny_config(**overrides: object) -> UMTConfig:
    """A small UMT that still exercises every code path (96 px: 4*36 = 144 tokens, ToMe [72, 8])."""
    fields: dict[str, object] = {
        "image_size": 96,
        "embed_dim": 64,
        "depth": 2,
        "num_heads": 4,
        "pos_base_grid": 3,
    }
    fields.update(overrides)
    return UMTConfig(**fields)  # type: ignore[arg-type]


def randomize_(module: nn.Module, seed: int = 0, std: float = 0.2) -> nn.Module:
    """Fill every parameter with seeded noise (biases and LayerNorms included), in place.

    Default init leaves q_bias/v_bias at zero and LayerNorms at identity, which would hide bugs.
    """
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            noise = torch.randn(p.shape, generator=gen) * std
            is_ln_scale = "norm" in name and name.endswith("weight")
            p.copy_(noise + 1.0 if is_ln_scale else noise)
    return module


def random_encoder_state(config: UMTConfig, seed: int = 0) -> dict[str, torch.Tensor]:
    """Seeded random encoder weights with the checkpoint's key names (prefix stripped)."""
    torch.manual_seed(seed)
    model = randomize_(UMTEncoder(config), seed)
    return {k: v.clone() for k, v in model.state_dict().items()}


def write_fake_checkpoint(
    ckpt_dir: str | Path,
    config: UMTConfig,
    *,
    mm_vision_tower: str = "umt-large",
    sharded: bool = False,
    seed: int = 0,
    dtype: torch.dtype = torch.bfloat16,
    state: dict[str, torch.Tensor] | None = None,
) -> dict[str, torch.Tensor]:
    """Write config.json + safetensors in the official layout; returns the encoder state written.

    `state` (unprefixed keys) overrides the random weights, e.g. to drop or rename a key.
    With `sharded`, encoder tensors are split over two shards and the fake LLM tensors sit in
    both a shared shard and one of their own, as in real multi-shard checkpoints.
    """
    from safetensors.torch import save_file

    ckpt_dir = Path(ckpt_dir)
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    enc = state if state is not None else random_encoder_state(config, seed)
    enc = {k: v.to(dtype).contiguous() for k, v in enc.items()}
    gen = torch.Generator().manual_seed(seed + 1)
    other = {k: torch.randn(s, generator=gen).to(dtype) for k, s in FAKE_OTHER_KEYS.items()}
    prefixed = {ENCODER_PREFIX + k: v for k, v in enc.items()}

    cfg = {
        "architectures": ["VideoChatFlashQwenForCausalLM"],
        "model_type": "videochat_flash_qwen",
        "mm_vision_tower": mm_vision_tower,
        "mm_vision_select_layer": -2,
        "mm_hidden_size": config.embed_dim,
        "mm_projector_type": "tome16_mlp_hd64",
        "mm_local_num_frames": config.num_frames,
    }
    defaults = UMTConfig()
    overrides = {
        key: getattr(config, key)
        for key in (
            "image_size",
            "num_heads",
            "pos_base_grid",
            "mlp_ratio",
            "ln_eps",
            "final_ln_eps",
        )
        if getattr(config, key) != getattr(defaults, key)
    }
    if overrides:
        cfg["fw_vision_config"] = overrides
    (ckpt_dir / "config.json").write_text(json.dumps(cfg, indent=2))

    if not sharded:
        save_file({**prefixed, **other}, str(ckpt_dir / SINGLE_FILE), metadata={"format": "pt"})
        return enc
    keys = sorted(prefixed)
    half = len(keys) // 2
    other_keys = sorted(other)
    shards = {
        "model-00001-of-00003.safetensors": {k: prefixed[k] for k in keys[:half]}
        | {other_keys[0]: other[other_keys[0]]},
        "model-00002-of-00003.safetensors": {k: prefixed[k] for k in keys[half:]},
        "model-00003-of-00003.safetensors": {k: other[k] for k in other_keys[1:]},
    }
    weight_map: dict[str, str] = {}
    for fname, tensors in shards.items():
        save_file(tensors, str(ckpt_dir / fname), metadata={"format": "pt"})
        weight_map.update({k: fname for k in tensors})
    index = {"metadata": {"total_size": 0}, "weight_map": weight_map}
    (ckpt_dir / INDEX_FILE).write_text(json.dumps(index, indent=2))
    return enc
