"""The reference prompt (spec §3.3, §4.2, §4.3) and splicing of projected visual tokens.

Single video, exactly as the reference `chat()` builds its first turn:

    <|im_start|>system\\nYou are a helpful assistant.<|im_end|>\\n<|im_start|>user\\n<image>\\n
    The video lasts for 12.34 seconds, and 64 frames are uniformly sampled from it. QUESTION
    <|im_end|>\\n<|im_start|>assistant\\n

(one string; the line breaks above are for reading). The string is split on `<image>`, each part is
tokenised separately with the plain tokenizer call, the parts are joined by the placeholder id -200,
and each placeholder is replaced by the projected tokens of all clips in temporal order.

Multi-camera (our extension, not the reference): the model was trained on exactly one video per
prompt, with one timestamp sentence. For several cameras we emit one segment per camera,
`Camera NAME: <image>\\n<sentence>`, segments joined by newlines, then a newline and the question.
The model never saw this layout or two visual blocks in one prompt, so answers that compare cameras
are less reliable than single-camera ones; a single camera always gets the exact reference text.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import torch
from torch import Tensor

SYSTEM_PROMPT = "You are a helpful assistant."
IMAGE_PLACEHOLDER = "<image>"
IMAGE_TOKEN_INDEX = -200
IM_START, IM_END = "<|im_start|>", "<|im_end|>"


class Tokenizer(Protocol):
    """The slice of a transformers tokenizer we use."""

    def __call__(self, text: str) -> Any: ...

    def convert_tokens_to_ids(self, tokens: str) -> Any: ...


@dataclass(frozen=True)
class VideoSegment:
    """One camera's visual block: projected tokens (N, D) and what the sentence should say."""

    tokens: Tensor  # (N, D), clips in temporal order, already projected
    duration_s: float  # true duration of the covered time range
    num_frames: int  # frames the clips were sampled from (4 per clip)
    camera: str | None = None


@dataclass
class PromptInputs:
    text: str
    input_ids: list[int]  # text ids with IMAGE_TOKEN_INDEX where a visual block goes
    inputs_embeds: Tensor  # (1, L, D)
    visual_spans: list[tuple[int, int]]  # (start, length) of each visual block in inputs_embeds


@dataclass
class RuleInputs:
    """A shared prefix and per-rule suffix ids for `Qwen2FlashForCausalLM.score_yes_no`."""

    prefix_embeds: Tensor  # (1, P, D): system, user header, visual block(s), common text
    visual_spans: list[tuple[int, int]]
    suffixes: list[list[int]]  # per rule: the remaining ids, >= 1 each
    texts: list[str]


def time_sentence(duration_s: float, num_frames: int) -> str:
    return (
        f"The video lasts for {duration_s:.2f} seconds, "
        f"and {num_frames} frames are uniformly sampled from it."
    )


def user_message(question: str, segments: Sequence[VideoSegment]) -> str:
    """The first user turn: the reference layout for one video, ours for several cameras."""
    if len(segments) == 1:
        seg = segments[0]
        return f"{IMAGE_PLACEHOLDER}\n{time_sentence(seg.duration_s, seg.num_frames)} {question}"
    if not segments:
        raise ValueError("at least one video segment is required")
    parts = [
        f"Camera {s.camera or i + 1}: {IMAGE_PLACEHOLDER}\n"
        + time_sentence(s.duration_s, s.num_frames)
        for i, s in enumerate(segments)
    ]
    return "\n".join(parts) + f"\n{question}"


def chat_prompt(user: str, system: str = SYSTEM_PROMPT) -> str:
    """Qwen ChatML (`conv_qwen_2`), ending with the open assistant turn."""
    return (
        f"{IM_START}system\n{system}{IM_END}\n{IM_START}user\n{user}{IM_END}\n{IM_START}assistant\n"
    )


def tokenize_with_placeholders(tokenizer: Tokenizer, text: str) -> list[int]:
    """Split on `<image>`, tokenise each part on its own, join with IMAGE_TOKEN_INDEX."""
    ids: list[int] = []
    for i, chunk in enumerate(text.split(IMAGE_PLACEHOLDER)):
        if i:
            ids.append(IMAGE_TOKEN_INDEX)
        ids.extend(int(t) for t in tokenizer(chunk)["input_ids"])
    return ids


def splice(
    embed: Callable[[list[int]], Tensor], ids: Sequence[int], blocks: Sequence[Tensor]
) -> tuple[Tensor, list[tuple[int, int]]]:
    """Embed text runs with `embed` ((n,) ids -> (1, n, D)) and put `blocks` (N_i, D) in place
    of the placeholders, in order. Returns (1, L, D) and each block's (start, length)."""
    n_placeholders = sum(1 for t in ids if t == IMAGE_TOKEN_INDEX)
    if n_placeholders != len(blocks):
        raise ValueError(f"{n_placeholders} placeholders but {len(blocks)} visual blocks")
    pieces: list[Tensor] = []
    spans: list[tuple[int, int]] = []
    run: list[int] = []
    length = 0
    blocks_left = list(blocks)
    for t in [*ids, None]:
        if t is not None and t != IMAGE_TOKEN_INDEX:
            run.append(int(t))
            continue
        if run:
            pieces.append(embed(run)[0])  # (n, D)
            length += len(run)
            run = []
        if t == IMAGE_TOKEN_INDEX:
            block = blocks_left.pop(0)
            pieces.append(block.to(pieces[-1] if pieces else block))
            spans.append((length, block.shape[0]))
            length += block.shape[0]
    return torch.cat(pieces)[None], spans  # (1, L, D)


def build_inputs(
    tokenizer: Tokenizer,
    embed: Callable[[list[int]], Tensor],
    question: str,
    segments: Sequence[VideoSegment],
    system: str = SYSTEM_PROMPT,
) -> PromptInputs:
    """Prompt text, ids and spliced embeddings for one question over one or more cameras."""
    text = chat_prompt(user_message(question, segments), system)
    ids = tokenize_with_placeholders(tokenizer, text)
    embeds, spans = splice(embed, ids, [s.tokens for s in segments])
    return PromptInputs(text, ids, embeds, spans)


def shared_prefix_length(id_lists: Sequence[Sequence[int]], limit: int) -> int:
    """How many leading ids all `id_lists` have in common, at most `limit` (never below 0)."""
    first = id_lists[0]
    for i in range(max(limit, 0)):
        if any(ids[i] != first[i] for ids in id_lists[1:]):
            return i
    return max(limit, 0)


def build_rule_inputs(
    tokenizer: Tokenizer,
    embed: Callable[[list[int]], Tensor],
    questions: Sequence[str],
    segments: Sequence[VideoSegment],
    system: str = SYSTEM_PROMPT,
) -> RuleInputs:
    """Split several questions over the same window into one shared prefix + per-rule suffixes.

    Each rule is tokenised exactly as its own full prompt would be; the shared prefix is the
    longest common prefix of those id lists (which always covers the visual blocks), capped so
    every suffix keeps at least one id. So scoring with the shared prefix sees the same ids as
    separate prompts, even where BPE would merge across the split.
    """
    if not questions:
        raise ValueError("no questions")
    texts = [chat_prompt(user_message(q, segments), system) for q in questions]
    all_ids = [tokenize_with_placeholders(tokenizer, t) for t in texts]
    common = shared_prefix_length(all_ids, min(len(ids) for ids in all_ids) - 1)
    last_placeholder = max(i for i, t in enumerate(all_ids[0]) if t == IMAGE_TOKEN_INDEX)
    if common <= last_placeholder:
        raise ValueError("questions differ before the last visual block")
    prefix, spans = splice(embed, all_ids[0][:common], [s.tokens for s in segments])
    return RuleInputs(prefix, spans, [ids[common:] for ids in all_ids], texts)


def yes_no_ids(tokenizer: Tokenizer, yes: str = "Yes", no: str = "No") -> tuple[int, int]:
    """Single-token ids of the first answer word (the answer starts right after "assistant\\n")."""
    out = []
    for word in (yes, no):
        ids = tokenizer(word)["input_ids"]
        if len(ids) != 1:
            raise ValueError(f"{word!r} is not a single token: {ids}")
        out.append(int(ids[0]))
    return out[0], out[1]
