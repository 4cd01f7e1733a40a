"""Seeded CPU training of the tiny model, end to end (encoder + projector + LLM).

Data: windows of synthetic scenes (`reasoner.tiny.data`), rendered once into an in-memory pool
(train scene seeds `TRAIN_SEED_BASE + seed*10_000 + i`; evaluation uses other seeds), each
step drawing fresh questions about the pooled windows. Loss: cross-entropy on the answer tokens
(answer + `<|im_end|>`) only, prompts in the exact reference format built by `reasoner.prompt`.
The learning-rate schedule follows the step budget (`steps`) or, without one, the wall-clock
budget (`minutes`); only a fixed `steps` makes a run bit-reproducible on another machine.
"""

from __future__ import annotations

import logging
import math
import random
import shutil
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from encoder_trt.preprocess import normalise
from reasoner.loading import load_tokenizer_from
from reasoner.prompt import (
    IMAGE_TOKEN_INDEX,
    VideoSegment,
    chat_prompt,
    shared_prefix_length,
    tokenize_with_placeholders,
    user_message,
)
from reasoner.tiny.data import (
    FOCUS_WEIGHTS,
    HARD_NEGATIVE,
    KIND_WEIGHTS,
    QA,
    RENDER_H,
    RENDER_W,
    Window,
    corpus_texts,
    questions_for,
    sample_windows,
    with_explain,
)
from reasoner.tiny.labels import (
    AUX_LABELS,
    clip_labels,
    motion_labels,
    moved_pairs,
    token_labels,
)
from reasoner.tiny.model import (
    Batch,
    TinyConfig,
    TinyVideoChat,
    export,
    exported_config,
    load_exported,
    parameter_count,
)
from reasoner.tiny.oracle import clip_slots
from reasoner.tiny.tokenizer import build_tokenizer

log = logging.getLogger(__name__)
TRAIN_SEED_BASE = 1_000
EVAL_SEED_BASE = 900_000
TRAIN_RENDERS: tuple[tuple[int, int], ...] = ((RENDER_W, RENDER_H), (2 * RENDER_W, 2 * RENDER_H))
"""Camera sizes the training scenes cycle through. Squashed to the model input either way, but
a 320x240 frame averages its noise and draws thinner edges than a 160x120 one: a model trained
on 160x120 alone scored a parked red car 0.3-0.68 at 320x240 (the A3 camera) against
0.56-0.76 at 160x120."""


@dataclass
class TrainOptions:
    seed: int = 0
    minutes: float = 40.0
    steps: int | None = None
    scenes: int = 150
    windows_per_scene: int = 4
    batch_windows: int = 4
    questions_per_window: int = 8
    lr: float = 2e-3
    warmup: int = 100
    clips: tuple[int, int] = (4, 16)  # clips per training window (4 s each at 1 fps)
    renders: tuple[tuple[int, int], ...] = TRAIN_RENDERS  # camera sizes, scene by scene
    init: Path | None = None  # continue from an exported directory (same TinyConfig)
    aux_weight: float = 1.0  # auxiliary per-clip (actor, colour) loss on the encoder; 0 = off
    threads: int = 1
    log_every: int = 25
    stage: str = "video"  # "oracle": symbolic visual tokens (see `oracle`); "video": pixels
    distill_weight: float = 1.0  # video stage: pull projected tokens onto the oracle tokens
    token_weight: float = 0.0  # encoder/video stage: per-patch labels (labels.token_labels)
    apart_weight: float = 0.0  # encoder/video stage: keep a moving actor's frames apart in ToMe
    motion_weight: float = 0.0  # encoder/video stage: which bodies move, before and after ToMe
    freeze_llm_steps: int = 0  # video stage: train only encoder + projector at first
    freeze_vision: bool = False  # video stage: keep the encoder (UMT + ToMe) as `init` left it
    early_weight: float = 0.0  # deep supervision of yes/no question tokens (see model)
    compact: bool = False  # oracle stage: only the actor slots, no filler tokens
    focus: bool = False  # mostly presence / "did X happen" questions (`data.FOCUS_WEIGHTS`)
    explain_share: float = 0.0  # share of "explain" questions (alert reasons), see data
    decoy: float = HARD_NEGATIVE  # event questions about an actor that does not do it
    event_yes: float = 0.0  # event questions about an event the window shows (`data._event_pick`)
    still_share: float = 0.0  # training windows with actors held still (`data.held_still`)
    per_question_loss: bool = False  # each question weighs the same (`model.answer_weights`)
    config: TinyConfig = field(default_factory=TinyConfig)  # ignored with `init` (its own)
    image_size: int | None = None  # with `init`: continue at this input size (`resized_input`)


def prompt_ids(
    tok: Any, question: str, duration: float, n_frames: int
) -> tuple[list[int], list[int]]:
    """(ids before the visual block, ids after it), tokenised exactly as inference does."""
    seg = VideoSegment(torch.empty(0), duration, n_frames)
    ids = tokenize_with_placeholders(tok, chat_prompt(user_message(question, [seg])))
    cut = ids.index(IMAGE_TOKEN_INDEX)
    return ids[:cut], ids[cut + 1 :]


def answer_ids(tok: Any, answer: str) -> list[int]:
    return [int(i) for i in tok(answer + "<|im_end|>")["input_ids"]]


def clips_of(window: Window) -> torch.Tensor:
    """(n_clips, 4, 3, S, S) normalised pixels."""
    x = normalise(window.frames)  # (N, 3, S, S)
    return x.reshape(-1, 4, *x.shape[1:])


ASSISTANT_TAIL = 4  # "<|im_end|>", "\n", "<|im_start|>", "assistant" before the last "\n"
_PROMPTS: dict[tuple[int, str, float, int], tuple[list[int], list[int]]] = {}


def _prompt_ids_cached(tok: Any, question: str, duration: float, n: int) -> tuple[list, list]:
    key = (id(tok), question, duration, n)
    if key not in _PROMPTS:
        _PROMPTS[key] = prompt_ids(tok, question, duration, n)
    return _PROMPTS[key]


def make_batch(
    tok: Any,
    windows: Sequence[Window],
    qas: Sequence[Sequence[QA]],
    aux: bool = False,
    *,
    pixels_too: bool = True,
    slots: bool = False,
    early: bool = False,
    grid: int | None = None,
    moved_grid: int | None = None,
    motion_grid: int | None = None,
) -> Batch:
    """Teacher-forced questions over `windows`; `grid` (patches per side) adds per-patch
    encoder targets (`labels.token_labels`), `moved_grid` the pairs of patches that hold a
    moving actor in two frames of a clip (`labels.moved_pairs`), `motion_grid` which body
    patches move (`labels.motion_labels`)."""
    pixels, ranges, prefixes, suffixes, n_answer = [], [], [], [], []
    shared: list[list[int]] = []
    spans: list[list[tuple[int, int] | None]] = []
    start = 0
    for window, questions in zip(windows, qas, strict=True):
        n_clips = len(window.frames) // 4
        if pixels_too:
            pixels.append(clips_of(window))
        ranges.append((start, start + n_clips))
        start += n_clips
        sufs, ns = [], []
        spans.append([])
        for qa in questions:
            pre, suf = _prompt_ids_cached(tok, qa.question, window.duration, len(window.frames))
            ans = answer_ids(tok, qa.answer)
            if early and qa.answer in ("Yes", "No"):
                n_question = len(tok(" " + qa.question)["input_ids"])
                answer_at = len(suf) - 1  # suf ends with "assistant\n": predicts the answer
                spans[-1].append((max(0, answer_at - ASSISTANT_TAIL - n_question + 2), answer_at))
            else:
                spans[-1].append(None)
            sufs.append(suf + ans)
            ns.append(len(ans))
        cut = common_prompt_length(sufs, ns)
        prefixes.append(pre)
        shared.append(sufs[0][:cut])
        suffixes.append([suf[cut:] for suf in sufs])
        spans[-1] = [None if sp is None else (max(0, sp[0] - cut), sp[1] - cut) for sp in spans[-1]]
        n_answer.append(ns)
    labels = torch.from_numpy(np.concatenate([clip_labels(w) for w in windows])) if aux else None
    batch = Batch(
        torch.cat(pixels) if pixels else torch.empty(0), ranges, prefixes, suffixes, n_answer
    )
    batch.clip_labels = labels
    if grid is not None:
        batch.token_labels = torch.from_numpy(
            np.concatenate([token_labels(w, grid) for w in windows])
        )
    if moved_grid is not None:
        pairs = []
        for w, (a, _) in zip(windows, ranges, strict=True):
            rows = moved_pairs(w, moved_grid)
            rows[:, 0] += a
            pairs.append(rows)
        batch.moved_pairs = torch.from_numpy(np.concatenate(pairs))
    if motion_grid is not None:
        batch.motion_labels = torch.from_numpy(
            np.concatenate([motion_labels(w, motion_grid)[0] for w in windows])
        )
    batch.slots = [clip_slots(w, tok) for w in windows] if slots else None
    batch.early = spans if early else None
    batch.shared_ids = shared
    return batch


def common_prompt_length(suffixes: Sequence[Sequence[int]], n_answer: Sequence[int]) -> int:
    """How many leading ids every question of a window shares after its visual block (the
    timestamp sentence, about half of each suffix): run once per window instead of once per
    question. Each suffix keeps its last prompt id, which predicts the first answer id, so the
    supervised positions are unchanged; attention is causal, so the logits are exactly those
    of the unshared prompts (the same split `reasoner.prompt.build_rule_inputs` makes)."""
    limit = min(len(s) - n - 1 for s, n in zip(suffixes, n_answer, strict=True))
    return shared_prefix_length(suffixes, limit)


def window_pool(
    seeds: Sequence[int],
    per_scene: int,
    size: int,
    clips: tuple[int, int] = (4, 16),
    renders: Sequence[tuple[int, int]] = TRAIN_RENDERS,
    still_share: float = 0.0,
) -> list[Window]:
    """`per_scene` windows of each scene, scene i rendered at `renders[i % len(renders)]`;
    `still_share` of them with actors held still (`data.held_still`)."""
    if not renders:
        raise ValueError("renders must name at least one camera size")
    out: list[Window] = []
    for i, s in enumerate(seeds):
        render = renders[i % len(renders)]
        out += sample_windows(s, per_scene, size, render, clips=clips, still_share=still_share)
    return out


TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.json", "merges.txt")


def tokenizer_for(init: Path | None, tok_dir: Path) -> Any:
    """A new model gets a tokenizer built from today's question corpus; a continued one keeps
    its own. The BPE merges depend on the corpus, so rebuilding after any change to the
    questions would silently re-map token ids under trained embeddings (" red" moved from
    322 to 316 when hard negatives were added)."""
    if init is None:
        return build_tokenizer(tok_dir, corpus_texts())
    for name in TOKENIZER_FILES:
        if (Path(init) / name).is_file():
            shutil.copy(Path(init) / name, tok_dir / name)
    return load_tokenizer_from(tok_dir)


def resized_input(config: TinyConfig, image_size: int) -> TinyConfig:
    """`config` reading `image_size` px frames. No weight depends on the input size (the patch
    embedding is per patch, the position table is computed), so a trained model continues at
    a larger input with its position table laid out on the grid it was trained on and resized,
    as the reference resizes UMT-L's 14x14 table for 448 px, and ToMe merges the extra patches
    down to the same 64 tokens."""
    if image_size <= 0 or image_size % config.patch_size:
        raise ValueError(
            f"image_size must be a positive multiple of patch_size {config.patch_size}, "
            f"got {image_size}"
        )
    return replace(config, image_size=image_size, pos_base_grid=config.umt().pos_base_grid)


def lr_at(progress: float, step: int, opts: TrainOptions) -> float:
    if step < opts.warmup:
        return opts.lr * (step + 1) / opts.warmup
    return opts.lr * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0))))


def check_options(opts: TrainOptions) -> None:
    """Refuse options that cannot run together, naming them (ValueError), before any work."""
    if (
        opts.stage == "encoder"
        and max(opts.distill_weight, opts.token_weight, opts.motion_weight) <= 0
    ):
        raise ValueError(
            "the encoder stage needs a loss on the vision side: distill_weight, token_weight "
            "or motion_weight must be > 0"
        )
    if opts.batch_windows < 1:
        raise ValueError(f"batch_windows must be >= 1, got {opts.batch_windows}")
    pool_windows = opts.scenes * opts.windows_per_scene  # checked before rendering them
    if opts.batch_windows > pool_windows:
        raise ValueError(
            f"batch_windows {opts.batch_windows} exceeds the {pool_windows} pooled windows: "
            "lower it or raise scenes"
        )
    if not 0.0 <= opts.explain_share < 1.0:
        raise ValueError(f"explain_share must be in [0, 1), got {opts.explain_share}")
    if opts.token_weight < 0:
        raise ValueError(f"token_weight must be >= 0, got {opts.token_weight}")
    if opts.token_weight > 0 and opts.stage == "oracle":
        raise ValueError("token_weight trains the encoder: use it in the encoder or video stage")
    if opts.apart_weight < 0:
        raise ValueError(f"apart_weight must be >= 0, got {opts.apart_weight}")
    if opts.apart_weight > 0 and opts.stage == "oracle":
        raise ValueError("apart_weight trains the encoder: use it in the encoder or video stage")
    if opts.motion_weight < 0:
        raise ValueError(f"motion_weight must be >= 0, got {opts.motion_weight}")
    if opts.motion_weight > 0 and opts.stage == "oracle":
        raise ValueError("motion_weight trains the encoder: use it in the encoder or video stage")
    if not 0.0 <= opts.event_yes <= 1.0:
        raise ValueError(f"event_yes must be in [0, 1], got {opts.event_yes}")
    if not 0.0 <= opts.still_share <= 1.0:
        raise ValueError(f"still_share must be in [0, 1], got {opts.still_share}")
    if opts.stage not in ("oracle", "encoder", "video"):
        raise ValueError(f"stage must be 'oracle', 'encoder' or 'video', got {opts.stage!r}")
    if opts.freeze_vision and opts.stage != "video":
        raise ValueError(f"freeze_vision applies to the video stage, not {opts.stage!r}")


def train(opts: TrainOptions, out_dir: str | Path) -> dict[str, Any]:
    """Train, export to `out_dir`, return a summary (steps, seconds, losses)."""
    check_options(opts)
    t_start = time.perf_counter()
    torch.set_num_threads(opts.threads)
    torch.manual_seed(opts.seed)
    random.seed(opts.seed)
    rng = np.random.default_rng([opts.seed, 11])
    tok_dir = Path(tempfile.mkdtemp(prefix="fw-tiny-tok-"))
    tok = tokenizer_for(opts.init, tok_dir)
    config = exported_config(opts.init) if opts.init is not None else opts.config
    if opts.image_size is not None and opts.init is not None:
        config = resized_input(config, opts.image_size)
    elif opts.image_size is not None:
        config = replace(config, image_size=opts.image_size)
    if len(tok) > config.vocab_size:
        raise ValueError(f"tokenizer has {len(tok)} ids > vocab_size {config.vocab_size}")
    seeds = [TRAIN_SEED_BASE + opts.seed * 10_000 + i for i in range(opts.scenes)]
    pool = window_pool(
        seeds,
        opts.windows_per_scene,
        config.image_size,
        opts.clips,
        opts.renders,
        opts.still_share,
    )
    log.info("pool: %d windows in %.1f s", len(pool), time.perf_counter() - t_start)

    if opts.stage in ("encoder", "video"):  # the probe is trained (not exported): today's labels
        config = replace(config, aux_labels=AUX_LABELS)
    model = TinyVideoChat(config)
    model.oracle = opts.stage == "oracle"
    model.compact = opts.compact
    model.per_question = opts.per_question_loss
    model.filler_id = int(tok.convert_tokens_to_ids("<|endoftext|>"))
    if opts.init is not None:
        load_exported(model, opts.init)
        log.info("initialised from %s", opts.init)
    if opts.freeze_vision:  # what the encoder stages taught it survives the answers' gradients
        model.vision.requires_grad_(False)
    video = opts.stage in ("encoder", "video")  # pixels in
    encoder_only = opts.stage == "encoder"  # no LLM pass: distillation (+ aux) only
    distill = video and opts.distill_weight > 0
    n_params = parameter_count([model])
    log.info("model: %d parameters", n_params)
    optim = torch.optim.AdamW(model.parameters(), lr=opts.lr, weight_decay=0.01, betas=(0.9, 0.98))
    budget_s = opts.minutes * 60.0
    t_train = time.perf_counter()
    step, history = 0, []
    ema_loss, ema_acc, ema_aux = None, None, None
    ema_apart: float | None = None
    ema_motion: float | None = None
    # Diagnostic: yes/no answer accuracy against always answering the majority ("No").
    yes_no = torch.tensor([answer_ids(tok, "Yes")[0], answer_ids(tok, "No")[0]])
    yn_hits, yn_no, yn_total = 0, 0, 0
    while True:
        elapsed = time.perf_counter() - t_start
        if opts.steps is not None and step >= opts.steps:
            break
        if opts.steps is None and elapsed > budget_s - 30.0:  # keep time to export
            break
        progress = step / opts.steps if opts.steps else elapsed / budget_s
        for group in optim.param_groups:
            group["lr"] = lr_at(progress, step, opts)
        idx = rng.choice(len(pool), size=opts.batch_windows, replace=False)
        windows = [pool[int(i)] for i in idx]
        weights: tuple[float, ...] = FOCUS_WEIGHTS if opts.focus else KIND_WEIGHTS
        if opts.explain_share > 0:  # 0 keeps the exact mix (and random stream) of before
            weights = with_explain(weights, opts.explain_share)
        qas = [
            questions_for(w, rng, opts.questions_per_window, weights, opts.event_yes, opts.decoy)
            for w in windows
        ]
        batch = make_batch(
            tok, windows, qas, aux=video and opts.aux_weight > 0, pixels_too=video, slots=not video
            or distill, early=opts.early_weight > 0,
            grid=config.image_size // config.patch_size if opts.token_weight > 0 else None,
            moved_grid=config.image_size // config.patch_size if opts.apart_weight > 0 else None,
            motion_grid=config.image_size // config.patch_size if opts.motion_weight > 0 else None,
        )  # fmt: skip
        frozen = encoder_only or (video and step < opts.freeze_llm_steps)
        for p in model.llm.parameters():
            p.requires_grad_(not frozen)
        model.train()
        if encoder_only:
            model.visual_blocks(batch)
            loss = pred = target = torch.zeros(0)
        else:
            loss, pred, target = model.loss(batch)
        total = loss.sum() if encoder_only else loss
        if model.aux_loss is not None:
            total = total + opts.aux_weight * model.aux_loss
        if model.distill_loss is not None:
            total = total + opts.distill_weight * model.distill_loss
        if model.token_loss is not None:
            total = total + opts.token_weight * model.token_loss
        if model.apart_loss is not None:
            total = total + opts.apart_weight * model.apart_loss
        if model.motion_loss is not None:
            total = total + opts.motion_weight * model.motion_loss
        early_loss = model.early_loss()
        if early_loss is not None:
            total = total + opts.early_weight * early_loss
        optim.zero_grad(set_to_none=True)
        total.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optim.step()
        acc = float((pred == target).float().mean()) if target.numel() else 0.0
        value = float(loss.detach()) if loss.numel() == 1 else 0.0
        is_yn = torch.isin(target, yes_no)
        yn_hits += int((pred[is_yn] == target[is_yn]).sum())
        yn_no += int((target[is_yn] == yes_no[1]).sum())
        yn_total += int(is_yn.sum())
        aux_value = float(model.aux_loss.detach()) if model.aux_loss is not None else 0.0
        if model.distill_loss is not None:
            aux_value = float(model.distill_loss.detach())  # logged in the aux column
        ema_aux = aux_value if ema_aux is None else 0.95 * ema_aux + 0.05 * aux_value
        ema_loss = value if ema_loss is None else 0.95 * ema_loss + 0.05 * value
        ema_acc = acc if ema_acc is None else 0.95 * ema_acc + 0.05 * acc
        if model.apart_loss is not None:
            apart = float(model.apart_loss.detach())
            ema_apart = apart if ema_apart is None else 0.95 * ema_apart + 0.05 * apart
        if model.motion_loss is not None:
            motion = float(model.motion_loss.detach())
            ema_motion = motion if ema_motion is None else 0.95 * ema_motion + 0.05 * motion
        step += 1
        if step % opts.log_every == 0:
            yn_acc, yn_base = yn_hits / max(yn_total, 1), yn_no / max(yn_total, 1)
            row = {"step": step, "loss": ema_loss, "token_acc": ema_acc, "aux": ema_aux,
                   "yes_no_acc": yn_acc, "yes_no_majority": max(yn_base, 1 - yn_base)}  # fmt: skip
            if ema_apart is not None:
                row["apart"] = ema_apart
            if ema_motion is not None:
                row["motion"] = ema_motion
            history.append({k: round(float(v or 0.0), 4) for k, v in row.items()})
            log.info("step %d loss %.4f token-acc %.3f yes/no %.3f (majority %.3f) aux %.4f "
                     "lr %.2e %.0f s", step, ema_loss, ema_acc, yn_acc, row["yes_no_majority"],
                     ema_aux, optim.param_groups[0]["lr"],
                     time.perf_counter() - t_start)  # fmt: skip
            if ema_apart is not None:
                log.info("step %d apart %.4f", step, ema_apart)
            if ema_motion is not None:
                log.info("step %d motion %.4f", step, ema_motion)
            yn_hits, yn_no, yn_total = 0, 0, 0
    train_s = time.perf_counter() - t_train
    summary = {
        "seed": opts.seed,
        "steps": step,
        "train_seconds": round(train_s, 1),
        "total_seconds": round(time.perf_counter() - t_start, 1),
        "parameters": n_params,
        "pool_windows": len(pool),
        "final_loss": ema_loss,
        "init": str(opts.init) if opts.init else None,
        # What shaped this run's data and loss, so a model directory says how it was made.
        "options": {
            "stage": opts.stage,
            "lr": opts.lr,
            "scenes": opts.scenes,
            "focus": opts.focus,
            "event_yes": opts.event_yes,
            "decoy": opts.decoy,
            "still_share": opts.still_share,
            "token_weight": opts.token_weight,
            "apart_weight": opts.apart_weight,
            "motion_weight": opts.motion_weight,
            "explain_share": opts.explain_share,
            "per_question_loss": opts.per_question_loss,
            "batch_windows": opts.batch_windows,
            "freeze_llm_steps": opts.freeze_llm_steps,
            "freeze_vision": opts.freeze_vision,
        },
        "history": history[-40:],
    }
    model.eval()
    export(model, out_dir, tok_dir, {"training": summary}, max_frames=4 * opts.clips[1])
    return summary
