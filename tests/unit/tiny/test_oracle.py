"""Oracle visual tokens (training stage 1), distillation distance, deep-supervision spans."""

from __future__ import annotations

import tempfile
from functools import cache
from typing import Any

import numpy as np
import torch

from reasoner.tiny.data import (
    CAPTION_MAX,
    caption_qa,
    corpus_texts,
    on_screen,
    sample_windows,
    seen_tracks,
    subject,
)
from reasoner.tiny.oracle import (
    TOKENS_PER_CLIP,
    chamfer,
    clip_slots,
    compact_block,
    oracle_block,
)
from reasoner.tiny.tokenizer import build_tokenizer
from reasoner.tiny.train import make_batch


@cache
def _tok() -> Any:
    return build_tokenizer(tempfile.mkdtemp(prefix="fw-tok-"), corpus_texts())


def _window(seed: int = 1_000):  # type: ignore[no-untyped-def]
    return sample_windows(seed, 3, 32, clips=(2, 3))


def test_slots_name_every_actor_on_screen_with_its_words() -> None:
    tok = _tok()
    for w in _window():
        slots = clip_slots(w, tok)
        assert len(slots) == len(w.frames) // 4
        for c, clip in enumerate(slots):
            times = w.times[4 * c : 4 * c + 4]
            on = [
                tr for kind in ("person", "car", "bag") for tr in seen_tracks(w.truth, times, kind)
            ]
            assert len(clip) == len(on)
            assert len({pos for pos, _ in clip}) == len(clip)  # distinct positions
            words = sorted(str(tok.decode(ids)).split()[:2] for _, ids in clip)
            assert words == sorted([tr.colour, tr.actor_kind] for tr in on)


def test_oracle_block_sums_word_embeddings_and_fills_the_rest() -> None:
    embed = torch.nn.Embedding(50, 8)
    slots = [[(3, [5, 7])], [], [(0, [9]), (63, [1, 2, 3])]]
    block, mask = oracle_block(embed, slots, filler_id=0)
    assert block.shape == (3 * TOKENS_PER_CLIP, 8) and int(mask.sum()) == 3
    w = embed.weight
    assert torch.allclose(block[3], w[5] + w[7])
    assert torch.allclose(block[2 * 64 + 63], w[1] + w[2] + w[3])
    assert torch.allclose(block[64 + 10], w[0])  # filler
    compact = compact_block(embed, slots, filler_id=0)
    assert compact.shape == (4, 8)  # 1 + 1 filler for the empty clip + 2
    assert torch.allclose(compact[1], w[0])


def test_chamfer_is_orderless_and_positive_for_different_sets() -> None:
    g = torch.Generator().manual_seed(0)
    a = torch.randn(2, 64, 16, generator=g)
    perm = a[:, torch.randperm(64, generator=g)]
    assert float(chamfer(a, perm)) < 1e-6
    assert float(chamfer(a, a + 1.0)) > 0.5


def test_caption_lists_actors_in_order_of_first_appearance() -> None:
    for w in _window(1_001):
        qa = caption_qa(w, np.random.default_rng(0))
        firsts = sorted(
            (min(t for t in w.times if on_screen(tr, t)), tr.actor_id, tr)
            for tr in w.truth.tracks
            if any(on_screen(tr, t) for t in w.times)
        )
        if not firsts:
            assert qa.answer == "Nothing."
            continue
        items = [subject(tr.actor_kind, tr.colour) for _, _, tr in firsts[:CAPTION_MAX]]
        text = items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]
        assert qa.answer == text[0].upper() + text[1:] + "."


def test_early_spans_cover_the_question_and_end_before_the_answer() -> None:
    tok = _tok()
    ws = _window()[:2]
    from reasoner.tiny.data import QA

    qas = [[QA("presence", "Is there a red car in the video? Answer yes or no.", "Yes"),
            QA("count", "How many cars appear in the video?", "1")] for _ in ws]  # fmt: skip
    batch = make_batch(tok, ws, qas, pixels_too=False, slots=True, early=True)
    assert batch.early is not None and batch.slots is not None and batch.pixels.numel() == 0
    for w in range(2):
        span = batch.early[w][0]
        assert span is not None and batch.early[w][1] is None
        suf = batch.suffix_ids[w][0]
        answer_at = len(suf) - batch.n_answer[w][0] - 1
        assert span[1] == answer_at
        text = str(tok.decode(suf[span[0] : span[1]]))
        assert "red car" in text and "Answer yes or no" in text


def test_masked_chamfer_charges_a_missed_actor_slot() -> None:
    """Tokens collapsed onto the filler cost little against the whole oracle set (63 of 64
    targets are filler) but a lot when each actor slot must be matched."""
    torch.manual_seed(0)
    filler, actor = torch.randn(16), torch.randn(16) * 3
    target = filler.expand(1, 64, 16).clone()
    target[0, 5] = actor
    mask = torch.zeros(1, 64, dtype=torch.bool)
    mask[0, 5] = True
    collapsed = filler.expand(1, 64, 16).clone()
    matched = target.clone()
    assert float(chamfer(collapsed, target, mask)) > 20 * float(chamfer(collapsed, target))
    assert float(chamfer(matched, target, mask)) < 1e-6


def test_shared_prompt_run_once_per_window_gives_the_same_logits() -> None:
    """The timestamp sentence every question of a window shares moves into the window's prefix
    (half of each suffix); the answer logits must not change."""
    from reasoner.tiny.data import QA
    from reasoner.tiny.model import TinyConfig, TinyVideoChat

    tok = _tok()
    ws = _window()[:2]
    qas = [[QA("presence", "Is there a red car in the video? Answer yes or no.", "Yes"),
            QA("count", "How many cars appear in the video?", "1"),
            QA("presence", "Is there a person in the video? Answer yes or no.", "No")]
           for _ in ws]  # fmt: skip
    batch = make_batch(tok, ws, qas, pixels_too=False, slots=True)
    assert batch.shared_ids is not None
    for w, window in enumerate(ws):
        shared = str(tok.decode(batch.shared_ids[w]))
        assert f"lasts for {window.duration:.2f} seconds" in shared
        assert "red car" not in shared
    unshared = make_batch(tok, ws, qas, pixels_too=False, slots=True)
    unshared.suffix_ids = [
        [s + q for q in qs] for s, qs in zip(batch.shared_ids, batch.suffix_ids, strict=True)
    ]
    unshared.shared_ids = None
    torch.manual_seed(0)
    model = TinyVideoChat(TinyConfig(hidden_size=32, num_layers=2, num_heads=4, num_kv_heads=2,
                                     intermediate_size=64, vocab_size=len(tok)))  # fmt: skip
    model.oracle = True
    model.eval()
    with torch.no_grad():
        loss_a, pred_a, target_a = model.loss(batch)
        loss_b, pred_b, target_b = model.loss(unshared)
    assert torch.equal(target_a, target_b) and torch.equal(pred_a, pred_b)
    assert torch.allclose(loss_a, loss_b, atol=1e-5)
