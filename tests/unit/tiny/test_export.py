"""Export -> the project's normal loaders load it, and compute what the training model computes."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from encoder_trt.checkpoint import load_clip_encoder
from reasoner.loading import load_reasoner
from reasoner.modeling_qwen2_flash import DropConfig
from reasoner.projector import project_clips
from reasoner.prompt import VideoSegment, build_inputs
from reasoner.tiny.data import QA, sample_windows
from reasoner.tiny.model import (
    TRAINING_ONLY,
    TinyConfig,
    TinyVideoChat,
    export,
    exported_config,
    load_exported,
)
from reasoner.tiny.train import clips_of, make_batch

SMALL = TinyConfig(
    vision_dim=32, vision_depth=1, vision_heads=2, hidden_size=32, num_layers=2, num_heads=2,
    num_kv_heads=1, intermediate_size=64, tome_groups=2,
)  # fmt: skip


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory, tok_dir: Path) -> tuple[TinyVideoChat, Path]:
    torch.manual_seed(0)
    model = TinyVideoChat(SMALL).eval()
    with torch.no_grad():  # non-trivial norms and biases so a mis-mapped key shows
        for name, p in model.named_parameters():
            if "norm" in name or "bias" in name:
                p.add_(torch.randn_like(p) * 0.1)
    out = export(model, tmp_path_factory.mktemp("tiny") / "model", tok_dir)
    return model, out


def test_directory_layout(exported: tuple[TinyVideoChat, Path]) -> None:
    _, out = exported
    names = {p.name for p in out.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"} <= names
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["mm_vision_tower"] == "umt-large"
    assert cfg["mm_projector_type"] == "tome16_mlp_hd64"
    assert cfg["fw_vision_config"]["image_size"] == 64
    assert cfg["fw_vision_config"]["tome_groups"] == SMALL.tome_groups == 2
    assert cfg["eos_token_id"] == 2


def test_models_exported_before_tome_groups_keep_merging_with_16_groups(
    exported: tuple[TinyVideoChat, Path], tmp_path: Path
) -> None:
    """A model directory written before the field existed (the reference's 16) loads as it
    was trained, both to continue training and to serve."""
    _, out = exported
    old = tmp_path / "old"
    shutil.copytree(out, old)
    cfg = json.loads((old / "config.json").read_text())
    del cfg["fw_vision_config"]["tome_groups"]
    del cfg["fw_tiny"]["config"]["tome_groups"]
    (old / "config.json").write_text(json.dumps(cfg))
    assert exported_config(old).tome_groups == 16
    assert exported_config(out).tome_groups == 2
    assert load_clip_encoder(old)[0].config.tome_groups == 16
    assert load_clip_encoder(out)[0].config.tome_groups == 2


def test_loaders_match_training_model(exported: tuple[TinyVideoChat, Path], tok_dir: Path) -> None:
    model, out = exported
    encoder, report = load_clip_encoder(out)
    assert report.image_size == 64
    loaded = load_reasoner(out, dtype="fp32", drop=DropConfig(mode="none"))
    window = sample_windows(7, 1, 64)[0]
    pixels = clips_of(window)
    with torch.no_grad():
        ours = model.vision(pixels)
        theirs = encoder(pixels)
        torch.testing.assert_close(theirs, ours)
        assert theirs.shape == (pixels.shape[0], 64, SMALL.vision_dim)

        qa = QA("presence", "Is there a red car in the video? Answer yes or no.", "Yes")
        batch = make_batch(loaded.tokenizer, [window], [[qa]])
        loss = float(model.loss(batch)[0])
        block = model.projector(ours).flatten(0, 1)
        pre = torch.tensor(batch.prefix_ids[0])
        assert batch.shared_ids is not None  # the prompt text after the block, run once
        post = torch.tensor(batch.shared_ids[0], dtype=torch.long)
        embed = model.llm.model.embed_tokens
        prefix = torch.cat([embed(pre), block, embed(post)])[None]
        logits, target = model.window_logits(prefix, batch.suffix_ids[0], batch.n_answer[0])

        seg = VideoSegment(project_clips(loaded.projector, theirs), window.duration,
                           len(window.frames))  # fmt: skip
        inputs = build_inputs(loaded.tokenizer, loaded.llm.embed, qa.question, [seg])
        assert inputs.input_ids.count(-200) == 1
        pre_fill = loaded.llm.prefill(inputs.inputs_embeds, inputs.visual_spans)
    torch.testing.assert_close(pre_fill.logits, logits[0], rtol=1e-4, atol=1e-4)
    assert int(target[0]) == loaded.tokenizer("Yes")["input_ids"][0]
    assert np.isfinite(loss)


def test_load_exported_round_trip(exported: tuple[TinyVideoChat, Path]) -> None:
    model, out = exported
    fresh = TinyVideoChat(SMALL)
    load_exported(fresh, out)
    theirs = fresh.state_dict()
    saved = load_file(str(out / "model.safetensors"))
    assert not [k for k in saved if k.startswith(TRAINING_ONLY)]  # the heads stay home
    for k, v in model.state_dict().items():
        if not k.startswith(TRAINING_ONLY):
            torch.testing.assert_close(theirs[k], v)
