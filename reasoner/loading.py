"""Load the reasoner (projector MLP + Qwen2 LLM + tokenizer) from a VideoChat-Flash directory.

The directory is an official checkpoint unchanged (spec §6): `config.json`, `model.safetensors` or
shards listed by `model.safetensors.index.json`, and the Qwen2 tokenizer files. Only the tensors
the reasoner needs are read (`model.mm_projector.*`, the LLM and `lm_head`); the vision tower's
~290 M parameters (`model.vision_tower.*`) are never touched, because the encoder runs elsewhere.
Modules are built on the meta device and filled with the checkpoint tensors (`assign=True`), so a
7B model never exists twice in memory.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from torch import Tensor

from reasoner.modeling_qwen2_flash import (
    AttnImpl,
    DropConfig,
    DropMode,
    Qwen2FlashConfig,
    Qwen2FlashForCausalLM,
)
from reasoner.projector import CHECKPOINT_PREFIX as PROJECTOR_PREFIX
from reasoner.projector import MMProjector

log = logging.getLogger(__name__)

VISION_PREFIX = "model.vision_tower."
SINGLE_FILE = "model.safetensors"
INDEX_FILE = "model.safetensors.index.json"
DTYPES: dict[str, torch.dtype] = {
    "fp32": torch.float32,
    "float32": torch.float32,
    "fp16": torch.float16,
    "float16": torch.float16,
    "bf16": torch.bfloat16,
    "bfloat16": torch.bfloat16,
}
# Reference defaults when mm_llm_compress is on but a field is absent (spec §5.1).
_MODES: dict[str, DropMode] = {m: m for m in ("uniform", "attention", "uniform0_attention")}
_REF_TYPE, _REF_LAYERS, _REF_RATIOS = "attention", (8, 16, 24), (1.0, 0.5, 0.25, 0.125)


class CheckpointError(ValueError):
    """The directory does not hold what the reasoner needs; the message names the keys."""


@dataclass
class LoadedReasoner:
    llm: Qwen2FlashForCausalLM
    projector: MMProjector
    tokenizer: Any  # a transformers Qwen2 tokenizer, or None when not requested
    config: dict[str, Any]  # the raw config.json


def qwen2_config_from_dict(
    cfg: Mapping[str, Any], attn_impl: AttnImpl = "sdpa"
) -> Qwen2FlashConfig:
    """Qwen2 numbers from config.json. `rope_scaling` is ignored, as the reference decoder does."""
    if cfg.get("rope_scaling"):
        log.warning(
            "config.json rope_scaling=%s ignored (reference ignores it)", cfg["rope_scaling"]
        )
    heads = int(cfg["num_attention_heads"])
    hidden = int(cfg["hidden_size"])
    if cfg.get("head_dim") not in (None, hidden // heads):
        raise CheckpointError(f"head_dim {cfg['head_dim']} != hidden_size/heads {hidden // heads}")
    theta = cfg.get("rope_theta") or (cfg.get("rope_parameters") or {}).get("rope_theta") or 1e4
    return Qwen2FlashConfig(
        vocab_size=int(cfg["vocab_size"]),
        hidden_size=hidden,
        intermediate_size=int(cfg["intermediate_size"]),
        num_hidden_layers=int(cfg["num_hidden_layers"]),
        num_attention_heads=heads,
        num_key_value_heads=int(cfg.get("num_key_value_heads") or heads),
        rms_norm_eps=float(cfg.get("rms_norm_eps", 1e-6)),
        rope_theta=float(theta),
        attn_impl=attn_impl,
    )


def drop_config_from_dict(cfg: Mapping[str, Any]) -> DropConfig:
    """Dropping as the checkpoint's config says: off unless `mm_llm_compress` is true."""
    if not cfg.get("mm_llm_compress", False):
        return DropConfig(mode="none")
    mode = cfg.get("llm_compress_type") or _REF_TYPE
    if mode not in _MODES:
        raise CheckpointError(f"llm_compress_type {mode!r} is not supported (GH-only or unknown)")
    layers = tuple(int(x) for x in cfg.get("llm_compress_layer_list") or _REF_LAYERS)
    ratios = tuple(float(x) for x in cfg.get("llm_image_token_ratio_list") or _REF_RATIOS)
    return DropConfig(mode=_MODES[mode], layers=layers, ratios=ratios)


def resolve_dtype(dtype: torch.dtype | str) -> torch.dtype:
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype not in DTYPES:
        raise ValueError(f"dtype {dtype!r} not one of {sorted(DTYPES)}")
    return DTYPES[dtype]


def checkpoint_files(directory: Path) -> dict[str, Path]:
    """Tensor name -> safetensors file, from the index (sharded) or the single file."""
    index = directory / INDEX_FILE
    if index.is_file():
        weight_map = json.loads(index.read_text())["weight_map"]
        return {name: directory / file for name, file in weight_map.items()}
    single = directory / SINGLE_FILE
    if not single.is_file():
        raise CheckpointError(f"neither {INDEX_FILE} nor {SINGLE_FILE} in {directory}")
    with safe_open(str(single), framework="pt") as f:
        return {name: single for name in f.keys()}  # noqa: SIM118 - safe_open has no __iter__


def _names(keys: Iterable[str], limit: int = 20) -> str:
    keys = sorted(keys)
    more = f" ... and {len(keys) - limit} more" if len(keys) > limit else ""
    return ", ".join(keys[:limit]) + more


def read_tensors(
    files: Mapping[str, Path], expected: Mapping[str, torch.Size]
) -> dict[str, Tensor]:
    """Read exactly the `expected` names (shape-checked), grouped by file, nothing else."""
    by_file: dict[Path, list[str]] = {}
    for name in expected:
        by_file.setdefault(files[name], []).append(name)
    out: dict[str, Tensor] = {}
    for path, names in by_file.items():
        with safe_open(str(path), framework="pt") as f:
            for name in names:
                t = f.get_tensor(name)
                if t.shape != expected[name]:
                    raise CheckpointError(
                        f"{name}: checkpoint shape {tuple(t.shape)} != model "
                        f"{tuple(expected[name])}"
                    )
                out[name] = t
    return out


def load_reasoner(
    directory: str | Path,
    *,
    dtype: torch.dtype | str = "bf16",
    device: str | torch.device = "cpu",
    drop: DropConfig | None = None,
    attn_impl: AttnImpl = "sdpa",
    load_tokenizer: bool = True,
) -> LoadedReasoner:
    """Build and fill the projector and LLM; `drop=None` takes dropping from config.json.

    `lm_head.weight` is loaded when the checkpoint has it (the 2B stores its own even though its
    base model ties embeddings) and tied to `embed_tokens` only when absent.
    """
    directory = Path(directory)
    cfg: dict[str, Any] = json.loads((directory / "config.json").read_text())
    torch_dtype, dev = resolve_dtype(dtype), torch.device(device)
    qcfg = qwen2_config_from_dict(cfg, attn_impl)
    with torch.device("meta"):
        llm = Qwen2FlashForCausalLM(qcfg, drop if drop is not None else drop_config_from_dict(cfg))
        projector = MMProjector(int(cfg.get("mm_hidden_size", 1024)), qcfg.hidden_size)

    files = checkpoint_files(directory)
    wanted = {k for k in files if not k.startswith(VISION_PREFIX)}
    shapes = {k: v.shape for k, v in llm.state_dict().items()}
    shapes |= {PROJECTOR_PREFIX + k: v.shape for k, v in projector.state_dict().items()}
    tied = "lm_head.weight" not in wanted
    missing = set(shapes) - wanted - ({"lm_head.weight"} if tied else set())
    unexpected = wanted - set(shapes)
    if missing or unexpected:
        parts = [f"missing keys: {_names(missing)}"] if missing else []
        parts += [f"unexpected keys: {_names(unexpected)}"] if unexpected else []
        raise CheckpointError(f"{directory}: " + "; ".join(parts))
    if tied:
        del shapes["lm_head.weight"]
        log.info("%s has no lm_head.weight; tying it to model.embed_tokens.weight", directory)

    tensors = read_tensors(files, shapes)
    tensors = {k: v.to(device=dev, dtype=torch_dtype) for k, v in tensors.items()}
    n = len(PROJECTOR_PREFIX)
    proj_sd = {k[n:]: v for k, v in tensors.items() if k.startswith(PROJECTOR_PREFIX)}
    llm_sd = {k: v for k, v in tensors.items() if not k.startswith(PROJECTOR_PREFIX)}
    projector.load_state_dict(proj_sd, strict=True, assign=True)
    llm.load_state_dict(llm_sd, strict=not tied, assign=True)
    if tied:
        llm.lm_head.weight = llm.model.embed_tokens.weight
    for module in (llm, projector):
        module.requires_grad_(False).eval()
        stray = [name for name, p in module.named_parameters() if p.is_meta]
        if stray:
            raise CheckpointError(f"parameters left unloaded: {_names(stray)}")

    tokenizer = load_tokenizer_from(directory) if load_tokenizer else None
    return LoadedReasoner(llm, projector, tokenizer, cfg)


def load_tokenizer_from(directory: str | Path) -> Any:
    """The checkpoint's own tokenizer files, local only (nothing is fetched from a hub)."""
    from transformers import Qwen2Tokenizer

    # Named class, not AutoTokenizer: the latter also parses config.json, whose model_type
    # (videochat_flash_qwen) transformers does not know; every checkpoint ships Qwen2's tokenizer.
    return Qwen2Tokenizer.from_pretrained(str(directory), local_files_only=True)
