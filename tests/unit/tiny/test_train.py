"""A ~30 s micro-training run lowers the answer loss and exports a loadable directory."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from encoder_trt.checkpoint import load_clip_encoder
from reasoner.loading import load_reasoner
from reasoner.tiny.evaluate import YES_NO_KINDS, evaluate
from reasoner.tiny.model import TinyConfig
from reasoner.tiny.train import TrainOptions, train

SMALL = TinyConfig(
    vision_dim=32, vision_depth=1, vision_heads=2, hidden_size=64, num_layers=2, num_heads=2,
    num_kv_heads=1, intermediate_size=128,
)  # fmt: skip


def test_micro_training_reduces_loss(tmp_path: Path) -> None:
    opts = TrainOptions(
        seed=0, steps=60, scenes=3, windows_per_scene=2, batch_windows=2, lr=3e-3, warmup=10,
        log_every=5, config=SMALL,
    )  # fmt: skip
    summary = train(opts, tmp_path / "m")
    losses = [h["loss"] for h in summary["history"]]
    assert summary["steps"] == 60
    assert losses[-1] < 0.6 * losses[0], losses
    load_clip_encoder(tmp_path / "m")
    loaded = load_reasoner(tmp_path / "m", dtype="fp32")
    assert loaded.llm.cfg.hidden_size == 64
    assert loaded.config["fw_max_frames"] == 4 * opts.clips[1]  # the longest trained prompt
    assert loaded.config["fw_max_frame_step_s"] == 2.0  # the widest trained frame spacing
    report = evaluate(tmp_path / "m", windows=2, questions=8)
    assert sum(report["n"].values()) == 16
    assert 0.0 <= report["yes_no_accuracy"] <= 1.0


def test_oracle_evaluation_reads_the_ground_truth_not_the_pixels(tmp_path: Path) -> None:
    """`evaluate(oracle=True)` scores the LLM on ground-truth tokens: wrecking the encoder
    leaves its answers exactly as they were, while the pixel path is changed by it."""
    from safetensors.torch import load_file, save_file

    opts = TrainOptions(seed=0, steps=2, scenes=2, windows_per_scene=2, batch_windows=2,
                        stage="oracle", compact=True, config=SMALL)  # fmt: skip
    train(opts, tmp_path / "m")
    before = evaluate(tmp_path / "m", windows=3, questions=8, oracle=True, explain=False)
    pixels = evaluate(tmp_path / "m", windows=3, questions=8, explain=False)
    weights = load_file(tmp_path / "m" / "model.safetensors")
    vision = [k for k in weights if "vision_tower" in k or "mm_projector" in k]
    assert vision
    save_file({k: v.fill_(1e4) if k in vision else v for k, v in weights.items()},
              tmp_path / "m" / "model.safetensors")  # fmt: skip
    after = evaluate(tmp_path / "m", windows=3, questions=8, oracle=True, explain=False)
    wrecked = evaluate(tmp_path / "m", windows=3, questions=8, explain=False)
    assert before["visual"] == "oracle" and pixels["visual"] == "pixels"
    assert after["yes_no_groups"] == before["yes_no_groups"]
    assert after["accuracy"] == before["accuracy"]
    assert after["examples"] == before["examples"]
    assert wrecked["examples"] != pixels["examples"]
    n_yes_no = sum(n for k, n in before["n"].items() if k in YES_NO_KINDS)
    assert sum(g["n"] for g in before["yes_no_groups"].values()) == n_yes_no > 0


def test_yes_no_within_max_frames_counts_only_windows_the_reasoner_would_send(
    tmp_path: Path,
) -> None:
    """`yes_no_within_max_frames` scores the windows no longer than config.json's
    `fw_max_frames`: all of them when the cap is above every window (the same accuracy as
    the whole set), none under a cap shorter than any window, all again without the key."""
    import json

    opts = TrainOptions(seed=0, steps=1, scenes=2, windows_per_scene=2, batch_windows=2,
                        stage="oracle", compact=True, config=SMALL)  # fmt: skip
    train(opts, tmp_path / "m")
    cfg_path = tmp_path / "m" / "config.json"
    cfg = json.loads(cfg_path.read_text())

    def report_with(max_frames: int | None) -> dict[str, Any]:
        edited = {k: v for k, v in cfg.items() if k != "fw_max_frames"}
        if max_frames is not None:
            edited["fw_max_frames"] = max_frames
        cfg_path.write_text(json.dumps(edited))
        return evaluate(tmp_path / "m", windows=4, questions=8, explain=False, oracle=True)

    everything = report_with(10_000)
    n_yes_no = sum(everything["n"].get(k, 0) for k in YES_NO_KINDS)
    assert n_yes_no > 0
    assert everything["yes_no_within_max_frames"] == {
        "max_frames": 10_000, "n": n_yes_no, "accuracy": everything["yes_no_accuracy"],
    }  # fmt: skip
    assert report_with(3)["yes_no_within_max_frames"] == {
        "max_frames": 3, "n": 0, "accuracy": None,
    }  # fmt: skip
    assert report_with(None)["yes_no_within_max_frames"]["n"] == n_yes_no


def test_query_long_asks_the_longer_windows_through_the_reasoners_frame_budget(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With `query_long`, every yes/no question on a window longer than `fw_max_frames` is
    also asked through `LocalReasoner.query`, which answers from at most that many frames;
    the questions on the shorter windows are not."""
    import json

    from reasoner.engine import LocalReasoner

    opts = TrainOptions(seed=0, steps=1, scenes=2, windows_per_scene=2, batch_windows=2,
                        stage="oracle", compact=True, config=SMALL)  # fmt: skip
    train(opts, tmp_path / "m")
    cfg_path = tmp_path / "m" / "config.json"
    cfg_path.write_text(json.dumps({**json.loads(cfg_path.read_text()), "fw_max_frames": 24}))
    asked: list[tuple[str, int]] = []
    query = LocalReasoner.query

    def spy(self: LocalReasoner, request: Any) -> Any:
        answer = query(self, request)
        asked.append((request.question, answer.frames))
        return answer

    monkeypatch.setattr(LocalReasoner, "query", spy)
    report = evaluate(tmp_path / "m", windows=6, questions=8, explain=False, query_long=True)
    beyond, within = report["yes_no_beyond_max_frames"], report["yes_no_within_max_frames"]
    assert beyond["n"] > 0 and within["n"] > 0  # both kinds of window in the set
    assert beyond["n"] + within["n"] == sum(report["n"].get(k, 0) for k in YES_NO_KINDS)
    assert len(asked) == beyond["n"]
    assert all(0 < frames <= 24 for _, frames in asked)
    assert beyond["query_path"] is not None and 0.0 <= beyond["query_path"] <= 1.0
    asked.clear()
    plain = evaluate(tmp_path / "m", windows=6, questions=8, explain=False)
    assert plain["yes_no_beyond_max_frames"]["query_path"] is None and not asked


def encoder_stage_from_a_small_model(tmp_path: Path) -> TrainOptions:
    """Trains a small oracle-stage model into tmp_path/m0; returns 40 encoder-stage steps
    from it (what the encoder-stage tests continue with)."""
    base = TrainOptions(seed=0, steps=2, scenes=2, windows_per_scene=2, batch_windows=2,
                        stage="oracle", compact=True, config=SMALL)  # fmt: skip
    train(base, tmp_path / "m0")
    return TrainOptions(
        seed=1, steps=40, scenes=3, windows_per_scene=2, batch_windows=2, lr=3e-3, warmup=5,
        log_every=5, stage="encoder", distill_weight=30.0, init=tmp_path / "m0",
    )  # fmt: skip


def test_encoder_stage_trains_only_the_vision_side(tmp_path: Path) -> None:
    """The encoder stage (distillation onto the oracle tokens, no LLM pass) lowers the
    distillation loss and leaves every LLM tensor as it was."""
    from safetensors.torch import load_file

    summary = train(encoder_stage_from_a_small_model(tmp_path), tmp_path / "m1")
    distill = [h["aux"] for h in summary["history"]]
    assert distill[-1] < 0.7 * distill[0], distill
    before, after = (
        load_file(str(tmp_path / "m0" / "model.safetensors")),
        load_file(str(tmp_path / "m1" / "model.safetensors")),
    )
    llm = [k for k in before if k.startswith(("model.layers", "model.embed", "lm_head"))]
    assert llm and all(bool((before[k] == after[k]).all()) for k in llm)
    vision = [k for k in before if k not in llm and k.startswith("model.vision_tower")]
    assert any(not bool((before[k] == after[k]).all()) for k in vision)


def test_apart_weight_pulls_a_moving_actors_frames_apart_on_the_merge_metric(
    tmp_path: Path,
) -> None:
    """With `apart_weight`, the encoder stage lowers the apart loss (the cosine above
    `APART_MARGIN` between an actor's body patches in frames where it moved); without it
    no such loss is computed."""
    opts = replace(encoder_stage_from_a_small_model(tmp_path), apart_weight=10.0)
    apart = [h["apart"] for h in train(opts, tmp_path / "m1")["history"]]
    assert apart[0] > 0.05 and apart[-1] < 0.7 * apart[0], apart
    plain = train(replace(opts, apart_weight=0.0), tmp_path / "m2")
    assert all("apart" not in h for h in plain["history"])
    with pytest.raises(ValueError, match="apart_weight"):
        train(replace(opts, stage="oracle", apart_weight=1.0), tmp_path / "m3")


def test_motion_weight_teaches_which_bodies_move_and_changes_nothing_without_it(
    tmp_path: Path,
) -> None:
    """With `motion_weight`, the encoder stage lowers the motion loss (which people and cars
    move, on their patches and on the merged tokens holding them); without it no such loss
    is computed and the run is the one of before, tensor for tensor (the training-only head
    is built on a forked random stream)."""
    from safetensors.torch import load_file

    opts = replace(encoder_stage_from_a_small_model(tmp_path), steps=60, motion_weight=5.0)
    motion = [h["motion"] for h in train(opts, tmp_path / "m1")["history"]]
    assert motion[0] > 0.5 and motion[-1] < 0.8 * motion[0], motion
    plain = train(replace(opts, motion_weight=0.0), tmp_path / "m2")
    train(replace(opts, motion_weight=0.0), tmp_path / "m3")
    assert all("motion" not in h for h in plain["history"])
    first, second = (load_file(str(tmp_path / m / "model.safetensors")) for m in ("m2", "m3"))
    assert all(bool((first[k] == second[k]).all()) for k in first)
    with pytest.raises(ValueError, match="motion_weight"):
        train(replace(opts, stage="oracle", motion_weight=1.0), tmp_path / "m4")


def test_an_encoder_stage_without_distillation_learns_motion_and_leaves_the_rest_alone(
    tmp_path: Path,
) -> None:
    """`distill_weight=0` with a motion loss: the vision side learns which bodies move before
    it is asked to match the oracle tokens (a pretraining stage); the projector and the LLM,
    which only distillation and answers train, stay as they were. With no vision loss at
    all the stage is refused, naming the three weights."""
    from safetensors.torch import load_file

    opts = replace(
        encoder_stage_from_a_small_model(tmp_path), steps=60, distill_weight=0.0, motion_weight=5.0
    )
    motion = [h["motion"] for h in train(opts, tmp_path / "m1")["history"]]
    assert motion[0] > 0.5 and motion[-1] < 0.8 * motion[0], motion
    before, after = (load_file(str(tmp_path / m / "model.safetensors")) for m in ("m0", "m1"))
    still = [k for k in before if not k.startswith("model.vision_tower")]
    assert any("mm_projector" in k for k in still), sorted(before)[:5]
    assert all(bool((before[k] == after[k]).all()) for k in still)
    assert any(not bool((before[k] == after[k]).all()) for k in before if k not in still)
    with pytest.raises(ValueError, match="distill_weight, token_weight or motion_weight"):
        train(replace(opts, motion_weight=0.0), tmp_path / "m2")


def test_a_video_stage_with_the_vision_frozen_trains_only_projector_and_llm(
    tmp_path: Path,
) -> None:
    """`freeze_vision`: the video stage leaves every encoder tensor as its init had it while
    the projector and the LLM learn; the choice is recorded in the training summary, and
    the other stages refuse it."""
    from safetensors.torch import load_file

    base = replace(encoder_stage_from_a_small_model(tmp_path), steps=4)
    opts = replace(base, stage="video", freeze_vision=True, init=tmp_path / "m0")
    summary = train(opts, tmp_path / "m1")
    assert summary["options"]["freeze_vision"] is True
    before, after = (load_file(str(tmp_path / m / "model.safetensors")) for m in ("m0", "m1"))
    vision = [k for k in before if k.startswith("model.vision_tower")]
    assert vision and all(bool((before[k] == after[k]).all()) for k in vision)
    for part in ("mm_projector", "model.layers"):
        moved = [k for k in before if part in k and not bool((before[k] == after[k]).all())]
        assert moved, part
    with pytest.raises(ValueError, match="freeze_vision applies to the video stage"):
        train(replace(base, freeze_vision=True), tmp_path / "m2")


def test_windows_per_step_cannot_exceed_the_pool(tmp_path: Path) -> None:
    """`batch_windows` draws without replacement: more than the pool holds is refused with
    both numbers, not left to numpy's error."""
    opts = replace(encoder_stage_from_a_small_model(tmp_path), batch_windows=7)
    with pytest.raises(ValueError, match="batch_windows 7 exceeds the 6 pooled windows"):
        train(opts, tmp_path / "m1")
    with pytest.raises(ValueError, match="batch_windows must be >= 1"):
        train(replace(opts, batch_windows=0), tmp_path / "m2")


def test_merging_with_sources_gives_the_encoders_own_tokens_and_where_each_came_from() -> None:
    """`merge_with_sources` returns exactly `UMTClipEncoder.merge`'s tokens, and each token's
    source counts add up to the size ToMe gave it: every patch lands in one token."""
    import torch

    from reasoner.tiny.model import TinyVideoChat, holding, merge_with_sources

    torch.manual_seed(0)
    model = TinyVideoChat(SMALL)
    patches = torch.randn(3, 4 * 64, SMALL.vision_dim)
    tokens, sources = merge_with_sources(model.vision, patches)
    assert torch.equal(tokens, model.vision.merge(patches, 4))
    assert sources.shape == (3, 64, 256)
    assert bool((sources.sum(dim=1) == 1).all())  # each patch in exactly one token
    assert int(sources.sum()) == 3 * 256
    marked = torch.zeros(3, 256, dtype=torch.bool)
    marked[1, 17] = True  # one patch of the second clip: exactly one token holds it
    held = holding(sources, marked)
    assert int(held.sum()) == 1 and bool(held[1].any())
    assert bool(sources[1, int(held[1].nonzero())][17] == 1)


def test_continued_training_keeps_the_init_tokenizer(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """--init keeps the exported tokenizer even when today's question corpus would build
    different merges (a rebuilt tokenizer re-maps ids under the trained embeddings)."""
    import reasoner.tiny.train as train_mod

    opts = TrainOptions(seed=0, steps=1, scenes=2, windows_per_scene=1, batch_windows=1,
                        config=SMALL)  # fmt: skip
    train(opts, tmp_path / "a")
    first = (tmp_path / "a" / "tokenizer.json").read_text()
    monkeypatch.setattr(train_mod, "corpus_texts", lambda: ["a different corpus entirely"] * 50)
    train(replace(opts, init=tmp_path / "a"), tmp_path / "b")
    assert (tmp_path / "b" / "tokenizer.json").read_text() == first
    # A new model does take today's corpus (so the check above is not vacuous).
    train(opts, tmp_path / "c")
    assert (tmp_path / "c" / "tokenizer.json").read_text() != first


def test_per_patch_labels_train_the_encoder_before_token_merging(tok: Any) -> None:
    """With `grid`, a batch carries per-patch targets and the model scores its encoder output
    against them before ToMe; a few steps on that loss alone lower it. Without, no loss."""
    import torch

    from reasoner.tiny.data import questions_for, sample_windows
    from reasoner.tiny.labels import AUX_LABELS
    from reasoner.tiny.model import TinyVideoChat
    from reasoner.tiny.train import make_batch

    torch.manual_seed(0)
    cfg = replace(SMALL, aux_labels=AUX_LABELS)
    model = TinyVideoChat(cfg)
    windows = sample_windows(11, 2, cfg.image_size, clips=(2, 3))
    qas = [questions_for(w, np.random.default_rng(0), 2) for w in windows]
    grid = cfg.image_size // cfg.patch_size
    batch = make_batch(tok, windows, qas, grid=grid)
    plain = make_batch(tok, windows, qas)
    assert batch.token_labels is not None and plain.token_labels is None
    n_clips = sum(len(w.frames) // 4 for w in windows)
    assert batch.token_labels.shape == (n_clips, 4 * grid * grid, AUX_LABELS)
    model.visual_blocks(plain)
    assert model.token_loss is None
    optim = torch.optim.Adam([*model.vision.parameters(), *model.aux_head.parameters()], lr=3e-3)
    losses = []
    for _ in range(30):
        model.visual_blocks(batch)
        assert model.token_loss is not None
        losses.append(float(model.token_loss.detach()))
        optim.zero_grad()
        model.token_loss.backward()
        optim.step()
    assert losses[-1] < 0.6 * losses[0], losses


@pytest.mark.parametrize(
    ("stage", "weight", "message"),
    [("oracle", 1.0, "encoder or video stage"), ("video", -1.0, "token_weight must be >= 0")],
)
def test_per_patch_label_weight_is_checked(stage: str, weight: float, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        train(TrainOptions(stage=stage, token_weight=weight, steps=1, config=SMALL), "/nonexistent")


def test_per_question_loss_weighs_each_question_the_same(tok: Any) -> None:
    """With `per_question`, the loss over a window's questions is the mean of each
    question's own token-mean loss (a long explain answer counts once, like "Yes"); the
    plain token mean differs when answers differ in length."""
    import torch

    from reasoner.tiny.data import FOCUS_WEIGHTS, questions_for, sample_windows, with_explain
    from reasoner.tiny.model import TinyVideoChat
    from reasoner.tiny.train import make_batch

    torch.manual_seed(0)
    model = TinyVideoChat(SMALL).eval()
    window = sample_windows(12, 1, SMALL.image_size, clips=(1, 2))[0]
    qas = questions_for(window, np.random.default_rng(3), 6, with_explain(FOCUS_WEIGHTS, 0.5))
    batch = make_batch(tok, [window], [qas])
    assert len(set(batch.n_answer[0])) > 1, batch.n_answer  # answers of different lengths
    with torch.no_grad():
        one_by_one = [float(model.loss(make_batch(tok, [window], [[qa]]))[0]) for qa in qas]
        token_mean = float(model.loss(batch)[0])
        model.per_question = True
        per_question = float(model.loss(batch)[0])
    assert per_question == pytest.approx(float(np.mean(one_by_one)), rel=1e-4)
    assert abs(per_question - token_mean) > 1e-3


def test_answer_weights_give_every_question_a_total_of_one() -> None:
    from reasoner.tiny.model import answer_weights

    w = answer_weights([[2, 4], [1]])
    assert w.tolist() == pytest.approx([0.5, 0.5, 0.25, 0.25, 0.25, 0.25, 1.0])


def test_a_trained_model_continues_at_a_larger_input(tmp_path: Path) -> None:
    """`image_size` with `init` continues a 64 px model at 96 px: the exported config says
    so, its position table stays laid out on the 8x8 grid it was trained on (resized, as the
    reference resizes UMT-L's for 448 px), and the normal loader encodes 96 px clips to the
    same 64 tokens."""
    import torch
    from safetensors.torch import load_file

    from encoder_trt.modeling_umt import build_pos_embed

    opts = TrainOptions(seed=0, steps=1, scenes=2, windows_per_scene=1, batch_windows=1,
                        config=SMALL)  # fmt: skip
    train(opts, tmp_path / "a")
    train(replace(opts, init=tmp_path / "a", image_size=96, lr=1e-9), tmp_path / "b")
    clip, report = load_clip_encoder(tmp_path / "b")
    assert report.image_size == 96
    assert (clip.config.image_size, clip.config.pos_base_grid, clip.config.grid) == (96, 8, 12)
    fresh_grid = replace(clip.config, pos_base_grid=12)
    assert not torch.allclose(build_pos_embed(clip.config, 4), build_pos_embed(fresh_grid, 4))
    assert clip(torch.zeros(2, 4, 3, 96, 96)).shape == (2, 64, SMALL.vision_dim)
    a, b = (load_file(str(tmp_path / d / "model.safetensors")) for d in ("a", "b"))
    patch = "model.vision_tower.vision_tower.encoder.patch_embed.proj.weight"
    assert torch.allclose(a[patch], b[patch], atol=1e-6)  # the same weights, carried over
    with pytest.raises(ValueError, match="image_size must be a positive multiple of patch_size"):
        train(replace(opts, init=tmp_path / "a", image_size=100), tmp_path / "c")
