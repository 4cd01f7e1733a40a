"""Symbolic ("oracle") visual tokens: the curriculum that teaches the tiny LLM to read video.

Trained end to end from scratch, the tiny LLM learned the answer priors and never looked at
the video (two 11-minute and one 34-minute CPU runs): to answer "Is there a red car?" it must
learn both to find matching visual tokens and to carry what it found to the answer position,
and neither step pays off before the other exists. So training runs in two stages, as
LLaVA-style models do:

1. **oracle**: each clip's 64 visual tokens are built from the ground truth — one slot per
   actor on screen, the sum of the LLM's own input embeddings of its colour, kind and current
   action words, placed by its horizontal position; the other tokens hold a filler embedding.
   No pixels are rendered or encoded, so steps are fast, and the LLM learns to read.
2. **video**: the real encoder + projector; a distillation loss pulls each clip's projected
   tokens onto its oracle set (Chamfer distance, targets detached) while the answer loss
   trains everything. The exported model contains no oracle part; inference reads pixels.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from reasoner.tiny.data import Window, on_screen
from reasoner.tiny.labels import actor_events

TOKENS_PER_CLIP = 64
EVENT_WORDS = {
    "park": "parked",
    "stop": "stopped",
    "loiter": "loitering",
    "drop": "dropped",
    "cross": "crossing",
}
Slots = list[tuple[int, list[int]]]  # (token position in the clip, word token ids)


def word_ids(tok: Any, word: str) -> list[int]:
    return [int(i) for i in tok(" " + word)["input_ids"]]


def clip_slots(w: Window, tok: Any) -> list[Slots]:
    """Per clip of `w`: one slot per actor on screen in any of its 4 frames."""
    times = w.times
    out: list[Slots] = []
    for c in range(len(times) // 4):
        ts = times[4 * c : 4 * c + 4]
        taken: set[int] = set()
        slots: Slots = []
        for tr in w.truth.tracks:
            hits = [t for t in ts if on_screen(tr, t)]
            if not hits:
                continue
            words = [tr.colour, tr.actor_kind]
            words += [
                EVENT_WORDS[ev.kind]
                for ev in actor_events(w.truth, tr, ts)
                if ev.kind in EVENT_WORDS
            ]
            x, _ = tr.position(hits[len(hits) // 2])
            pos = min(TOKENS_PER_CLIP - 1, max(0, int(x * (TOKENS_PER_CLIP - 1))))
            while pos in taken:
                pos = (pos + 1) % TOKENS_PER_CLIP
            taken.add(pos)
            slots.append((pos, [i for word in words for i in word_ids(tok, word)]))
        out.append(slots)
    return out


def compact_block(embed: nn.Embedding, slots: Sequence[Slots], filler_id: int) -> Tensor:
    """Only the slot tokens (one filler for a clip without any), in clip and position order:
    the easiest form to learn from (nothing dilutes the attention paid to the actors)."""
    weight = embed.weight
    rows = []
    for clip in slots:
        if not clip:
            rows.append(weight[filler_id])
        for _, ids in sorted(clip):
            rows.append(weight[torch.tensor(ids, device=weight.device)].sum(0))
    return torch.stack(rows)


def oracle_block(
    embed: nn.Embedding, slots: Sequence[Slots], filler_id: int
) -> tuple[Tensor, Tensor]:
    """(n_clips*64, D) oracle visual tokens and a (n_clips*64,) mask of the slot tokens."""
    weight = embed.weight
    n = len(slots)
    block = weight[filler_id].expand(n * TOKENS_PER_CLIP, -1).clone()
    mask = torch.zeros(n * TOKENS_PER_CLIP, dtype=torch.bool, device=weight.device)
    for c, clip in enumerate(slots):
        for pos, ids in clip:
            i = c * TOKENS_PER_CLIP + pos
            block[i] = weight[torch.tensor(ids, device=weight.device)].sum(0)
            mask[i] = True
    return block, mask


def chamfer(projected: Tensor, target: Tensor, slot_mask: Tensor | None = None) -> Tensor:
    """Mean squared distance between each clip's projected token set and its oracle set
    (both (C, 64, D)), in both directions; orderless because ToMe's token order is not the
    oracle's.

    With `slot_mask` (C, 64) the target-to-projected direction averages over the actor slots
    only: an actor is 1-3 of a clip's 64 targets, and averaged with the filler ones its miss
    cost almost nothing (the projected tokens collapsed onto the filler, distillation loss
    2e-4, and the video stage stayed at the majority answer).
    """
    d = torch.cdist(projected, target).pow(2) / projected.shape[-1]  # (C, 64, 64)
    to_target = d.min(dim=2).values.mean()
    to_projected = d.min(dim=1).values  # (C, 64): each target's nearest projected token
    if slot_mask is not None and bool(slot_mask.any()):
        return 0.5 * (to_target + to_projected[slot_mask].mean())
    return 0.5 * (to_target + to_projected.mean())
