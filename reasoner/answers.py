"""Pure helpers that turn model output into an answer: times, evidence, prompts for rules.

Kept apart from the engine so they are tested without a model.

Times: the model only knows the video it saw, so "at 42 seconds" / "at 1:05" mean seconds from
the start of that video (the first clip it was shown). `mentioned_times` finds such phrases and
`to_wall` adds the video's wall-clock start. Phrases outside [0, duration] are dropped: they are
durations or noise, not a moment in the video.

Evidence: the visual tokens are clips of 64 tokens in prompt order, so per-clip relevance
(`clip_relevance` of the text-guided drop stage) maps straight back to the clips that were read.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

_TIME = re.compile(
    r"(?P<hms>\b(?P<h>\d{1,2}):(?P<hm>\d{2}):(?P<hs>\d{2}(?:\.\d+)?)\b)"
    r"|(?P<ms>\b(?P<m>\d{1,3}):(?P<s>\d{2}(?:\.\d+)?)\b)"
    r"|(?P<num>\b\d+(?:\.\d+)?)\s*(?P<unit>seconds?|secs?|s|minutes?|mins?)\b",
    re.IGNORECASE,
)


@dataclass(frozen=True)
class TimeMention:
    text: str
    offset_s: float


def mentioned_times(answer: str, duration_s: float | None = None) -> list[TimeMention]:
    """Times in `answer` as seconds from the video start ("12 s", "12.5 seconds", "2 minutes",
    "1:05", "0:01:05"), in order; those beyond `duration_s` (+1 s slack) are left out."""
    out: list[TimeMention] = []
    for m in _TIME.finditer(answer):
        if m.group("hms"):
            sec = int(m.group("h")) * 3600 + int(m.group("hm")) * 60 + float(m.group("hs"))
        elif m.group("ms"):
            sec = int(m.group("m")) * 60 + float(m.group("s"))
        else:
            sec = float(m.group("num"))
            if m.group("unit").lower().startswith("m"):
                sec *= 60.0
        if duration_s is not None and not 0.0 <= sec <= duration_s + 1.0:
            continue
        out.append(TimeMention(m.group(0), sec))
    return out


def rule_question(text: str) -> str:
    """The yes/no question asked for an alert rule.

    A rule written as a question is asked as is; a description ("a person climbing the
    fence") becomes "Does the video show a person climbing the fence?". Either way the
    instruction "Answer yes or no." follows, so the first answer token is Yes or No (the
    logits compared are those of "Yes" and "No").
    """
    text = " ".join(text.split())
    question = text if text.endswith("?") else f"Does the video show {text.rstrip('.')}?"
    return f"{question} Answer yes or no."


def explain_question(text: str) -> str:
    """The free-text question behind an alert's reason (an explain call): a rule written as a
    question is asked as is, a description as "Does the video show X? Explain briefly."."""
    text = " ".join(text.split())
    return (
        text if text.endswith("?") else f"Does the video show {text.rstrip('.')}? Explain briefly."
    )


def relevance_question(question: str) -> str:
    """The zoom scan's prompt: the same text for every window, so windows batch together."""
    q = " ".join(question.split())
    return f'Does this video show anything needed to answer the question "{q}"? Answer yes or no.'


def top_clips(weights: Sequence[float], k: int) -> list[int]:
    """Indices of the k heaviest clips, heaviest first (ties: earlier first); zeros skipped."""
    order = sorted(range(len(weights)), key=lambda i: (-weights[i], i))
    return [i for i in order[:k] if weights[i] > 0]


def merge_adjacent(windows: Sequence[tuple[int, int]]) -> list[tuple[int, int]]:
    """Merge touching/overlapping [start, end) clip ranges (sorted input) into segments."""
    out: list[tuple[int, int]] = []
    for s, e in windows:
        if out and s <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], e))
        else:
            out.append((s, e))
    return out
