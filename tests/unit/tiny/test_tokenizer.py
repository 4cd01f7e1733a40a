"""The tiny tokenizer: Qwen2Tokenizer files, ChatML specials, prompt round trip."""

from __future__ import annotations

from typing import Any

from reasoner.prompt import (
    IMAGE_TOKEN_INDEX,
    VideoSegment,
    chat_prompt,
    tokenize_with_placeholders,
    user_message,
    yes_no_ids,
)
from reasoner.tiny.tokenizer import SPECIALS


def test_specials_are_single_ids(tok: Any) -> None:
    ids = [tok.convert_tokens_to_ids(s) for s in SPECIALS]
    assert ids == [0, 1, 2]
    assert tok.eos_token == "<|im_end|>" and tok.pad_token == "<|endoftext|>"
    for s, i in zip(SPECIALS, ids, strict=True):
        assert tok(f"a{s}b")["input_ids"].count(i) == 1
    assert len(tok) <= 512


def test_prompt_round_trip(tok: Any) -> None:
    import torch

    seg = VideoSegment(torch.empty(0), 37.0, 36)
    question = "When did a red car park?"
    text = chat_prompt(user_message(question, [seg]))
    ids = tokenize_with_placeholders(tok, text)
    assert ids.count(IMAGE_TOKEN_INDEX) == 1
    parts = text.split("<image>")
    cut = ids.index(IMAGE_TOKEN_INDEX)
    assert tok.decode(ids[:cut]) == parts[0]
    assert tok.decode(ids[cut + 1 :]) == parts[1]
    assert tok.decode(tok("At 23 seconds.<|im_end|>")["input_ids"], skip_special_tokens=True) == (
        "At 23 seconds."
    )
    # unseen text still round-trips (byte-level BPE has no unknown token)
    odd = "Zürich Straße — 42 ünïcödé"
    assert tok.decode(tok(odd)["input_ids"]) == odd


def test_yes_no_are_single_tokens(tok: Any) -> None:
    yes, no = yes_no_ids(tok)
    assert yes != no
    assert tok.decode([yes]) == "Yes" and tok.decode([no]) == "No"
