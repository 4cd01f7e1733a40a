"""Load the UMT vision tower from a local VideoChat-Flash checkpoint directory (spec §1.1, §6).

A directory holds `config.json` plus either `model.safetensors` or shards listed in
`model.safetensors.index.json`. Only tensors under `model.vision_tower.vision_tower.encoder.` are
read, through safetensors' memory-mapped `safe_open`, so the multi-GB LLM weights are never
touched. The key set must match the model exactly: missing or unexpected keys are errors that name
the keys, because a silently half-loaded encoder produces plausible-looking garbage tokens.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from encoder_trt.modeling_umt import UMTClipEncoder, UMTConfig, UMTEncoder

ENCODER_PREFIX = "model.vision_tower.vision_tower.encoder."
SINGLE_FILE = "model.safetensors"
INDEX_FILE = "model.safetensors.index.json"
UMT_L_WIDTH = 1024
UMT_L_NOMINAL_DEPTH = 24
_BLOCK_RE = re.compile(r"^blocks\.(\d+)\.")


class CheckpointError(ValueError):
    """The directory is not a loadable VideoChat-Flash checkpoint for this encoder."""


@dataclass
class LoadReport:
    """What the loader did: for logs and for tests proving the LLM was not read."""

    image_size: int
    files_opened: list[str] = field(default_factory=list)
    keys_read: list[str] = field(default_factory=list)
    stored_dtypes: set[torch.dtype] = field(default_factory=set)


def image_size_for(mm_vision_tower: str) -> int:
    """448 for `umt-hd*` towers, 224 for other `umt*` towers, as the reference builder."""
    if "umt-hd" in mm_vision_tower:
        return 448
    if "umt" in mm_vision_tower:
        return 224
    raise CheckpointError(
        f"mm_vision_tower {mm_vision_tower!r} is not a UMT tower ('umt-large' or 'umt-hd-large' "
        "expected); this encoder only supports VideoChat-Flash UMT checkpoints"
    )


VISION_OVERRIDES_KEY = "fw_vision_config"
# tome_groups: ToMe metric channel groups (16 of 64 channels for UMT-L, "hd64").
_OVERRIDABLE = {
    "image_size", "num_heads", "pos_base_grid", "mlp_ratio", "ln_eps", "final_ln_eps",
    "tome_groups",
}  # fmt: skip


def vision_overrides(cfg_json: dict[str, Any]) -> dict[str, Any]:
    """UMT settings that the tensors cannot reveal, for small (tiny/random) checkpoints.

    Official checkpoints have no `fw_vision_config`; their values follow the reference
    (head count 16, input size from `mm_vision_tower`). FlashWatch's own small models write
    this FlashWatch-only field into config.json so the same loader builds them exactly.
    """
    extra = cfg_json.get(VISION_OVERRIDES_KEY) or {}
    if not isinstance(extra, dict):
        raise CheckpointError(f"config.json {VISION_OVERRIDES_KEY} must be an object")
    unknown = sorted(set(extra) - _OVERRIDABLE)
    if unknown:
        raise CheckpointError(
            f"config.json {VISION_OVERRIDES_KEY} has unknown keys {unknown}; "
            f"allowed: {sorted(_OVERRIDABLE)}"
        )
    return dict(extra)


def checkpoint_image_size(ckpt_dir: Path) -> int:
    """The encoder input S of a checkpoint directory."""
    cfg_json = read_config_json(Path(ckpt_dir))
    extra = vision_overrides(cfg_json)
    return int(extra.get("image_size", image_size_for(str(cfg_json["mm_vision_tower"]))))


def read_config_json(ckpt_dir: Path) -> dict[str, Any]:
    path = ckpt_dir / "config.json"
    if not path.is_file():
        raise CheckpointError(f"{path} not found: not a VideoChat-Flash checkpoint directory")
    config: dict[str, Any] = json.loads(path.read_text())
    if "mm_vision_tower" not in config:
        raise CheckpointError(f"{path} has no 'mm_vision_tower' field")
    return config


def encoder_key_files(ckpt_dir: Path) -> dict[str, str]:
    """Map every encoder key (prefixed) to the safetensors file holding it, reading headers only."""
    from safetensors import safe_open

    index = ckpt_dir / INDEX_FILE
    if index.is_file():
        weight_map: dict[str, str] = json.loads(index.read_text())["weight_map"]
        return {k: f for k, f in weight_map.items() if k.startswith(ENCODER_PREFIX)}
    single = ckpt_dir / SINGLE_FILE
    if not single.is_file():
        raise CheckpointError(f"neither {SINGLE_FILE} nor {INDEX_FILE} in {ckpt_dir}")
    with safe_open(str(single), framework="pt") as f:
        return {k: SINGLE_FILE for k in f.keys() if k.startswith(ENCODER_PREFIX)}  # noqa: SIM118


def read_encoder_tensors(ckpt_dir: Path, report: LoadReport) -> dict[str, torch.Tensor]:
    """Read the encoder tensors (prefix stripped), one memory-mapped file at a time."""
    from safetensors import safe_open

    by_file: dict[str, list[str]] = {}
    for key, fname in encoder_key_files(ckpt_dir).items():
        by_file.setdefault(fname, []).append(key)
    if not by_file:
        raise CheckpointError(f"no '{ENCODER_PREFIX}*' tensors in {ckpt_dir}")
    tensors: dict[str, torch.Tensor] = {}
    for fname, keys in sorted(by_file.items()):
        report.files_opened.append(fname)
        with safe_open(str(ckpt_dir / fname), framework="pt") as f:
            for key in sorted(keys):
                tensors[key.removeprefix(ENCODER_PREFIX)] = f.get_tensor(key)
                report.keys_read.append(key)
    return tensors


def infer_config(tensors: dict[str, torch.Tensor], base: UMTConfig) -> UMTConfig:
    """Depth, width, patch size and MLP ratio from the tensors; the rest from `base`."""
    import dataclasses

    try:
        proj = tensors["patch_embed.proj.weight"]  # (C, 3, 1, P, P)
        fc1 = tensors["blocks.0.mlp.fc1.weight"]  # (C*ratio, C)
    except KeyError as exc:
        raise CheckpointError(
            f"missing key {exc.args[0]!r}; cannot infer the encoder shape"
        ) from exc
    blocks = {int(m.group(1)) for k in tensors if (m := _BLOCK_RE.match(k))}
    width = proj.shape[0]
    return dataclasses.replace(
        base,
        embed_dim=width,
        in_chans=proj.shape[1],
        patch_size=proj.shape[-1],
        depth=max(blocks) + 1,
        # Head count is not visible in the tensors: it comes from `base` (16 for UMT-L).
        num_heads=base.num_heads,
        mlp_ratio=fc1.shape[0] / width,
    )


def check_depth(config: UMTConfig, cfg_json: dict[str, Any]) -> None:
    """UMT-L (width 1024) is 24 blocks nominal; the checkpoint keeps 24 + select_layer + 1.

    Catches a checkpoint whose last block(s) were dropped entirely, which the key check alone
    cannot see because depth is inferred from the block indices present.
    """
    if config.embed_dim != UMT_L_WIDTH:
        return
    select = int(cfg_json.get("mm_vision_select_layer", -2))
    expected = UMT_L_NOMINAL_DEPTH + select + 1 if select < 0 else select + 1
    if config.depth != expected:
        raise CheckpointError(
            f"checkpoint has blocks 0..{config.depth - 1} but mm_vision_select_layer={select} "
            f"needs {expected} blocks (0..{expected - 1})"
        )


def check_keys(model: UMTEncoder, tensors: dict[str, torch.Tensor]) -> None:
    """Raise naming every missing / unexpected key and every shape mismatch."""
    expected = {k: v.shape for k, v in model.state_dict().items()}
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    wrong = sorted(
        f"{k}: checkpoint {tuple(tensors[k].shape)} vs model {tuple(expected[k])}"
        for k in set(expected) & set(tensors)
        if tuple(tensors[k].shape) != tuple(expected[k])
    )
    problems = []
    if missing:
        problems.append("missing keys: " + ", ".join(ENCODER_PREFIX + k for k in missing))
    if unexpected:
        problems.append("unexpected keys: " + ", ".join(ENCODER_PREFIX + k for k in unexpected))
    if wrong:
        problems.append("shape mismatches: " + "; ".join(wrong))
    if problems:
        raise CheckpointError("checkpoint does not match the UMT encoder: " + " | ".join(problems))


def load_umt_encoder(
    ckpt_dir: str | Path,
    *,
    dtype: torch.dtype = torch.float32,
    device: str | torch.device = "cpu",
    base_config: UMTConfig | None = None,
) -> tuple[UMTEncoder, LoadReport]:
    """Build the UMT encoder for `ckpt_dir` and load its weights strictly.

    The module is built on the meta device and materialised on `device` so the full-size model is
    never randomly initialised (saves seconds and a second 1.2 GB copy).
    """
    ckpt_dir = Path(ckpt_dir)
    cfg_json = read_config_json(ckpt_dir)
    extra = vision_overrides(cfg_json)
    image_size = int(extra.get("image_size", image_size_for(str(cfg_json["mm_vision_tower"]))))
    report = LoadReport(image_size=image_size)
    tensors = read_encoder_tensors(ckpt_dir, report)
    report.stored_dtypes = {t.dtype for t in tensors.values()}

    import dataclasses

    base = dataclasses.replace(
        base_config or UMTConfig(**extra),
        image_size=image_size,
        num_frames=int(cfg_json.get("mm_local_num_frames", 4)),
    )
    config = infer_config(tensors, base)
    check_depth(config, cfg_json)
    with torch.device("meta"):
        model = UMTEncoder(config)
    check_keys(model, tensors)
    model = model.to_empty(device=device)
    model.load_state_dict(tensors, strict=True)
    model.reset_position_tables()
    return model.to(dtype=dtype).eval(), report


def load_clip_encoder(
    ckpt_dir: str | Path,
    *,
    dtype: torch.dtype = torch.float32,
    device: str | torch.device = "cpu",
    base_config: UMTConfig | None = None,
) -> tuple[UMTClipEncoder, LoadReport]:
    """UMT + ToMe clip encoder with the checkpoint's vision tower weights."""
    encoder, report = load_umt_encoder(
        ckpt_dir, dtype=dtype, device=device, base_config=base_config
    )
    with torch.device("meta"):
        clip = UMTClipEncoder(encoder.config)
    clip.encoder = encoder
    return clip.eval(), report
