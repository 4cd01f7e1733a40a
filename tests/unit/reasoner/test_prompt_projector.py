"""Reference prompt text, placeholder splicing, rule prefixes, and the projector MLP."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
import torch
from transformers import Qwen2Tokenizer

from reasoner.loading import load_reasoner
from reasoner.modeling_qwen2_flash import DropConfig
from reasoner.projector import MMProjector, project_clips
from reasoner.prompt import (
    IMAGE_TOKEN_INDEX,
    VideoSegment,
    build_inputs,
    build_rule_inputs,
    chat_prompt,
    time_sentence,
    tokenize_with_placeholders,
    user_message,
    yes_no_ids,
)
from reasoner.testing import cached_qwen2_tokenizer_dir, write_tiny_checkpoint

D = 8


@pytest.fixture(scope="module")
def tok() -> Any:
    return Qwen2Tokenizer.from_pretrained(str(cached_qwen2_tokenizer_dir()))


def fake_embed(ids: list[int]) -> torch.Tensor:
    """Text embedding stand-in: every channel holds the token id."""
    return torch.tensor(ids, dtype=torch.float32)[None, :, None].expand(1, len(ids), D)


def segment(n: int, duration: float = 12.344, frames: int = 64, camera: str | None = None) -> Any:
    return VideoSegment(-torch.arange(1, n * D + 1.0).view(n, D), duration, frames, camera)


def test_single_video_prompt_is_the_reference_text() -> None:
    text = chat_prompt(user_message("What is the man doing?", [segment(4)]))
    assert text == (
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
        "<|im_start|>user\n<image>\nThe video lasts for 12.34 seconds, and 64 frames are "
        "uniformly sampled from it. What is the man doing?<|im_end|>\n"
        "<|im_start|>assistant\n"
    )
    assert time_sentence(7.0, 8) == (
        "The video lasts for 7.00 seconds, and 8 frames are uniformly sampled from it."
    )


def test_multi_camera_prompt_layout() -> None:
    segs = [segment(2, 60.0, 64, "gate"), segment(2, 30.5, 32, "lot")]
    assert user_message("Who came first?", segs) == (
        "Camera gate: <image>\nThe video lasts for 60.00 seconds, and 64 frames are uniformly "
        "sampled from it.\n"
        "Camera lot: <image>\nThe video lasts for 30.50 seconds, and 32 frames are uniformly "
        "sampled from it.\nWho came first?"
    )


def test_tokenize_splits_on_placeholder(tok: Any) -> None:
    text = chat_prompt(user_message("Q?", [segment(4)]))
    ids = tokenize_with_placeholders(tok, text)
    head, tail = text.split("<image>")
    assert ids == tok(head)["input_ids"] + [IMAGE_TOKEN_INDEX] + tok(tail)["input_ids"]
    assert ids[:3] == [151644, 8948, 198]  # <|im_start|> system \n
    assert ids[ids.index(IMAGE_TOKEN_INDEX) + 1] == 198  # the part after <image> starts with \n
    assert ids[-5:] == [151645, 198, 151644, 77091, 198]  # <|im_end|>\n<|im_start|>assistant\n


def test_splice_puts_visual_blocks_in_place(tok: Any) -> None:
    segs = [segment(3, camera="a"), segment(5, camera="b")]
    inputs = build_inputs(tok, fake_embed, "Q?", segs)
    assert inputs.input_ids.count(IMAGE_TOKEN_INDEX) == 2
    (s0, n0), (s1, n1) = inputs.visual_spans
    assert (n0, n1) == (3, 5)
    assert s0 == inputs.input_ids.index(IMAGE_TOKEN_INDEX)
    assert inputs.inputs_embeds.shape == (1, len(inputs.input_ids) - 2 + 8, D)
    torch.testing.assert_close(inputs.inputs_embeds[0, s0 : s0 + 3], segs[0].tokens)
    torch.testing.assert_close(inputs.inputs_embeds[0, s1 : s1 + 5], segs[1].tokens)
    text_ids = [t for t in inputs.input_ids if t != IMAGE_TOKEN_INDEX]
    mask = torch.ones(inputs.inputs_embeds.shape[1], dtype=torch.bool)
    mask[s0 : s0 + 3] = False
    mask[s1 : s1 + 5] = False
    assert inputs.inputs_embeds[0, mask, 0].tolist() == [float(t) for t in text_ids]


def test_rule_inputs_reproduce_each_full_prompt(tok: Any) -> None:
    questions = ["Does someone climb the fence?", "Does a car stop?", "3 people?"]
    rules = build_rule_inputs(tok, fake_embed, questions, [segment(4)])
    for q, suffix in zip(questions, rules.suffixes, strict=True):
        full = build_inputs(tok, fake_embed, q, [segment(4)])
        joined = torch.cat((rules.prefix_embeds, fake_embed(suffix)), dim=1)
        torch.testing.assert_close(joined, full.inputs_embeds)
        assert rules.visual_spans == full.visual_spans
    assert all(len(s) >= 1 for s in rules.suffixes)
    same = build_rule_inputs(tok, fake_embed, ["A?", "A?"], [segment(4)])
    assert same.suffixes == [[198], [198]]  # identical prompts: only the last id is per rule
    assert yes_no_ids(tok) == (9454, 2753)


def test_projector_mlp_shapes_names_and_exact_gelu() -> None:
    torch.manual_seed(0)
    proj = MMProjector(mm_hidden_size=1024, hidden_size=D)
    assert sorted(proj.state_dict()) == ["mlp.0.bias", "mlp.0.weight", "mlp.2.bias", "mlp.2.weight"]
    clips = torch.randn(3, 64, 1024, dtype=torch.float16)
    out = project_clips(proj, clips)
    assert out.shape == (3 * 64, D) and out.dtype == torch.float32
    x = clips.float()
    h = x @ proj.mlp[0].weight.T + proj.mlp[0].bias
    h = 0.5 * h * (1 + torch.erf(h / math.sqrt(2)))
    ref = (h @ proj.mlp[2].weight.T + proj.mlp[2].bias).flatten(0, 1)
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(project_clips(proj, list(clips)), out)  # list of (64, 1024) clips
    with pytest.raises(ValueError, match="clips, tokens, width"):
        project_clips(proj, clips[0])


@pytest.mark.slow
def test_end_to_end_tiny_checkpoint(tmp_path: Path) -> None:
    """Directory -> projector -> prompt -> greedy answer and shared-prefix rule scores."""
    drop = ("uniform0_attention", [1, 3], [1.0, 0.75, 0.25])
    ck = write_tiny_checkpoint(tmp_path / "ck", dtype=torch.float32, drop=drop)
    r = load_reasoner(ck, dtype="fp32")
    assert r.llm.drop == DropConfig("uniform0_attention", (1, 3), (1.0, 0.75, 0.25))
    clips = torch.randn(2, 64, 1024)
    seg = VideoSegment(project_clips(r.projector, clips), 8.0, 8)
    inputs = build_inputs(r.tokenizer, r.llm.embed, "What happens?", [seg])
    gen = r.llm.generate_greedy(
        inputs.inputs_embeds, inputs.visual_spans, max_new_tokens=4, stop_ids=[151645]
    )
    assert 1 <= len(gen.tokens) <= 4
    assert [len(st.kept) for st in gen.prefill.stages] == [96, 32]
    rules = build_rule_inputs(
        r.tokenizer, r.llm.embed, ["Is it raining?", "Is a door open?"], [seg]
    )
    yes, no = yes_no_ids(r.tokenizer)
    shared = r.llm.score_yes_no(rules.prefix_embeds, rules.visual_spans, rules.suffixes, yes, no)
    for q, p in zip(["Is it raining?", "Is a door open?"], shared, strict=True):
        full = build_inputs(r.tokenizer, r.llm.embed, q, [seg])
        logits = r.llm.prefill(full.inputs_embeds, full.visual_spans).logits
        assert p == pytest.approx(float(logits[[yes, no]].softmax(0)[0]), abs=1e-5)
