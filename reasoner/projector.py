"""The `tome16_mlp_hd64` projector's MLP: merged UMT features (1024) -> LLM width D (spec §2.3).

Token merging itself runs in the encoder (`encoder_trt/`); memory stores the 64 merged tokens per
clip *before* this MLP, so the reasoner owns only the MLP. Attribute names match the checkpoint
(`model.mm_projector.mlp.0.*`, `model.mm_projector.mlp.2.*`; index 1 is the parameter-free GELU).

Shapes: C = clips, T = merged tokens per clip (64), M = encoder width (1024), D = LLM width.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

CHECKPOINT_PREFIX = "model.mm_projector."


class MMProjector(nn.Module):
    """Linear(M -> D), exact (erf) GELU, Linear(D -> D), both with biases."""

    def __init__(self, mm_hidden_size: int = 1024, hidden_size: int = 3584) -> None:
        super().__init__()
        self.mlp = nn.Sequential(
            nn.Linear(mm_hidden_size, hidden_size),
            nn.GELU(approximate="none"),
            nn.Linear(hidden_size, hidden_size),
        )

    def forward(self, x: Tensor) -> Tensor:
        """(..., M) -> (..., D)."""
        return self.mlp(x)


def project_clips(projector: MMProjector, clips: Sequence[Tensor] | Tensor) -> Tensor:
    """Project clips in temporal order and flatten them into one visual block.

    `clips` is (C, T, M) or a sequence of (T, M) tensors, already in temporal order; the result is
    (C*T, D), clips concatenated with no separators, as the reference splices them (spec §2.1).
    The input is cast to the projector's dtype/device (memory may store fp16).
    """
    weight = projector.mlp[0].weight
    assert isinstance(weight, Tensor)
    x = clips if isinstance(clips, Tensor) else torch.stack(list(clips))  # (C, T, M)
    if x.dim() != 3:
        raise ValueError(f"expected (clips, tokens, width), got {tuple(x.shape)}")
    x = x.to(device=weight.device, dtype=weight.dtype)
    return projector(x).flatten(0, 1)  # (C*T, D)
