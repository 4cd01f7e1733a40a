"""The in-process reasoner: plan -> fetch -> project -> prompt -> generate, and rule scoring.

`LocalReasoner` satisfies `flashwatch.protocols.Reasoner`. It is *not* thread-safe (one model,
one set of caches): in a server it is owned by the worker of `reasoner.scheduler.EngineService`,
which is why a query is also offered as a generator of steps (`query_steps`): the worker can run
alert scoring between a query's prefill and its decode chunks, so a long question never holds
scoring up for longer than one step.

Errors: `NoFootage` (from `reasoner.planning`) when memory holds no clip of any asked camera in
the range (the API maps it to 404); a camera without footage in a multi-camera question is left
out of the prompt and logged, as long as one camera has footage.

Times in the answer ("at 42 s") are read as seconds from the start of the video the model saw:
the first clip of a single block, or the asked range's start when a zoom answer shows several
labelled segments ("cam, from 3600 s to 3664 s"). With several cameras they are mapped on the
first camera (`AnswerTime.camera_id`), the only reading the prompt supports.

Evidence comes from the first text-guided drop stage (its head-mean attention of the last prompt
token, summed per clip). With dropping off or uniform-only there is no such stage and evidence
is empty for pyramid answers; zoom answers then cite the most relevant window's first clip.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from flashwatch.config import ReasonerConfig
from flashwatch.messages import (
    AnswerTime,
    CameraWindow,
    ClipTokens,
    EvidenceClip,
    QueryAnswer,
    QueryRequest,
    RuleScore,
    ScoreAnswer,
    ScoreRequest,
)
from memory.codec import tokens_to_array
from memory.store import MemoryStore
from reasoner.answers import (
    explain_question,
    mentioned_times,
    merge_adjacent,
    relevance_question,
    rule_question,
    top_clips,
)
from reasoner.loading import LoadedReasoner, load_reasoner
from reasoner.modeling_qwen2_flash import DropConfig, DropStage, clip_relevance
from reasoner.planning import (
    NoFootage,
    PlanLimits,
    WindowPlan,
    even_indices,
    first_relevant,
    fixed_windows,
    onset_windows,
    plan_window,
    split_budget,
    top_windows,
)
from reasoner.projector import project_clips
from reasoner.prompt import VideoSegment, build_inputs, build_rule_inputs, yes_no_ids

__all__ = ["LocalReasoner", "NoFootage", "drive", "drop_config_for"]

log = logging.getLogger(__name__)
REFERENCE_LAYERS = 28  # the drop layer defaults [4, 18] are for 28-layer models
DECODE_CHUNK = 8  # decode tokens per scheduler step
SCAN_BATCH = 8  # zoom windows per batched relevance pass
MAX_FRAMES_KEY = "fw_max_frames"  # config.json: most frames per prompt (small checkpoints only)
MAX_STEP_KEY = "fw_max_frame_step_s"  # config.json: widest trained frame spacing (ditto)


def drive(steps: Generator[str, None, Any]) -> Any:
    """Run a step generator to completion and return its result."""
    while True:
        try:
            next(steps)
        except StopIteration as done:
            return done.value


def drop_config_for(cfg: ReasonerConfig, num_layers: int) -> DropConfig:
    """The configured dropping, with the layer list rescaled (from 28 layers) when the model
    is too shallow for it (tiny test models), so every model directory loads."""
    if cfg.drop_mode == "none" or not cfg.drop_layers:
        return DropConfig(mode="none")
    layers = list(cfg.drop_layers)
    if layers[-1] >= num_layers:
        scaled = [max(1, round(x * num_layers / REFERENCE_LAYERS)) for x in layers]
        if len(set(scaled)) != len(scaled) or scaled[-1] >= num_layers:
            log.warning("drop layers %s do not fit %d layers; dropping off", layers, num_layers)
            return DropConfig(mode="none")
        log.warning("drop layers %s rescaled to %s for %d layers", layers, scaled, num_layers)
        layers = scaled
    return DropConfig(cfg.drop_mode, tuple(layers), tuple(cfg.drop_ratios))


def clip_duration(clips: Sequence[ClipTokens]) -> float:
    """Seconds the clips span: first frame to one stride after the last frame."""
    first, last = clips[0].t, clips[-1].t
    stride = (last[3] - last[0]) / 3
    return last[3] + stride - first[0]


def merge_chosen(chosen: Sequence[tuple[int, int, int]]) -> list[tuple[int, int, int]]:
    """Kept (segment, start, end) windows, in order, touching ones of a segment merged."""
    return [
        (n, a, b)
        for n in sorted({c[0] for c in chosen})
        for a, b in merge_adjacent(sorted((a, b) for m, a, b in chosen if m == n))
    ]


@dataclass
class _Part:
    """One visual block of the prompt: some clips of one camera, with an optional label."""

    window: CameraWindow
    plan: WindowPlan
    clips: list[ClipTokens]
    label: str | None = None
    duration: float = field(init=False)

    def __post_init__(self) -> None:
        self.duration = clip_duration(self.clips)


class LocalReasoner:
    """Answers questions and scores rules with a loaded model over a memory store."""

    def __init__(
        self,
        loaded: LoadedReasoner,
        store: MemoryStore,
        cfg: ReasonerConfig,
        *,
        s0: float = 1.0,
        limits: PlanLimits | None = None,
        evidence_clips: int = 3,
        score_drop: DropConfig | None = None,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        """`score_drop`: dropping used for rule scoring only (None: the model's own). The
        default's text-guided stage makes every extra rule re-run the layers after it (~0.18 of
        the first rule); a rule-independent schedule such as `DropConfig("uniform", ...)`
        shares everything but the rule's own tokens (~0.03), at the price of a selection the
        model was not trained with and no attention evidence."""
        depth = loaded.llm.cfg.num_hidden_layers
        if score_drop is not None and score_drop.active and score_drop.layers[-1] >= depth:
            raise ValueError(f"score_drop layers {score_drop.layers} exceed the model depth")
        self.score_drop = score_drop
        if loaded.tokenizer is None:
            raise ValueError("the reasoner needs the checkpoint's tokenizer")
        self.loaded, self.store, self.cfg = loaded, store, cfg
        self.llm, self.projector, self.tok = loaded.llm, loaded.projector, loaded.tokenizer
        self.limits = limits or PlanLimits(frame_budget=cfg.frame_budget, s0=s0)
        max_frames = loaded.config.get(MAX_FRAMES_KEY)
        if max_frames is not None:  # the checkpoint was trained on shorter prompts
            step = loaded.config.get(MAX_STEP_KEY)
            capped = self.limits.capped(int(max_frames), None if step is None else float(step))
            if capped != self.limits:
                log.info(
                    "the model reads at most %s frames per prompt (%s), %s s apart at most: "
                    "frame budget %d, zoom windows of %d frames, pyramid stride <= %g s",
                    max_frames, MAX_FRAMES_KEY, step, capped.frame_budget,
                    capped.zoom_window_frames, capped.max_pyramid_stride_s,
                )  # fmt: skip
            self.limits = capped
        self.evidence_clips = evidence_clips
        self.clock = clock
        self.yes_no = yes_no_ids(self.tok)
        ids = [self.tok.convert_tokens_to_ids(t) for t in ("<|im_end|>", "<|endoftext|>")]
        self.stop_ids = {int(i) for i in ids if i is not None}

    @classmethod
    def from_config(
        cls, cfg: ReasonerConfig, store: MemoryStore, *, s0: float = 1.0
    ) -> LocalReasoner:
        """Load `cfg.model_dir` on `cfg.device` in `cfg.dtype` with the configured dropping."""
        if cfg.model_dir is None:
            raise ValueError("reasoner.model_dir is not set")
        layers = int(json.loads((cfg.model_dir / "config.json").read_text())["num_hidden_layers"])
        drop = drop_config_for(cfg, layers)
        loaded = load_reasoner(cfg.model_dir, dtype=cfg.dtype, device=cfg.device, drop=drop)
        return cls(loaded, store, cfg, s0=s0)

    # ------------------------------------------------------------------ shared pieces

    def _embed(self, ids: list[int]) -> torch.Tensor:
        return self.llm.embed(ids)

    def _project(self, clips: Sequence[ClipTokens]) -> torch.Tensor:
        """(C*64, D) projected tokens of clips in temporal order."""
        arr = np.stack([tokens_to_array(c) for c in clips])  # (C, 64, M)
        return project_clips(self.projector, torch.from_numpy(arr))

    def _segments(self, parts: Sequence[_Part]) -> list[VideoSegment]:
        return [
            VideoSegment(self._project(p.clips), p.duration, 4 * len(p.clips), p.label)
            for p in parts
        ]

    def _evidence(
        self, stages: Sequence[DropStage], clips: Sequence[ClipTokens]
    ) -> list[tuple[ClipTokens, float]]:
        """The most-attended clips (heaviest first) with their share of the attention."""
        stage = next((s for s in stages if s.scores is not None), None)
        if stage is None or not clips:
            return []
        per_clip = clip_relevance(stage, len(clips) * clips[0].shape[0], clips[0].shape[0])
        total = float(per_clip.sum()) or 1.0
        weights = (per_clip / total).tolist()
        return [(clips[i], weights[i]) for i in top_clips(weights, self.evidence_clips)]

    # ------------------------------------------------------------------ query

    def query(self, request: QueryRequest) -> QueryAnswer:
        result: QueryAnswer = drive(self.query_steps(request))
        return result

    def query_steps(self, request: QueryRequest) -> Generator[str, None, QueryAnswer]:
        """The query as resumable steps (yields a step name after each costly piece)."""
        start = self.clock()
        timings: dict[str, float] = {}
        mark = start

        def lap(name: str) -> None:
            nonlocal mark
            now = self.clock()
            timings[name] = timings.get(name, 0.0) + now - mark
            mark = now

        if not request.windows:
            raise ValueError("a query needs at least one camera window")
        limits = split_budget(self.limits, len(request.windows))
        plans: list[tuple[CameraWindow, WindowPlan]] = []
        missing: list[NoFootage] = []
        for w in request.windows:
            try:
                cov = self.store.coverage(w.camera_id)
                plans.append(
                    (w, plan_window(w.camera_id, cov, w.t_from, w.t_to, limits, request.strategy))
                )
            except NoFootage as exc:
                missing.append(exc)
        lap("plan")
        parts: list[_Part] = []
        scan_windows = scan_frames = 0
        for w, plan in plans:
            clips = self.store.range(w.camera_id, plan.level, plan.t_from, plan.t_to)
            lap("fetch")
            if not clips:
                missing.append(NoFootage(w.camera_id, w.t_from, w.t_to))
            elif plan.zoom is None:
                keep = even_indices(len(clips), plan.max_clips)
                parts.append(_Part(w, plan, [clips[i] for i in keep], w.camera_name or None))
            else:
                chosen, n_windows, n_frames = yield from self._zoom(
                    request.question, w, plan, clips, lap
                )
                parts.extend(chosen)
                scan_windows += n_windows
                scan_frames += n_frames
        if not parts:
            raise missing[0]
        for gone in missing:
            log.info("query: %s; answering from the other cameras", gone)
        if len(parts) == 1:
            parts[0].label = None  # one video: the exact reference prompt
        segments = self._segments(parts)
        lap("project")
        inputs = build_inputs(self.tok, self._embed, request.question, segments)
        lap("prompt")
        pre = self.llm.prefill(inputs.inputs_embeds, inputs.visual_spans)
        lap("prefill")
        yield "prefill"
        tokens: list[int] = []
        logits = pre.logits[None]
        budget = min(request.max_new_tokens, self.cfg.max_new_tokens)
        device = inputs.inputs_embeds.device
        while len(tokens) < budget:
            nxt = int(logits[0].argmax())
            tokens.append(nxt)
            if nxt in self.stop_ids or len(tokens) == budget:
                break
            logits = self.llm.decode_step(torch.tensor([[nxt]], device=device), pre.cache)
            if len(tokens) % DECODE_CHUNK == 0:
                lap("decode")
                yield "decode"
        answer = str(self.tok.decode(tokens, skip_special_tokens=True)).strip()
        lap("decode")

        all_clips = [c for p in parts for c in p.clips]
        evidence = self._evidence(pre.stages, all_clips)
        first = parts[0]
        if not evidence and first.plan.zoom is not None:
            evidence = [(first.clips[0], 1.0)]
        if len(parts) == 1 or first.plan.zoom is None:
            base, span = first.clips[0].t[0], first.duration
        else:  # several zoom segments, labelled with offsets from the asked range start
            base, span = first.window.t_from, first.window.t_to - first.window.t_from
        times = [
            AnswerTime(
                text=m.text,
                offset_s=m.offset_s,
                t=base + m.offset_s,
                camera_id=first.window.camera_id,
            )
            for m in mentioned_times(answer, span)
        ]
        n_visual = sum(n for _, n in inputs.visual_spans)
        kept = len(pre.stages[-1].kept) if pre.stages else n_visual
        return QueryAnswer(
            answer=answer,
            evidence=[c.t[0] for c, _ in evidence],
            level=first.plan.level,
            frames=4 * len(all_clips),
            latency_s=self.clock() - start,
            strategy=first.plan.strategy,
            duration_s=first.duration,
            times=times,
            evidence_clips=[
                EvidenceClip(camera_id=c.camera_id, level=c.level, t=c.t[0], weight=wt)
                for c, wt in evidence
            ],
            timings=timings,
            tokens_visual=n_visual,
            tokens_kept=kept,
            scan_windows=scan_windows,
            scan_frames=scan_frames,
        )

    def _zoom(
        self,
        question: str,
        w: CameraWindow,
        plan: WindowPlan,
        clips: list[ClipTokens],
        lap: Callable[[str], None],
    ) -> Generator[str, None, tuple[list[_Part], int, int]]:
        """Score fixed windows for relevance (batched, one prompt text), keep the top ones,
        then zoom in: each kept window of a level above 0 is scanned again on the next finer
        level inside its span, down to level 0, so the answer reads the finest footage (a
        coarse scan locates the event; its 16 s or 64 s frames cannot time it). At level 0 the
        leading clips of each kept window that are not relevant alone are left out
        (`planning.first_relevant`). Returns the answer parts and the windows/frames scanned.
        """
        assert plan.zoom is not None
        text = relevance_question(question)
        level, wc, top_k = plan.zoom.level, plan.zoom.window_clips, plan.zoom.top_k
        segments = [clips]
        scanned = frames = 0
        while True:
            found: list[tuple[float, int, int, int]] = []  # (score, segment, start, end)
            for n, seg in enumerate(segments):
                windows = fixed_windows(len(seg), wc)
                scores = yield from self._scan(text, seg, windows, lap)
                found += [(sc, n, a, b) for sc, (a, b) in zip(scores, windows, strict=True)]
                scanned += len(windows)
                frames += 4 * sum(b - a for a, b in windows)
            scores = [f[0] for f in found]
            keep = onset_windows(scores, top_windows(scores, top_k), [f[1] for f in found])
            chosen = [found[k][1:] for k in keep]
            if level == 0:
                break
            finer = []
            for n, a, b in merge_chosen(chosen):
                t0 = segments[n][a].t[0]
                t1 = t0 + clip_duration(segments[n][a:b])
                inside = self.store.range(w.camera_id, level - 1, t0, t1)
                inside = [c for c in inside if c.t[0] < t1 - 1e-6]  # range() includes t1
                if inside:
                    finer.append(inside)
            if not finer:  # the finer level has expired here: answer at this one
                break
            segments, level = finer, level - 1
        ranges = merge_chosen(chosen)
        if level == 0:  # time the event inside each kept window: score its clips one by one
            trimmed = []
            for n, a, b in ranges:
                if b - a > 1:
                    singles = [(i, i + 1) for i in range(a, b)]
                    clip_scores = yield from self._scan(text, segments[n], singles, lap)
                    scanned += len(singles)
                    frames += 4 * len(singles)
                    a += first_relevant(clip_scores)
                trimmed.append((n, a, b))
            ranges = trimmed
        parts = []
        for n, a, b in ranges:
            seg = segments[n]
            t0 = seg[a].t[0] - w.t_from
            t1 = t0 + clip_duration(seg[a:b])
            label = f"{w.camera_name or w.camera_id}, from {t0:.0f} s to {t1:.0f} s"
            parts.append(_Part(w, plan, seg[a:b], label))
        return parts, scanned, frames

    def _scan(
        self,
        text: str,
        clips: list[ClipTokens],
        windows: list[tuple[int, int]],
        lap: Callable[[str], None],
    ) -> Generator[str, None, list[float]]:
        """P(yes) of the relevance question for each window (equal sizes), in batches.

        Every window states the same nominal duration so all prompts tokenise identically and
        stack into one batch; the answer prompt then states each kept segment's true duration.
        """
        wc = windows[0][1] - windows[0][0]
        nominal = clip_duration(clips[windows[0][0] : windows[0][1]])
        yes, no = self.yes_no
        scores: list[float] = []
        for i in range(0, len(windows), SCAN_BATCH):
            batch = windows[i : i + SCAN_BATCH]
            rows = []
            spans: list[tuple[int, int]] = []
            for s, e in batch:
                seg = VideoSegment(self._project(clips[s:e]), nominal, 4 * wc)
                inputs = build_inputs(self.tok, self._embed, text, [seg])
                rows.append(inputs.inputs_embeds)
                spans = inputs.visual_spans
            scored = self.llm.score_prompts(torch.cat(rows), spans, yes, no)
            scores.extend(r.p_yes for r in scored)
            lap("scan")
            yield "scan"
        return scores

    # ------------------------------------------------------------------ rule scoring

    def score(self, request: ScoreRequest) -> ScoreAnswer:
        """P(yes) per rule over the window's level-0 clips, all rules sharing one prefix."""
        start = mark = self.clock()
        timings: dict[str, float] = {}

        def lap(name: str) -> None:
            nonlocal mark
            now = self.clock()
            timings[name] = now - mark
            mark = now

        w = request.window
        clips = self.store.range(w.camera_id, 0, w.t_from, w.t_to)
        if not clips:
            raise NoFootage(w.camera_id, w.t_from, w.t_to)
        clips = [clips[i] for i in even_indices(len(clips), self.limits.max_clips)]
        lap("fetch")
        if not request.rules:
            return ScoreAnswer(scores=[], frames=4 * len(clips), timings=timings)
        seg = VideoSegment(self._project(clips), clip_duration(clips), 4 * len(clips))
        lap("project")
        questions = [rule_question(r.text) for r in request.rules]
        ri = build_rule_inputs(self.tok, self._embed, questions, [seg])
        own_drop = self.llm.drop
        self.llm.drop = self.score_drop or own_drop  # the worker owns the model: no race
        try:
            results = self.llm.score_rules(
                ri.prefix_embeds, ri.visual_spans, ri.suffixes, *self.yes_no
            )
        finally:
            self.llm.drop = own_drop
        lap("score")
        out: list[RuleScore] = []
        for rule, res in zip(request.rules, results, strict=True):
            ev = [c.t[0] for c, _ in self._evidence(res.stages, clips)]
            answer = self._explain(rule.text, seg) if request.explain else ""
            out.append(
                RuleScore(
                    rule_id=rule.rule_id,
                    p_yes=min(1.0, max(0.0, res.p_yes)),
                    answer=answer,
                    evidence=ev,
                )
            )
        if request.explain:
            lap("explain")
        return ScoreAnswer(
            scores=out,
            frames=4 * len(clips),
            latency_s=self.clock() - start,
            timings=timings,
            tokens_visual=seg.tokens.shape[0],
        )

    def _explain(self, text: str, seg: VideoSegment, max_new_tokens: int = 32) -> str:
        """A short free-text answer to the rule's question (explain=True; costs a generation)."""
        inputs = build_inputs(self.tok, self._embed, explain_question(text), [seg])
        gen = self.llm.generate_greedy(
            inputs.inputs_embeds,
            inputs.visual_spans,
            max_new_tokens=min(max_new_tokens, self.cfg.max_new_tokens),
            stop_ids=tuple(self.stop_ids),
        )
        return str(self.tok.decode(gen.tokens, skip_special_tokens=True)).strip()
