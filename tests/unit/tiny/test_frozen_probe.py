"""bench/frozen_motion_probe: the probe finds a real signal and not noise, and its samples are
the labelled bodies (patches) and the merged tokens holding them."""

from __future__ import annotations

import torch

from bench.frozen_motion_probe import balanced_accuracy, features, fit_probe
from reasoner.tiny.evaluate import held_out_windows
from reasoner.tiny.labels import MOTION_IGNORE, MOTION_KINDS, motion_labels
from reasoner.tiny.model import TinyConfig, TinyVideoChat

SMALL = TinyConfig(
    vision_dim=32, vision_depth=1, vision_heads=2, hidden_size=64, num_layers=2, num_heads=2,
    num_kv_heads=1, intermediate_size=128,
)  # fmt: skip


def test_probe_scores_a_separable_signal_high_and_shuffled_labels_at_chance() -> None:
    gen = torch.Generator().manual_seed(0)
    y = torch.rand(2000, generator=gen) < 0.85  # imbalanced, as moving vs still bodies are
    x = torch.randn(2000, 16, generator=gen)
    x[:, 3] += 3.0 * y.float()
    fit, test = slice(0, 1000), slice(1000, 2000)
    good = balanced_accuracy(fit_probe(x[fit], y[fit]), x[test], y[test])
    assert float(good["balanced"]) > 0.9, good
    shuffled = y[torch.randperm(2000, generator=gen)]
    noise = balanced_accuracy(fit_probe(x[fit], shuffled[fit]), x[test], shuffled[test])
    assert 0.35 < float(noise["balanced"]) < 0.65, noise


def test_probe_samples_are_the_labelled_bodies_and_the_tokens_holding_them() -> None:
    torch.manual_seed(0)
    model = TinyVideoChat(SMALL).eval()
    got = features(model, 3, seed=4)
    grid = SMALL.image_size // SMALL.patch_size
    for k, kind in enumerate(MOTION_KINDS):
        labelled = 0
        for w in held_out_windows(3, 4, SMALL.image_size):
            labels, kinds = motion_labels(w, grid)
            labelled += int(((labels != MOTION_IGNORE) & (kinds == k)).sum())
        vecs, moving = got[("patches", kind)]
        assert vecs.shape == (labelled, SMALL.vision_dim) and moving.dtype == torch.bool
        merged, merged_moving = got[("merged", kind)]
        projected, _ = got[("projected", kind)]
        assert merged.shape[1] == SMALL.vision_dim and projected.shape[1] == SMALL.hidden_size
        # ToMe folds a body's patches together: never more tokens than labelled patches.
        assert 0 < len(merged) <= labelled and len(projected) == len(merged)
        assert len(merged_moving) == len(merged)
