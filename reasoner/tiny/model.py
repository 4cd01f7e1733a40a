"""The tiny VideoChat-Flash: the project's own UMT encoder + ToMe, projector and Qwen2 decoder.

Nothing here re-implements a layer: `UMTClipEncoder`, `MMProjector` and `Qwen2FlashForCausalLM`
are the modules the loaders build for the real 2B/7B checkpoints, only with small numbers.
This file adds what training needs (a batched teacher-forced forward with answer-only labels)
and the export to a VideoChat-Flash directory (official key names, config.json fields,
`fw_vision_config` for the settings the tensors cannot reveal, tokenizer files).
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from encoder_trt.checkpoint import ENCODER_PREFIX
from encoder_trt.modeling_umt import UMTClipEncoder, UMTConfig
from encoder_trt.tome import bipartite_soft_matching, hd_metric, merge_wavg
from reasoner.modeling_qwen2_flash import (
    KV,
    DropConfig,
    Qwen2FlashConfig,
    Qwen2FlashForCausalLM,
    rope_cos_sin,
)
from reasoner.projector import CHECKPOINT_PREFIX as PROJECTOR_PREFIX
from reasoner.projector import MMProjector
from reasoner.tiny.data import FRAME_STEPS
from reasoner.tiny.labels import AUX_ACTOR_LABELS, MOTION_MOVING, MOTION_STILL
from reasoner.tiny.oracle import TOKENS_PER_CLIP, Slots, chamfer, compact_block, oracle_block

IGNORE = -100
APART_MARGIN = 0.8
"""Cosine on ToMe's first merge metric above which an actor's body patches in two frames of a
clip, between which it moved, are pushed apart (`apart_loss`, pairs from `labels.moved_pairs`).
Each even patch of a tiny clip has an odd match about 0.99 alike (the median), and a moving
car's body in two frames is 0.95 alike: below 0.8 it loses to almost any other match."""


@dataclass(frozen=True)
class TinyConfig:
    """Sizes of the tiny model (defaults: ~3 M parameters, 64 px input, 4-layer LLM).

    Why an LLM 256 wide: at 128 (8 heads of 16 or 4 of 32) matching a question against the
    visual tokens sat at the majority answer for 400-1,400 steps in every run; at 256 the same
    oracle-stage run broke through at ~1,000 steps (BENCHMARKS.md, tiny model training).
    """

    image_size: int = 64
    patch_size: int = 8  # 8x8 patches per frame, 256 per clip, ToMe [128, 64] -> 64
    # Grid the position table is laid out on before it is resized to the input's grid, as the
    # reference lays UMT-L's out on 14x14 and resizes it for 448 px; 0 = the input's own grid.
    # A model continued at a larger input keeps the grid it was trained on.
    pos_base_grid: int = 0
    vision_dim: int = 128
    vision_depth: int = 2
    vision_heads: int = 4
    vision_mlp_ratio: float = 2.0
    # ToMe metric: the mean over this many channel groups. The reference's "hd64" reads UMT-L's
    # 1024 channels as 16 groups of 64, a 64-d metric; 16 groups of a 128-wide tiny encoder
    # leave 8 dimensions, and a probe on the merged tokens told a parked car from one on the
    # road at 0.84 balanced accuracy against 0.95 with 2 groups (64-d, as the reference;
    # bench/encoder_probe.py). 16 stays the default so scripts/train_tiny.sh still makes the
    # bundled model; `flashwatch tiny train --tome-groups 2` builds a new model with 2.
    tome_groups: int = 16
    hidden_size: int = 256
    num_layers: int = 4
    num_heads: int = 8
    num_kv_heads: int = 4
    intermediate_size: int = 512
    vocab_size: int = 512
    # Width of the training-only probe as built; the stages that train it widen it to
    # `labels.AUX_LABELS` (train.py). The default keeps a new model's seeded init as it was.
    aux_labels: int = AUX_ACTOR_LABELS
    init_std: float = 0.02  # Qwen2's `initializer_range` for the LLM and projector

    def umt(self) -> UMTConfig:
        return UMTConfig(
            image_size=self.image_size,
            patch_size=self.patch_size,
            embed_dim=self.vision_dim,
            depth=self.vision_depth,
            num_heads=self.vision_heads,
            mlp_ratio=self.vision_mlp_ratio,
            pos_base_grid=self.pos_base_grid or self.image_size // self.patch_size,
            tome_groups=self.tome_groups,
        )

    def qwen2(self) -> Qwen2FlashConfig:
        return Qwen2FlashConfig(
            vocab_size=self.vocab_size,
            hidden_size=self.hidden_size,
            intermediate_size=self.intermediate_size,
            num_hidden_layers=self.num_layers,
            num_attention_heads=self.num_heads,
            num_key_value_heads=self.num_kv_heads,
        )


@dataclass
class Batch:
    """Teacher-forced questions over a set of windows.

    `pixels` (C, 4, 3, S, S) holds every clip of every window; window w owns clips
    `clip_ranges[w]`. Its shared prefix is `prefix_ids[w]`, its visual block, then
    `shared_ids[w]` (the prompt text every question of the window has in common after the
    block: the timestamp sentence); each of its questions continues with `suffix_ids[w][q]`
    (the rest of its prompt, then the answer), whose last `n_answer[w][q]` ids are supervised
    (answer + `<|im_end|>`).
    """

    pixels: Tensor
    clip_ranges: list[tuple[int, int]]
    prefix_ids: list[list[int]]
    suffix_ids: list[list[list[int]]]
    n_answer: list[list[int]]
    clip_labels: Tensor | None = None  # (C, A) auxiliary per-clip targets, training only
    token_labels: Tensor | None = None  # (C, 4*L, A) per-patch targets before ToMe, training only
    moved_pairs: Tensor | None = None  # (K, 3) (clip, patch, patch): see `labels.moved_pairs`
    motion_labels: Tensor | None = None  # (C, 4*L) moving / still / ignore: `labels.motion_labels`
    slots: list[list[Slots]] | None = None  # per window, per clip: oracle slots (training only)
    # per window, per question: suffix positions [a, b) that also learn to predict the first
    # answer token (yes/no questions; training only, see `TinyVideoChat.window_logits`)
    early: list[list[tuple[int, int] | None]] | None = None
    shared_ids: list[list[int]] | None = None  # per window; None = nothing shared


def qwen2_init(module: nn.Module, std: float) -> None:
    """Qwen2's initialisation: N(0, std) for Linear and Embedding weights, zero biases.

    PyTorch's defaults give embeddings N(0, 1), about 50x the projected visual tokens; the first
    run with them learned the answer priors and never looked at the video.
    """
    for m in module.modules():
        if isinstance(m, nn.Linear | nn.Embedding):
            nn.init.normal_(m.weight, 0.0, std)
        if isinstance(m, nn.Linear) and m.bias is not None:
            nn.init.zeros_(m.bias)


class TinyVideoChat(nn.Module):
    def __init__(self, config: TinyConfig) -> None:
        super().__init__()
        self.config = config
        self.vision = UMTClipEncoder(config.umt())
        self.projector = MMProjector(config.vision_dim, config.hidden_size)
        self.llm = Qwen2FlashForCausalLM(config.qwen2(), DropConfig(mode="none"))
        # Training-only probe (not exported): per-token logits, max over a clip's tokens.
        self.aux_head = nn.Linear(config.vision_dim, config.aux_labels)
        self.aux_loss: Tensor | None = None
        self.distill_loss: Tensor | None = None
        self.token_loss: Tensor | None = None
        self.apart_loss: Tensor | None = None
        self.motion_loss: Tensor | None = None
        self.early_logits: list[tuple[Tensor, Tensor]] = []
        self.oracle = False  # stage 1: read oracle tokens instead of pixels (see `oracle`)
        self.compact = False  # oracle tokens without the filler (`oracle.compact_block`)
        self.filler_id = 0
        # False: every answer token weighs the same (long answers dominate the loss); True:
        # every question does (`answer_weights`).
        self.per_question = False
        qwen2_init(self.llm, config.init_std)
        qwen2_init(self.projector, config.init_std)
        # Training-only (not exported): does the actor under a patch / in a token move. Built
        # on a forked random stream so that models without it initialise as before.
        with torch.random.fork_rng(devices=[]):
            self.motion_head = nn.Linear(config.vision_dim, 1)

    def oracle_blocks(self, batch: Batch) -> list[Tensor]:
        assert batch.slots is not None
        embed = self.llm.model.embed_tokens
        if self.compact and self.oracle:
            return [compact_block(embed, slots, self.filler_id) for slots in batch.slots]
        return [oracle_block(embed, slots, self.filler_id)[0] for slots in batch.slots]

    def visual_blocks(self, batch: Batch) -> list[Tensor]:
        self.aux_loss = self.distill_loss = self.token_loss = self.apart_loss = None
        self.motion_loss = None
        if self.oracle:
            return self.oracle_blocks(batch)
        patches = self.vision.encoder(batch.pixels)  # (C, 4*L, M) before ToMe
        if batch.token_labels is not None:  # positives are ~1 patch in 60: weigh them up
            logits = self.aux_head(patches)
            self.token_loss = F.binary_cross_entropy_with_logits(
                logits, batch.token_labels, pos_weight=torch.full_like(logits[0, 0], 10.0)
            )
        if batch.moved_pairs is not None and len(batch.moved_pairs):
            metric = F.normalize(hd_metric(patches, self.vision.config.tome_groups), dim=-1)
            c, a, b = batch.moved_pairs.unbind(1)
            cos = (metric[c, a] * metric[c, b]).sum(-1)  # (K,)
            self.apart_loss = F.relu(cos - APART_MARGIN).mean()
        if batch.motion_labels is not None:
            feats, sources = merge_with_sources(self.vision, patches)  # (C, 64, M), (C, 64, P)
            self.motion_loss = self._motion_loss(patches, feats, sources, batch.motion_labels)
        else:
            feats = self.vision.merge(patches, batch.pixels.shape[1])  # (C, 64, M)
        if batch.clip_labels is not None:
            aux = self.aux_head(feats).amax(dim=1)  # (C, A)
            self.aux_loss = F.binary_cross_entropy_with_logits(aux, batch.clip_labels)
        tokens = self.projector(feats)  # (C, 64, D)
        if batch.slots is not None:
            embed = self.llm.model.embed_tokens
            with torch.no_grad():
                pairs = [oracle_block(embed, slots, self.filler_id) for slots in batch.slots]
            target = torch.cat([b for b, _ in pairs]).view(tokens.shape[0], TOKENS_PER_CLIP, -1)
            mask = torch.cat([m for _, m in pairs]).view(tokens.shape[0], TOKENS_PER_CLIP)
            self.distill_loss = chamfer(tokens, target, mask)
        return [tokens[a:b].flatten(0, 1) for a, b in batch.clip_ranges]  # (n*64, D) each

    def _motion_loss(
        self, patches: Tensor, feats: Tensor, sources: Tensor, labels: Tensor
    ) -> Tensor | None:
        """Balanced BCE of `motion_head` on the labelled body patches before ToMe and on the
        merged tokens that hold them (a token holding both moving and still bodies is left
        out): the LLM reads the merged tokens, so the label must survive the averaging."""
        moving, still = labels == MOTION_MOVING, labels == MOTION_STILL  # (C, P)
        in_moving, in_still = holding(sources, moving), holding(sources, still)  # (C, 64)
        pre = self.motion_head(patches).squeeze(-1)  # (C, P)
        post = self.motion_head(feats).squeeze(-1)  # (C, 64)
        terms = [
            balanced_bce(pre, moving, still),
            balanced_bce(post, in_moving & ~in_still, in_still & ~in_moving),
        ]
        kept = [t for t in terms if t is not None]
        return torch.stack(kept).sum() if kept else None

    def _run(self, x: Tensor, start: int, past: list[KV] | None) -> tuple[Tensor, list[KV]]:
        """Decoder layers over x (B, L, D) at positions start..start+L-1 after `past`."""
        cfg = self.llm.cfg
        pos = torch.arange(start, start + x.shape[1], device=x.device)
        cos, sin = rope_cos_sin(pos, cfg.head_dim, cfg.rope_theta, x.dtype)
        kvs = []
        for j, layer in enumerate(self.llm.model.layers):
            x, kv = layer(x, cos, sin, past[j] if past is not None else None)
            kvs.append(kv)
        return x, kvs

    def window_logits(
        self,
        prefix: Tensor,
        suffixes: list[list[int]],
        n_answer: list[int],
        early: list[tuple[int, int] | None] | None = None,
    ) -> tuple[Tensor, Tensor]:
        """One window: the prefix (1, P, D) runs once, its questions (right-padded) attend to
        its keys/values. Returns logits (n, V) at the answer positions and their targets (n,).

        `early` spans (deep supervision, training only) make the question's own tokens predict
        the first answer token too; their logits/targets are kept in `self.early_logits`.
        Why: a yes/no answer needs two attention hops (question words find the matching
        visual tokens; the answer position reads the question words), and neither is learned
        before the other pays off. Supervising the question tokens teaches the first hop alone.
        """
        _, past = self._run(prefix, 0, None)
        dev = prefix.device
        length = max(len(s) for s in suffixes)
        ids = torch.zeros(len(suffixes), length, dtype=torch.long, device=dev)
        target = torch.full_like(ids, IGNORE)
        early_target = torch.full_like(ids, IGNORE)
        for q, (suf, n) in enumerate(zip(suffixes, n_answer, strict=True)):
            ids[q, : len(suf)] = torch.tensor(suf, device=dev)
            target[q, len(suf) - n - 1 : len(suf) - 1] = ids[q, len(suf) - n : len(suf)]
            span = early[q] if early is not None else None
            if span is not None:
                early_target[q, span[0] : span[1]] = suf[len(suf) - n]
        h, _ = self._run(self.llm.model.embed_tokens(ids), prefix.shape[1], past)
        mask = target != IGNORE  # position t predicts token t+1
        emask = early_target != IGNORE
        if bool(emask.any()):
            self.early_logits.append((self.llm.logits_of(h[emask]), early_target[emask]))
        return self.llm.logits_of(h[mask]), target[mask]

    def loss(self, batch: Batch) -> tuple[Tensor, Tensor, Tensor]:
        """Mean answer-token cross-entropy, and per-token (pred, target) for accuracy."""
        blocks = self.visual_blocks(batch)
        embed = self.llm.model.embed_tokens
        logits, targets = [], []
        self.early_logits = []
        for w, block in enumerate(blocks):
            pre = torch.tensor(batch.prefix_ids[w], device=block.device)
            shared = batch.shared_ids[w] if batch.shared_ids is not None else []
            post = torch.tensor(shared, dtype=torch.long, device=block.device)
            prefix = torch.cat([embed(pre), block, embed(post)])[None]  # (1, P, D)
            early = batch.early[w] if batch.early is not None else None
            lg, tg = self.window_logits(prefix, batch.suffix_ids[w], batch.n_answer[w], early)
            logits.append(lg)
            targets.append(tg)
        logit, target = torch.cat(logits), torch.cat(targets)
        if not self.per_question:
            return F.cross_entropy(logit, target), logit.argmax(-1), target
        weight = answer_weights(batch.n_answer).to(logit.device)
        per_token = F.cross_entropy(logit, target, reduction="none")
        return (per_token * weight).sum() / weight.sum(), logit.argmax(-1), target

    def early_loss(self) -> Tensor | None:
        """Cross-entropy of the deep-supervision positions of the last `loss` call."""
        if not self.early_logits:
            return None
        logit = torch.cat([lg for lg, _ in self.early_logits])
        return F.cross_entropy(logit, torch.cat([tg for _, tg in self.early_logits]))


def balanced_bce(logits: Tensor, positive: Tensor, negative: Tensor) -> Tensor | None:
    """Mean of the positives' and the negatives' BCE (either alone if the other is empty):
    moving bodies outnumber still ones about six to one."""
    parts = [
        F.binary_cross_entropy_with_logits(logits[mask], torch.full_like(logits[mask], target))
        for mask, target in ((positive, 1.0), (negative, 0.0))
        if bool(mask.any())
    ]
    return torch.stack(parts).mean() if parts else None


def holding(sources: Tensor, marked: Tensor) -> Tensor:
    """(C, 64) bool: which merged tokens hold at least one of the (C, P) marked patches
    (`sources` from `merge_with_sources`)."""
    return torch.einsum("ctp,cp->ct", sources, marked.float()) > 0


def merge_with_sources(vision: UMTClipEncoder, patches: Tensor) -> tuple[Tensor, Tensor]:
    """`vision.merge` of 4-frame clips (the same tensors) and, per merged token, how many of
    the clip's patches it holds: (C, 64, M) and (C, 64, P)."""
    x, size = patches, None
    sources = torch.eye(patches.shape[1], device=patches.device).expand(len(patches), -1, -1)
    for r in vision.schedule:
        merge, _ = bipartite_soft_matching(hd_metric(x, vision.config.tome_groups), r)
        x, size = merge_wavg(merge, x, size)
        sources = merge(sources)
    return x, sources


def answer_weights(n_answer: Sequence[Sequence[int]]) -> Tensor:
    """Per supervised token, 1/n for a question whose answer has n tokens (answer order of
    `window_logits`: window by window, question by question), so each question weighs the
    same. Why: with plain token-mean, a quarter of "Explain briefly." questions (answers
    of ~8 tokens against 2 for "Yes"/"No") made half the loss, and yes/no accuracy fell
    3 points while the reasons were learnt (BENCHMARKS.md, stop 20)."""
    return torch.tensor([1.0 / n for per_window in n_answer for n in per_window for _ in range(n)])


# ----------------------------------------------------------------------------- export


TRAINING_ONLY = ("aux_head.", "motion_head.")
"""State-dict prefixes of the training-only heads: not exported, so not in a checkpoint."""


def checkpoint_state(model: TinyVideoChat) -> dict[str, Tensor]:
    """Tensors under the official names (spec §6.2)."""
    out = {ENCODER_PREFIX + k: v for k, v in model.vision.encoder.state_dict().items()}
    out |= {PROJECTOR_PREFIX + k: v for k, v in model.projector.state_dict().items()}
    out |= dict(model.llm.state_dict())
    return {k: v.detach().to(torch.float32).contiguous().clone() for k, v in out.items()}


def load_exported(model: TinyVideoChat, directory: str | Path) -> None:
    """Fill `model` from an exported directory (to continue training); the `TRAINING_ONLY`
    heads stay as they are."""
    from safetensors.torch import load_file

    state = load_file(str(Path(directory) / "model.safetensors"))
    enc = {
        k.removeprefix(ENCODER_PREFIX): v for k, v in state.items() if k.startswith(ENCODER_PREFIX)
    }
    proj = {
        k.removeprefix(PROJECTOR_PREFIX): v
        for k, v in state.items()
        if k.startswith(PROJECTOR_PREFIX)
    }
    llm = {k: v for k, v in state.items() if not k.startswith((ENCODER_PREFIX, PROJECTOR_PREFIX))}
    model.vision.encoder.load_state_dict(enc, strict=True)
    model.projector.load_state_dict(proj, strict=True)
    model.llm.load_state_dict(llm, strict=True)


def exported_config(directory: str | Path) -> TinyConfig:
    """The TinyConfig an exported directory was trained with (to continue training it)."""
    cfg = json.loads((Path(directory) / "config.json").read_text())
    # Models exported before `tome_groups` existed merged with UMTConfig's 16 groups.
    return TinyConfig(**{"tome_groups": 16, **cfg["fw_tiny"]["config"]})


def config_json(
    config: TinyConfig, tokenizer: Any, extra: dict[str, Any], max_frames: int | None = None
) -> dict[str, Any]:
    """config.json with the official field names, FlashWatch's `fw_vision_config` and, when
    known, `fw_max_frames`: the longest prompt (in frames) the model was trained on, which
    caps the reasoner's frame budget and zoom windows (the official models read 64-512), with
    `fw_max_frame_step_s`, the widest frame spacing it was trained on (caps the pyramid
    stride the reasoner shows it)."""
    q, u = config.qwen2(), config.umt()
    return {
        "architectures": ["VideoChatFlashQwenForCausalLM"],
        "model_type": "videochat_flash_qwen",
        "hidden_size": q.hidden_size,
        "intermediate_size": q.intermediate_size,
        "num_hidden_layers": q.num_hidden_layers,
        "num_attention_heads": q.num_attention_heads,
        "num_key_value_heads": q.num_key_value_heads,
        "vocab_size": q.vocab_size,
        "rms_norm_eps": q.rms_norm_eps,
        "rope_theta": q.rope_theta,
        "rope_scaling": None,
        "max_position_embeddings": 32768,
        "tie_word_embeddings": False,
        "bos_token_id": tokenizer.convert_tokens_to_ids("<|endoftext|>"),
        "eos_token_id": tokenizer.convert_tokens_to_ids("<|im_end|>"),
        "torch_dtype": "float32",
        "mm_vision_tower": "umt-large",
        "mm_vision_select_layer": -2,
        "mm_hidden_size": u.embed_dim,
        "mm_projector_type": "tome16_mlp_hd64",
        "mm_local_num_frames": u.num_frames,
        "vision_encode_type": "video_image",
        "mm_patch_merge_type": "spatial_nopad",
        "mm_newline_position": "nothing",
        "frame_aspect_ratio": "square",
        "mm_llm_compress": False,
        "llm_compress_type": "uniform0_attention",
        "llm_compress_layer_list": [1, 3],
        "llm_image_token_ratio_list": [1.0, 0.75, 0.25],
        "tokenizer_padding_side": "right",
        "tokenizer_model_max_length": 32768,
        "fw_vision_config": {
            "image_size": u.image_size,
            "num_heads": u.num_heads,
            "pos_base_grid": u.pos_base_grid,
            "mlp_ratio": u.mlp_ratio,
            "tome_groups": u.tome_groups,
        },
        **({"fw_max_frames": max_frames} if max_frames is not None else {}),
        **({"fw_max_frame_step_s": max(FRAME_STEPS)} if max_frames is not None else {}),
        "fw_tiny": {"config": asdict(config), **extra},
    }


def export(
    model: TinyVideoChat,
    out_dir: str | Path,
    tokenizer_dir: str | Path,
    extra: dict[str, Any] | None = None,
    max_frames: int | None = None,
) -> Path:
    """Write config.json, model.safetensors (fp32) and the tokenizer files to `out_dir`."""
    from safetensors.torch import save_file
    from transformers import Qwen2Tokenizer

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tok = Qwen2Tokenizer.from_pretrained(str(tokenizer_dir), local_files_only=True)
    cfg = config_json(model.config, tok, extra or {}, max_frames)
    (out / "config.json").write_text(json.dumps(cfg, indent=2) + "\n")
    save_file(checkpoint_state(model), str(out / "model.safetensors"), metadata={"format": "pt"})
    for f in Path(tokenizer_dir).iterdir():
        if f.is_file() and Path(tokenizer_dir).resolve() != out.resolve():
            shutil.copy(f, out / f.name)
    return out


def parameter_count(modules: Sequence[nn.Module]) -> int:
    return sum(p.numel() for m in modules for p in m.parameters())
