"""Held-out accuracy of a model directory, through the project's normal loading and prompt path.

`load_clip_encoder` + `load_reasoner` (no special-casing), clips encoded with the UMT + ToMe
encoder, projected with `project_clips`, prompts built by `reasoner.prompt`. Yes/no questions
are scored the way alert rules are (`build_rule_inputs` + `score_yes_no`, P(yes) > 0.5); the
other kinds are answered by greedy decoding and compared with the ground-truth answer. "When"
answers are parsed with `reasoner.answers.mentioned_times` and scored by absolute error.
Scene seeds start at `EVAL_SEED_BASE`, disjoint from every training seed.

`oracle=True` replaces the pixels with the ground-truth tokens the LLM was first taught on
(`reasoner.tiny.oracle`): the accuracy the LLM would reach with a perfect encoder, which says
whether a yes/no error is the LLM's or the encoder's. `yes_no_groups` splits yes/no accuracy
by question kind, topic (event or actor kind) and answer, and marks "decoy" No answers (an
actor of the named colour and kind is on screen but does not do the event), where a model
that checks colour and kind but not the action goes wrong.

Held-out windows run to 64 frames. A checkpoint that declares a shorter trained prompt
(`fw_max_frames`) is never sent longer ones by the reasoner, which scans in windows of that
size, so `yes_no_within_max_frames` also reports yes/no accuracy on the windows within it:
the regime the product runs the model in. `yes_no_beyond_max_frames` reports the longer
windows, fed whole as above and (`query_long`) asked the way a user's question about such a
window is answered: stored in memory and put through `LocalReasoner.query`, which scans and
zooms within the budget (`reasoner.tiny.query_path`).
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
from reasoner.engine import MAX_FRAMES_KEY
from reasoner.loading import load_reasoner
from reasoner.modeling_qwen2_flash import DropConfig
from reasoner.projector import project_clips
from reasoner.prompt import VideoSegment, build_inputs, build_rule_inputs, yes_no_ids
from reasoner.tiny.data import (
    EVENTS,
    QA,
    RENDER_H,
    RENDER_W,
    Window,
    explain_qa,
    questions_for,
    sample_windows,
    seen_tracks,
)
from reasoner.tiny.oracle import clip_slots, oracle_block
from reasoner.tiny.query_path import QueryPath
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


def yes_no_group(qa: QA, w: Window) -> str:
    """Kind, topic and answer of a yes/no question, e.g. `happened/loiter/no-decoy`."""
    group = f"{qa.kind}/{qa.topic}/{qa.answer.lower()}"
    event_no = qa.answer == "No" and qa.topic in EVENTS and qa.colour is not None
    if event_no and seen_tracks(w.truth, w.times, EVENTS[qa.topic][0], qa.colour):
        group += "-decoy"
    return group


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
    oracle: bool = False,
    query_long: bool = False,
) -> dict[str, Any]:
    """Per-kind accuracy on `windows` held-out windows with `questions` questions each, and
    (`explain`) one alert-reason question per window: is its Yes/No right, is all of it.
    `oracle`: ground-truth visual tokens instead of pixels (see the module docstring).
    `query_long`: also ask the yes/no questions on windows longer than `fw_max_frames`
    through the query path (pixels only)."""
    torch.set_num_threads(threads)
    t0 = time.perf_counter()
    encoder, report = load_clip_encoder(model_dir)
    loaded = load_reasoner(model_dir, dtype="fp32", drop=drop or DropConfig(mode="none"))
    llm, projector, tok = loaded.llm, loaded.projector, loaded.tokenizer
    yes_id, no_id = yes_no_ids(tok)
    stop = [int(tok.convert_tokens_to_ids("<|im_end|>"))]
    filler_id = int(tok.convert_tokens_to_ids("<|endoftext|>"))
    groups: dict[str, list[bool]] = defaultdict(list)
    max_frames = loaded.config.get(MAX_FRAMES_KEY)
    in_budget: list[bool] = []  # yes/no answers on windows the reasoner would send this model
    beyond: list[bool] = []  # the same on longer windows, fed whole
    beyond_query: list[bool] = []  # the longer windows' questions through the query path
    query_path = None
    if query_long and max_frames is not None and not oracle:
        query_path = QueryPath(model_dir, drop)
    rng = np.random.default_rng([seed, 99])
    correct: dict[str, list[bool]] = defaultdict(list)
    when_err: list[float] = []
    when_unparsed = 0
    examples: list[dict[str, str]] = []
    explain_rng = np.random.default_rng([seed, 98])  # its own stream: the others stay as they were
    explained: list[tuple[bool, bool]] = []  # (verdict right, whole answer right)
    for w in held_out_windows(windows, seed, report.image_size, render):
        with torch.no_grad():
            if oracle:
                visual, _ = oracle_block(llm.model.embed_tokens, clip_slots(w, tok), filler_id)
            else:
                tokens = encoder(clips_of(w))  # (n, 64, C)
                visual = project_clips(projector, tokens)  # (n*64, D)
            seg = VideoSegment(visual, w.duration, len(w.frames))
        qas = questions_for(w, rng, questions)
        longer = max_frames is not None and len(w.frames) > max_frames
        yn = [qa for qa in qas if qa.kind in YES_NO_KINDS]
        if yn:
            ri = build_rule_inputs(tok, llm.embed, [qa.question for qa in yn], [seg])
            probs = llm.score_yes_no(ri.prefix_embeds, ri.visual_spans, ri.suffixes, yes_id, no_id)
            for qa, p in zip(yn, probs, strict=True):
                right = (p > 0.5) == (qa.answer == "Yes")
                correct[qa.kind].append(right)
                groups[yes_no_group(qa, w)].append(right)
                (beyond if longer else in_budget).append(right)
            if longer and query_path is not None:
                said = query_path.ask(w, tokens.numpy(), [qa.question for qa in yn])
                beyond_query += [
                    _verdict(a.answer) == qa.answer for a, qa in zip(said, yn, strict=True)
                ]
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
    if query_path is not None:
        query_path.close()
    yes_no = [c for k in YES_NO_KINDS for c in correct[k]]
    out: dict[str, Any] = {
        "model": str(model_dir),
        "windows": windows,
        "seed": seed,
        "scene_seed_base": EVAL_SEED_BASE + seed * 10_000,
        "render": f"{render[0]}x{render[1]}",
        "drop": drop.mode if drop else "none",
        "visual": "oracle" if oracle else "pixels",
        "accuracy": {k: round(float(np.mean(v)), 4) for k, v in sorted(correct.items())},
        "n": {k: len(v) for k, v in sorted(correct.items())},
        "yes_no_accuracy": round(float(np.mean(yes_no)), 4) if yes_no else None,
        "yes_no_within_max_frames": {
            "max_frames": max_frames,
            "n": len(in_budget),
            "accuracy": round(float(np.mean(in_budget)), 4) if in_budget else None,
        },
        "yes_no_beyond_max_frames": {
            "n": len(beyond),
            "accuracy": round(float(np.mean(beyond)), 4) if beyond else None,
            "query_path": round(float(np.mean(beyond_query)), 4) if beyond_query else None,
        },
        "yes_no_groups": {
            g: {"n": len(v), "accuracy": round(float(np.mean(v)), 4)}
            for g, v in sorted(groups.items())
        },
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
