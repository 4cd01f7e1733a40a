"""Held-out accuracy of a model directory, through the project's normal loading and prompt path.

`load_clip_encoder` + `load_reasoner` (no special-casing), clips encoded with the UMT + ToMe
encoder, projected with `project_clips`, prompts built by `reasoner.prompt`. Yes/no questions
are scored the way alert rules are (`build_rule_inputs` + `score_yes_no`, P(yes) > 0.5); the
other kinds are answered by greedy decoding and compared with the ground-truth answer. "When"
answers are parsed with `reasoner.answers.mentioned_times` and scored by absolute error.
Scene seeds start at `EVAL_SEED_BASE`, disjoint from every training seed.
"""

from __future__ import annotations

import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import torch

from encoder_trt.checkpoint import load_clip_encoder
from flashwatch.config import IngestConfig
from reasoner.answers import mentioned_times
from reasoner.loading import load_reasoner
from reasoner.modeling_qwen2_flash import DropConfig
from reasoner.projector import project_clips
from reasoner.prompt import VideoSegment, build_inputs, build_rule_inputs, yes_no_ids
from reasoner.tiny.data import (
    QA,
    RENDER_H,
    RENDER_W,
    Window,
    explain_qa,
    questions_for,
    sample_windows,
)
from reasoner.tiny.train import EVAL_SEED_BASE, clips_of

YES_NO_KINDS = ("presence", "happened", "relevance")
INGEST_JPEG_QUALITY: int = IngestConfig.model_fields["jpeg_quality"].default
"""Held-out frames go through ingest's JPEG at its default quality, as a camera's frames
reach the encoder."""


def held_out_windows(
    n: int, seed: int, size: int, render: tuple[int, int] = (RENDER_W, RENDER_H)
) -> list[Window]:
    per_scene = 2
    out: list[Window] = []
    i = 0
    while len(out) < n:
        out += sample_windows(
            EVAL_SEED_BASE + seed * 10_000 + i, per_scene, size, render, jpeg=INGEST_JPEG_QUALITY
        )
        i += 1
    return out[:n]


def _when_error(answer: str, qa: QA, duration: float) -> float | None:
    truth = mentioned_times(qa.answer, duration)[0].offset_s
    found = mentioned_times(answer, duration)
    return abs(found[0].offset_s - truth) if found else None


def evaluate(
    model_dir: str | Path,
    *,
    windows: int = 60,
    seed: int = 0,
    questions: int = 8,
    threads: int = 2,
    drop: DropConfig | None = None,
    render: tuple[int, int] = (RENDER_W, RENDER_H),
    explain: bool = True,
) -> dict[str, Any]:
    """Per-kind accuracy on `windows` held-out windows with `questions` questions each, and
    (`explain`) one alert-reason question per window: is its Yes/No right, is all of it."""
    torch.set_num_threads(threads)
    t0 = time.perf_counter()
    encoder, report = load_clip_encoder(model_dir)
    loaded = load_reasoner(model_dir, dtype="fp32", drop=drop or DropConfig(mode="none"))
    llm, projector, tok = loaded.llm, loaded.projector, loaded.tokenizer
    yes_id, no_id = yes_no_ids(tok)
    stop = [int(tok.convert_tokens_to_ids("<|im_end|>"))]
    rng = np.random.default_rng([seed, 99])
    correct: dict[str, list[bool]] = defaultdict(list)
    when_err: list[float] = []
    when_unparsed = 0
    examples: list[dict[str, str]] = []
    explain_rng = np.random.default_rng([seed, 98])  # its own stream: the others stay as they were
    explained: list[tuple[bool, bool]] = []  # (verdict right, whole answer right)
    for w in held_out_windows(windows, seed, report.image_size, render):
        with torch.no_grad():
            tokens = encoder(clips_of(w))  # (n, 64, M)
            seg = VideoSegment(project_clips(projector, tokens), w.duration, len(w.frames))
        qas = questions_for(w, rng, questions)
        yn = [qa for qa in qas if qa.kind in YES_NO_KINDS]
        if yn:
            ri = build_rule_inputs(tok, llm.embed, [qa.question for qa in yn], [seg])
            probs = llm.score_yes_no(ri.prefix_embeds, ri.visual_spans, ri.suffixes, yes_id, no_id)
            for qa, p in zip(yn, probs, strict=True):
                correct[qa.kind].append((p > 0.5) == (qa.answer == "Yes"))
        for qa in qas:
            if qa.kind in YES_NO_KINDS:
                continue
            answer = _generate(llm, tok, qa.question, seg, stop, 40 if qa.kind == "caption" else 8)
            if len(examples) < 12:
                examples.append({"q": qa.question, "truth": qa.answer, "model": answer})
            if qa.kind == "when":
                err = _when_error(answer, qa, w.duration)
                if err is None:
                    when_unparsed += 1
                else:
                    when_err.append(err)
                correct["when"].append(err is not None and err <= 2.0)
            else:
                correct[qa.kind].append(answer == qa.answer)
        if explain:
            qa = explain_qa(w, explain_rng)
            answer = _generate(llm, tok, qa.question, seg, stop, 40)
            explained.append((_verdict(answer) == _verdict(qa.answer), answer == qa.answer))
            if len(examples) < 14:
                examples.append({"q": qa.question, "truth": qa.answer, "model": answer})
    yes_no = [c for k in YES_NO_KINDS for c in correct[k]]
    out: dict[str, Any] = {
        "model": str(model_dir),
        "windows": windows,
        "seed": seed,
        "scene_seed_base": EVAL_SEED_BASE + seed * 10_000,
        "render": f"{render[0]}x{render[1]}",
        "drop": drop.mode if drop else "none",
        "accuracy": {k: round(float(np.mean(v)), 4) for k, v in sorted(correct.items())},
        "n": {k: len(v) for k, v in sorted(correct.items())},
        "yes_no_accuracy": round(float(np.mean(yes_no)), 4) if yes_no else None,
        "when_abs_error_s": {
            "mean": round(float(np.mean(when_err)), 2) if when_err else None,
            "median": round(float(np.median(when_err)), 2) if when_err else None,
            "within_2s": round(float(np.mean([e <= 2 for e in when_err])), 4) if when_err else None,
            "unparsed": when_unparsed,
        },
        "explain": {
            "n": len(explained),
            "verdict": round(float(np.mean([v for v, _ in explained])), 4) if explained else None,
            "exact": round(float(np.mean([e for _, e in explained])), 4) if explained else None,
        },
        "seconds": round(time.perf_counter() - t0, 1),
        "examples": examples,
    }
    return out


def _generate(llm: Any, tok: Any, question: str, seg: VideoSegment, stop: list[int], n: int) -> str:
    inputs = build_inputs(tok, llm.embed, question, [seg])
    gen = llm.generate_greedy(
        inputs.inputs_embeds, inputs.visual_spans, max_new_tokens=n, stop_ids=stop
    )
    return str(tok.decode(gen.tokens, skip_special_tokens=True)).strip()


def _verdict(answer: str) -> str:
    """The first word of an answer: the verdict of "Yes, a red car parked."."""
    return answer.replace(",", " ").replace(".", " ").split(" ", 1)[0]
