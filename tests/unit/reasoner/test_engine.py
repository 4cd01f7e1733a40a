"""LocalReasoner end to end on a tiny random checkpoint over a real SqliteStore.

Answers are random text; what is checked is the plumbing: level/frames chosen, the duration
sentence, token counts before/after dropping, evidence and times mapped to wall clock, zoom
selection, rule scores (shared prefix == one rule at a time), missing footage.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from flashwatch.config import ReasonerConfig
from flashwatch.messages import CameraWindow, QueryRequest, RuleQuestion, ScoreRequest
from memory.codec import encode_tokens
from memory.sqlite_store import SqliteStore
from memory.testing import make_clip
from reasoner.engine import LocalReasoner, drop_config_for
from reasoner.modeling_qwen2_flash import DropConfig
from reasoner.modeling_qwen2_flash import RuleScore as ModelRuleScore
from reasoner.planning import NoFootage, PlanLimits
from reasoner.testing import write_tiny_checkpoint

T0 = 1_700_000_000.0  # a round UNIX time; level grids are absolute
EVENT_T = T0 + 704.0  # start of the distinct level-0 clip on camera 2


def fill(store: SqliteStore, cam: int, level: int, t_from: float, t_to: float) -> None:
    stride = 4.0**level
    clips = []
    t = t_from
    i = 0
    while t + 4 * stride <= t_to + 1e-9:
        clips.append(
            make_clip(cam, level, t, stride_s=stride, seed=cam * 100_000 + level * 10_000 + i)
        )
        t += 4 * stride
        i += 1
    store.put_many(clips)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_checkpoint(tmp_path_factory.mktemp("ck") / "tiny", num_layers=4)


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SqliteStore]:
    s = SqliteStore(tmp_path_factory.mktemp("mem") / "m.sqlite3", [6, 24, 168])
    for level in range(3):  # camera 1: 10 minutes at every level
        fill(s, 1, level, T0, T0 + 640)
    fill(s, 3, 0, T0, T0 + 128)  # camera 3: two minutes, level 0 only
    for level in range(3):  # camera 2: 20 minutes, one distinct level-0 clip
        fill(s, 2, level, T0, T0 + 1280)
    loud = np.full((64, 1024), 6.0, dtype=np.float32)
    s.put(
        encode_tokens(
            loud, "fp32", camera_id=2, level=0, epoch=0, t=[EVENT_T + i for i in range(4)]
        )
    )
    yield s
    s.close()


@pytest.fixture(scope="module")
def reasoner(model_dir: Path, store: SqliteStore) -> LocalReasoner:
    cfg = ReasonerConfig(model_dir=model_dir, dtype="fp32")
    return LocalReasoner.from_config(cfg, store)


def ask(question: str, *windows: tuple[int, float, float], strategy: Any = "auto") -> QueryRequest:
    return QueryRequest(
        question=question,
        windows=[
            CameraWindow(camera_id=c, camera_name=f"cam{c}", t_from=a, t_to=b)
            for c, a, b in windows
        ],
        strategy=strategy,
        max_new_tokens=12,
    )


class FixedText:
    """The loaded tokenizer, but decode() returns a fixed answer (random models say nothing
    useful about time)."""

    def __init__(self, tok: Any, text: str) -> None:
        self.tok, self.text = tok, text

    def __getattr__(self, name: str) -> Any:
        return getattr(self.tok, name)

    def __call__(self, *a: Any, **k: Any) -> Any:
        return self.tok(*a, **k)

    def decode(self, *a: Any, **k: Any) -> str:
        return self.text


def test_drop_layers_rescaled_for_shallow_models() -> None:
    cfg = ReasonerConfig()
    assert drop_config_for(cfg, 28).layers == (4, 18)
    assert drop_config_for(cfg, 4).layers == (1, 3)
    assert drop_config_for(cfg, 2).mode == "none"  # [0, 1] is not a valid schedule
    assert drop_config_for(ReasonerConfig(drop_mode="none"), 28).mode == "none"


def test_query_pyramid_ten_minutes(reasoner: LocalReasoner) -> None:
    ans = reasoner.query(ask("What happens?", (1, T0, T0 + 600)))
    # 600 s: level 0 = 600 frames > 512; level 1 (4 s stride) holds 37 whole clips = 148 frames
    assert (ans.strategy, ans.level) == ("pyramid", 1)
    assert ans.frames == 4 * 38  # clips starting in [T0, T0+600]: 0, 16, ..., 592
    assert ans.duration_s == pytest.approx(38 * 16)
    assert ans.tokens_visual == ans.frames * 16
    assert 0 < ans.tokens_kept == int(ans.tokens_visual * 0.25)  # [1, .75, .25] schedule
    assert set(ans.timings) >= {"plan", "fetch", "project", "prefill", "decode"}
    assert 1 <= len(ans.evidence) <= 3
    assert all(T0 <= t <= T0 + 600 and (t - T0) % 16 == 0 for t in ans.evidence)
    assert [e.t for e in ans.evidence_clips] == ans.evidence
    assert all(e.level == 1 and e.camera_id == 1 for e in ans.evidence_clips)
    assert ans.latency_s > 0 and isinstance(ans.answer, str)


def test_answer_times_map_to_wall_clock(
    reasoner: LocalReasoner, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(
        reasoner, "tok", FixedText(reasoner.tok, "A car at 42 seconds, gone by 1:10.")
    )
    ans = reasoner.query(ask("When?", (1, T0 + 8, T0 + 600)))
    assert [(m.text, m.offset_s) for m in ans.times] == [("42 seconds", 42.0), ("1:10", 70.0)]
    first_clip = T0 + 16  # level-1 clips start on the 16 s grid
    assert [m.t for m in ans.times] == [first_clip + 42, first_clip + 70]


def test_multi_camera_shares_the_budget(reasoner: LocalReasoner) -> None:
    ans = reasoner.query(ask("Who came first?", (1, T0, T0 + 600), (3, T0, T0 + 120)))
    # budget 512 split in two: cam 1 -> level 1 (38 clips), cam 3 -> level 0 (31 clips)
    assert ans.frames == 4 * (38 + 31)
    assert ans.tokens_visual == ans.frames * 16


def test_sparse_reads_level_zero(reasoner: LocalReasoner) -> None:
    ans = reasoner.query(ask("What?", (1, T0, T0 + 600), strategy="sparse"))
    assert (ans.strategy, ans.level, ans.frames) == ("sparse", 0, 512)


def test_zoom_answers_over_the_window_with_the_event(
    model_dir: Path, store: SqliteStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = ReasonerConfig(model_dir=model_dir, dtype="fp32")
    limits = PlanLimits(frame_budget=64, zoom_window_frames=16)
    r = LocalReasoner.from_config(cfg, store)
    r.limits = limits
    scanned: list[int] = []

    def fake_scores(embeds: torch.Tensor, spans: Any, yes: int, no: int) -> list[ModelRuleScore]:
        # relevance = visual-token energy: the constant "loud" clip stands out
        ((s, n),) = spans
        energy = embeds[:, s : s + n].float().abs().mean(dim=(1, 2))
        scanned.append(embeds.shape[0])
        return [ModelRuleScore(min(1.0, float(v) / 10), []) for v in energy]

    monkeypatch.setattr(r.llm, "score_prompts", fake_scores)
    seen: list[list[Any]] = []
    real = r._segments

    def spy(parts: list[Any]) -> Any:
        seen.append(list(parts))
        return real(parts)

    monkeypatch.setattr(r, "_segments", spy)
    # From T0 + 8 the fixed 4-clip windows put the event third in its window.
    ans = r.query(ask("When does it happen?", (2, T0 + 8, T0 + 1200)))
    assert ans.strategy == "zoom" and ans.level == 0
    # 299 level-0 clips in 75 windows of 4; the top 4 windows' 16 clips then one by one
    assert ans.scan_windows == 75 + 16 and sum(scanned) == 75 + 16
    assert ans.scan_frames == 4 * 4 * 75 + 4 * 16
    # the event's window starts at the event (the two clips before it, quiet alone, are left
    # out); the other kept windows have no clip relevant alone and stay whole
    (event_part,) = [p for p in seen[0] if EVENT_T in [c.t[0] for c in p.clips]]
    assert event_part.clips[0].t[0] == EVENT_T
    assert ans.frames == 64 - 4 * 2 == 4 * sum(len(p.clips) for p in seen[0])


def test_missing_footage(reasoner: LocalReasoner) -> None:
    with pytest.raises(NoFootage):
        reasoner.query(ask("Anything?", (9, T0, T0 + 60)))
    with pytest.raises(NoFootage):
        reasoner.score(
            ScoreRequest(
                window=CameraWindow(camera_id=1, t_from=T0 - 900, t_to=T0 - 100),
                rules=[RuleQuestion(rule_id=1, text="a fire")],
            )
        )
    ans = reasoner.query(ask("Anything?", (9, T0, T0 + 60), (3, T0, T0 + 60)))
    assert ans.frames == 4 * 16  # camera 9 left out, camera 3 answered


def window_request(*texts: str, explain: bool = False) -> ScoreRequest:
    rules = [RuleQuestion(rule_id=i + 1, text=t) for i, t in enumerate(texts)]
    return ScoreRequest(
        window=CameraWindow(camera_id=1, t_from=T0, t_to=T0 + 60), rules=rules, explain=explain
    )


def test_shared_prefix_scores_equal_one_rule_at_a_time(reasoner: LocalReasoner) -> None:
    texts = ["a person climbing the fence", "Is there a fire?", "a red car parked at the gate"]
    together = reasoner.score(window_request(*texts))
    assert [s.rule_id for s in together.scores] == [1, 2, 3]
    assert together.frames == 4 * 16 and together.tokens_visual == 16 * 64
    for text, shared in zip(texts, together.scores, strict=True):
        alone = reasoner.score(window_request(text)).scores[0]
        assert shared.p_yes == pytest.approx(alone.p_yes, abs=1e-5)
        assert shared.evidence == alone.evidence
        assert all(T0 <= t <= T0 + 60 for t in shared.evidence)
    assert all(s.answer == "" for s in together.scores)


def test_explain_adds_short_answers(reasoner: LocalReasoner) -> None:
    ans = reasoner.score(window_request("a person running", explain=True))
    assert isinstance(ans.scores[0].answer, str) and "explain" in ans.timings


def test_batched_window_scores_equal_separate_prefills(reasoner: LocalReasoner) -> None:
    llm = reasoner.llm
    gen = torch.Generator().manual_seed(3)
    rows = torch.randn(3, 40, llm.cfg.hidden_size, generator=gen)
    yes, no = reasoner.yes_no
    batched = llm.score_prompts(rows, (5, 32), yes, no)
    for i in range(3):
        pre = llm.prefill(rows[i : i + 1], (5, 32))
        p = pre.logits[[yes, no]].softmax(-1)[0].item()
        assert batched[i].p_yes == pytest.approx(p, abs=1e-5)
        assert [s.kept.tolist() for s in batched[i].stages] == [s.kept.tolist() for s in pre.stages]


def test_rule_independent_score_drop_shares_everything(model_dir: Path, store: SqliteStore) -> None:
    cfg = ReasonerConfig(model_dir=model_dir, dtype="fp32")
    r = LocalReasoner.from_config(cfg, store)
    r.score_drop = DropConfig("uniform", (1, 3), (1.0, 0.75, 0.25))
    texts = ["a person climbing the fence", "Is there a fire?"]
    together = r.score(window_request(*texts))
    for text, shared in zip(texts, together.scores, strict=True):
        alone = r.score(window_request(text)).scores[0]
        assert shared.p_yes == pytest.approx(alone.p_yes, abs=1e-5)
        assert shared.evidence == []  # no attention-scored stage, so no evidence
    assert r.llm.drop.mode == "uniform0_attention"  # queries keep the model's own dropping


def test_checkpoint_max_frames_caps_the_plan(
    model_dir: Path, store: SqliteStore, tmp_path: Path
) -> None:
    """`fw_max_frames` in config.json (small checkpoints trained on short prompts) caps the
    frame budget and zoom windows; without it the configured budget stands."""
    import json
    import shutil

    short = tmp_path / "short"
    shutil.copytree(model_dir, short)
    cfg_path = short / "config.json"
    cfg_json = json.loads(cfg_path.read_text())
    cfg_json["fw_max_frames"] = 32
    cfg_path.write_text(json.dumps(cfg_json))
    capped = LocalReasoner.from_config(ReasonerConfig(model_dir=short, dtype="fp32"), store)
    assert (capped.limits.frame_budget, capped.limits.zoom_window_frames) == (32, 32)
    assert capped.limits.max_pyramid_stride_s == PlanLimits().max_pyramid_stride_s
    cfg_json["fw_max_frame_step_s"] = 2.0
    cfg_path.write_text(json.dumps(cfg_json))
    fine = LocalReasoner.from_config(ReasonerConfig(model_dir=short, dtype="fp32"), store)
    assert fine.limits.max_pyramid_stride_s == 2.0
    ans = capped.query(ask("What happens?", (1, T0, T0 + 600)))
    assert ans.frames <= 32
    plain = LocalReasoner.from_config(ReasonerConfig(model_dir=model_dir, dtype="fp32"), store)
    assert plain.limits.frame_budget == ReasonerConfig().frame_budget


def test_zoom_refines_a_coarse_scan_down_to_level_zero(
    model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A scan on level 1 (16 s frames) only locates the event; the kept windows are scanned
    again on level 0 inside their spans and the answer reads level-0 clips around it."""
    s = SqliteStore(tmp_path / "m.sqlite3", [6, 24])
    for level, span in ((0, 4.0), (1, 16.0)):
        fill(s, 7, level, T0, EVENT_T)
        fill(s, 7, level, EVENT_T + span, T0 + 1280)
        loud = np.full((64, 1024), 6.0, dtype=np.float32)
        stride = span / 4
        t = [EVENT_T + i * stride for i in range(4)]
        s.put(encode_tokens(loud, "fp32", camera_id=7, level=level, epoch=0, t=t))
    r = LocalReasoner.from_config(ReasonerConfig(model_dir=model_dir, dtype="fp32"), s)
    r.limits = PlanLimits(frame_budget=64, zoom_window_frames=16, zoom_max_windows=20)

    def fake_scores(embeds: torch.Tensor, spans: Any, yes: int, no: int) -> list[ModelRuleScore]:
        ((a, n),) = spans
        energy = embeds[:, a : a + n].float().abs().mean(dim=(1, 2))
        return [ModelRuleScore(min(1.0, float(v) / 10), []) for v in energy]

    monkeypatch.setattr(r.llm, "score_prompts", fake_scores)
    seen: list[list[Any]] = []
    real = r._segments
    monkeypatch.setattr(r, "_segments", lambda parts: seen.append(list(parts)) or real(parts))
    ans = r.query(ask("When does it happen?", (7, T0, T0 + 1280)))
    assert ans.strategy == "zoom" and ans.level == 1  # planned on level 1 ...
    clips = [c for p in seen[0] for c in p.clips]
    assert {c.level for c in clips} == {0}  # ... answered on level 0
    assert EVENT_T in [c.t[0] for c in clips]
    # 80 level-1 clips in 20 windows of 4, top 4 kept; each kept window's 64 s hold 16
    # level-0 clips, scanned as 4 windows each; the 4 kept level-0 windows' 16 clips then
    # one by one, and the event's window starts at the event.
    assert ans.scan_windows == 20 + 16 + 16
    (event_part,) = [p for p in seen[0] if EVENT_T in [c.t[0] for c in p.clips]]
    assert event_part.clips[0].t[0] == EVENT_T and ans.frames <= 64
    s.close()
