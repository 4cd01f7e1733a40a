"""UMT-L video encoder as used by VideoChat-Flash (spec: shared/reference/videochat_flash.md §1).

One clip is T frames (T = 4 for video, 1 for a still image) of S×S RGB pixels. A Conv3d with kernel
(1, P, P) turns every frame into L = (S/P)² patch tokens; all T*L tokens of the clip attend to each
other jointly (no CLS token, no temporal patching). Position information is a fixed 1-D sinusoid
over the flattened (t, row, col) index, laid out on the checkpoint's 14×14 grid and bicubically
resized per frame when the actual grid differs (448 px → 28×28). After the last built block the
features go through `vision_layernorm` (eps 1e-12).

`UMTClipEncoder` appends the token-merging compressor (`encoder_trt.tome`) so one module maps a
batch of clips to 64 tokens each; it is what the backends run and what ONNX export traces.

Shape letters used in comments:
    B  clips in the batch            T  frames per clip (4 video, 1 image)
    L  patch tokens per frame        N  tokens per clip (T*L)
    C  embed width (1024)            H  attention heads (16), D = C / H head width (64)
    G  patch grid side (S / P)       S  image side in pixels

Attribute names follow the checkpoint (`patch_embed.proj`, `blocks.{i}.attn.qkv`, `q_bias`, ...)
so the official weights load with the prefix stripped and nothing renamed. Attention has a
readable `eager` path (the reference's math) and a fused `sdpa` path, chosen by name.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from encoder_trt.tome import merge_schedule, tome_compress

AttentionFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, float], torch.Tensor]


@dataclass(frozen=True)
class UMTConfig:
    """Hyper-parameters of the vision tower; defaults are the released UMT-L at 224 px.

    Every field is overridable so tests can build tiny random variants with the same code path.
    """

    image_size: int = 224  # S; 224 for "umt", 448 for "umt-hd" checkpoints
    patch_size: int = 16  # P; spatial patch side, tubelet size is always 1
    num_frames: int = 4  # T for video clips (`mm_local_num_frames`)
    in_chans: int = 3
    embed_dim: int = 1024  # C
    depth: int = 23  # built blocks: 24 nominal + select_layer(-2) + 1
    num_heads: int = 16  # H
    mlp_ratio: float = 4.0
    ln_eps: float = 1e-6  # LayerNorm inside blocks
    final_ln_eps: float = 1e-12  # vision_layernorm
    pos_base_grid: int = 14  # grid the sinusoid table is laid out on before resizing
    tome_target: int = 64  # tokens per clip after merging (16 per frame * 4)
    tome_groups: int = 16  # "hd64": metric = mean over this many channel groups
    attn_implementation: str = "sdpa"  # key of ATTENTION_FUNCTIONS

    def __post_init__(self) -> None:
        if self.image_size % self.patch_size:
            raise ValueError(
                f"image_size {self.image_size} is not a multiple of patch_size {self.patch_size}"
            )
        if self.embed_dim % self.num_heads:
            raise ValueError(f"embed_dim {self.embed_dim} not divisible by heads {self.num_heads}")
        if self.embed_dim % self.tome_groups:
            raise ValueError(
                f"embed_dim {self.embed_dim} not divisible by tome_groups {self.tome_groups}"
            )
        if self.attn_implementation not in ATTENTION_FUNCTIONS:
            raise ValueError(
                f"unknown attn_implementation {self.attn_implementation!r}; "
                f"choose one of {sorted(ATTENTION_FUNCTIONS)}"
            )

    @property
    def grid(self) -> int:
        """G: patches per side of one frame."""
        return self.image_size // self.patch_size

    @property
    def tokens_per_frame(self) -> int:
        """L = G²."""
        return self.grid * self.grid

    @property
    def tokens_per_clip(self) -> int:
        """N = T*L for a video clip."""
        return self.num_frames * self.tokens_per_frame

    @property
    def mlp_hidden(self) -> int:
        return int(self.embed_dim * self.mlp_ratio)

    def with_attention(self, name: str) -> UMTConfig:
        return dataclasses.replace(self, attn_implementation=name)


# --------------------------------------------------------------------------------------------
# Position tables (fixed, not in the state dict)


def sinusoid_table(n_position: int, dim: int) -> torch.Tensor:
    """Classic 1-D transformer sinusoid, angles in float64 as the reference, returned as float32.

    angle[p, j] = p / 10000^(2*floor(j/2)/dim); even channels take sin, odd channels cos.
    """
    pos = np.arange(n_position, dtype=np.float64)[:, None]  # (n, 1)
    exponent = 2 * (np.arange(dim) // 2) / dim  # (dim,)
    angles = pos / np.power(10000, exponent)[None, :]  # (n, dim) float64
    table = np.empty_like(angles)
    table[:, 0::2] = np.sin(angles[:, 0::2])
    table[:, 1::2] = np.cos(angles[:, 1::2])
    # Explicit CPU: the tables are always computed on the CPU, whatever device context is active.
    return torch.tensor(table, dtype=torch.float32, device="cpu")


def resize_frame_tables(table: torch.Tensor, frames: int, base: int, grid: int) -> torch.Tensor:
    """Resize each frame's base×base slice of `table` to grid×grid (bicubic, align_corners=False).

    This is how the 448 px checkpoints reuse the 14×14 layout learned at 224 px; frames are
    resized independently, so the temporal part of the flattened index is kept.
    """
    if base == grid:
        return table
    dim = table.shape[-1]
    x = table.reshape(frames, base, base, dim).permute(0, 3, 1, 2)  # (T, C, base, base)
    x = F.interpolate(x, size=(grid, grid), mode="bicubic", align_corners=False)  # (T, C, G, G)
    return x.permute(0, 2, 3, 1).reshape(frames * grid * grid, dim)  # (T*G*G, C)


def build_pos_embed(config: UMTConfig, frames: int) -> torch.Tensor:
    """Position table for `frames` frames at the config's grid: (frames*L, C) float32."""
    base = config.pos_base_grid
    table = sinusoid_table(frames * base * base, config.embed_dim)  # (frames*base², C)
    return resize_frame_tables(table, frames, base, config.grid)  # (frames*L, C)


# --------------------------------------------------------------------------------------------
# Attention implementations, chosen by name


def eager_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float
) -> torch.Tensor:
    """Reference math: softmax((q*scale) k^T) v in the input dtype. q, k, v: (B, H, N, D)."""
    attn = (q * scale) @ k.transpose(-2, -1)  # (B, H, N, N)
    return attn.softmax(dim=-1) @ v  # (B, H, N, D)


def sdpa_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float) -> torch.Tensor:
    """Fused kernel (flash / memory-efficient on CUDA); same math as `eager_attention`."""
    return F.scaled_dot_product_attention(q, k, v, scale=scale)  # (B, H, N, D)


ATTENTION_FUNCTIONS: dict[str, AttentionFn] = {
    "eager": eager_attention,
    "sdpa": sdpa_attention,
}


# --------------------------------------------------------------------------------------------
# Modules (attribute names = checkpoint key names)


class PatchEmbed(nn.Module):
    def __init__(self, config: UMTConfig) -> None:
        super().__init__()
        p = config.patch_size
        self.proj = nn.Conv3d(
            config.in_chans, config.embed_dim, kernel_size=(1, p, p), stride=(1, p, p)
        )

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        """(B, T, 3, S, S) -> (B, T*L, C), token index t*L + row*G + col."""
        x = pixels.permute(0, 2, 1, 3, 4)  # (B, 3, T, S, S)
        x = self.proj(x)  # (B, C, T, G, G)
        return x.flatten(2).transpose(1, 2)  # (B, T*G*G, C)


class Attention(nn.Module):
    def __init__(self, config: UMTConfig) -> None:
        super().__init__()
        c = config.embed_dim
        self.num_heads = config.num_heads
        self.scale = (c // config.num_heads) ** -0.5
        self.qkv = nn.Linear(c, 3 * c, bias=False)
        # The reference learns q and v biases only; k's bias is identically zero.
        self.q_bias = nn.Parameter(torch.zeros(c))
        self.v_bias = nn.Parameter(torch.zeros(c))
        self.proj = nn.Linear(c, c)
        self.attn_fn = ATTENTION_FUNCTIONS[config.attn_implementation]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        qkv_bias = torch.cat([self.q_bias, torch.zeros_like(self.v_bias), self.v_bias])  # (3C,)
        qkv = F.linear(x, self.qkv.weight, qkv_bias)  # (B, N, 3C)
        qkv = qkv.reshape(b, n, 3, self.num_heads, c // self.num_heads)  # (B, N, 3, H, D)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # 3 x (B, H, N, D)
        out = self.attn_fn(q, k, v, self.scale)  # (B, H, N, D)
        out = out.transpose(1, 2).reshape(b, n, c)  # (B, N, C)
        return self.proj(out)


class Mlp(nn.Module):
    def __init__(self, config: UMTConfig) -> None:
        super().__init__()
        self.fc1 = nn.Linear(config.embed_dim, config.mlp_hidden)
        self.act = nn.GELU()  # exact (erf) GELU, as the reference
        self.fc2 = nn.Linear(config.mlp_hidden, config.embed_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class Block(nn.Module):
    """Pre-norm residual block without layer-scale or drop-path."""

    def __init__(self, config: UMTConfig) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(config.embed_dim, eps=config.ln_eps)
        self.attn = Attention(config)
        self.norm2 = nn.LayerNorm(config.embed_dim, eps=config.ln_eps)
        self.mlp = Mlp(config)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class UMTEncoder(nn.Module):
    """The vision tower; its state dict is `model.vision_tower.vision_tower.encoder.*`, unprefixed.

    forward: (B, T, 3, S, S) float -> (B, T*L, C) post-`vision_layernorm` features.
    """

    pos_embed: torch.Tensor
    img_pos_embed: torch.Tensor

    def __init__(self, config: UMTConfig) -> None:
        super().__init__()
        self.config = config
        self.patch_embed = PatchEmbed(config)
        self.blocks = nn.ModuleList(Block(config) for _ in range(config.depth))
        self.vision_layernorm = nn.LayerNorm(config.embed_dim, eps=config.final_ln_eps)
        # Non-persistent: the official checkpoints carry no pos_embed key.
        self.register_buffer("pos_embed", torch.empty(0), persistent=False)
        self.register_buffer("img_pos_embed", torch.empty(0), persistent=False)
        self.reset_position_tables()

    def reset_position_tables(self) -> None:
        """(Re)compute the fixed tables, e.g. after building on the meta device + `to_empty`."""
        device = self.patch_embed.proj.weight.device
        c, per_frame = self.config.embed_dim, self.config.tokens_per_frame
        if device.type == "meta":  # shapes only; call again after materialising
            self.pos_embed = torch.empty(self.config.num_frames * per_frame, c, device=device)
            self.img_pos_embed = torch.empty(per_frame, c, device=device)
            return
        self.pos_embed = build_pos_embed(self.config, self.config.num_frames).to(device)
        self.img_pos_embed = build_pos_embed(self.config, 1).to(device)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        t = pixels.shape[1]
        if t == self.config.num_frames:
            pos = self.pos_embed  # (T*L, C)
        elif t == 1:
            pos = self.img_pos_embed  # (L, C)
        else:
            raise ValueError(f"expected {self.config.num_frames} frames or 1 image, got {t}")
        x = self.patch_embed(pixels)  # (B, T*L, C)
        x = x + pos.to(dtype=x.dtype).unsqueeze(0)  # (B, T*L, C)
        for block in self.blocks:
            x = block(x)
        return self.vision_layernorm(x)  # (B, T*L, C)


class UMTClipEncoder(nn.Module):
    """UMT + ToMe: (B, T, 3, S, S) -> (B, 64, C), the tokens memory stores (pre-projector).

    The merge schedule is computed once from the config so traced graphs (ONNX, TensorRT) are
    static apart from the batch axis.
    """

    def __init__(self, config: UMTConfig) -> None:
        super().__init__()
        self.config = config
        self.encoder = UMTEncoder(config)
        self.schedule = merge_schedule(config.tokens_per_clip, config.tome_target)
        # Still images (T=1) also end at 64 tokens; tiny configs may have fewer than 64 per frame.
        self.image_schedule: list[int] | None = (
            merge_schedule(config.tokens_per_frame, config.tome_target)
            if config.tokens_per_frame >= config.tome_target
            else None
        )

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.merge(self.encoder(pixels), pixels.shape[1])

    def merge(self, feats: torch.Tensor, frames: int) -> torch.Tensor:
        """ToMe over the encoder's (B, T*L, C) output; apart so training can also read the
        tokens before merging."""
        schedule = self.schedule
        if frames == 1:
            if self.image_schedule is None:
                raise ValueError(
                    f"{self.config.tokens_per_frame} tokens per image < target "
                    f"{self.config.tome_target}"
                )
            schedule = self.image_schedule
        return tome_compress(feats, schedule, groups=self.config.tome_groups)  # (B, 64, C)


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())
