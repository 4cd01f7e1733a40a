"""A complete random VideoChat-Flash checkpoint (encoder + projector + LLM + tokenizer).

The encoder and reasoner test helpers each write their own half; the end-to-end tests
need one directory that both loaders read, exactly as a real checkpoint is one directory.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from encoder_trt.checkpoint import ENCODER_PREFIX, SINGLE_FILE
from encoder_trt.testing import random_encoder_state, tiny_config
from reasoner.testing import write_tiny_checkpoint


def write_full_random_checkpoint(
    directory: Path, *, image_size: int = 96, hidden_size: int = 32, seed: int = 0
) -> Path:
    enc_cfg = tiny_config(image_size=image_size)
    write_tiny_checkpoint(directory, hidden_size=hidden_size, seed=seed, drop=None)
    path = directory / SINGLE_FILE
    tensors = {
        k: v for k, v in load_file(str(path)).items() if not k.startswith("model.vision_tower")
    }
    gen = torch.Generator().manual_seed(seed + 11)
    tensors["model.mm_projector.mlp.0.weight"] = (
        torch.randn(hidden_size, enc_cfg.embed_dim, generator=gen) * 0.1
    ).to(torch.bfloat16)
    for key, value in random_encoder_state(enc_cfg, seed).items():
        tensors[ENCODER_PREFIX + key] = value.to(torch.bfloat16).contiguous()
    save_file(tensors, str(path), metadata={"format": "pt"})
    cfg = json.loads((directory / "config.json").read_text())
    cfg |= {
        "mm_vision_tower": "umt-large",
        "mm_hidden_size": enc_cfg.embed_dim,
        "fw_vision_config": {
            "image_size": image_size,
            "num_heads": enc_cfg.num_heads,
            "pos_base_grid": enc_cfg.pos_base_grid,
        },
    }
    (directory / "config.json").write_text(json.dumps(cfg, indent=2))
    return directory
