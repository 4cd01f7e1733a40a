"""A ~30 s micro-training run lowers the answer loss and exports a loadable directory."""

from __future__ import annotations

from pathlib import Path

from encoder_trt.checkpoint import load_clip_encoder
from reasoner.loading import load_reasoner
from reasoner.tiny.evaluate import evaluate
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
    report = evaluate(tmp_path / "m", windows=2, questions=8)
    assert sum(report["n"].values()) == 16
    assert 0.0 <= report["yes_no_accuracy"] <= 1.0
