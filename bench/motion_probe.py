"""Can a fresh tiny encoder see which actors move? A per-patch probe, held-out scenes: JSON out.

Why: the tiny model's remaining yes/no errors are actions that only motion tells apart (a
person loitering or walking past, a car stopped on the road or driving), and the encoder
probe (`bench/encoder_probe.py`) scored them at chance. This asks the encoder the plainest
form of the question, with the most direct supervision: a fresh UMT (the tiny model's sizes,
no ToMe, no LLM) and a linear head learn, for the patch under each person or car in each
frame, whether that actor moves during the clip. Accuracy on the training clips next to the
held-out ones says whether it learned motion or memorised the clips.

    .venv/bin/python -m bench.motion_probe --steps 2500 --still-share 0.5
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import time
from dataclasses import replace

import torch
import torch.nn.functional as F
from torch import nn

from encoder_trt.modeling_umt import UMTEncoder
from reasoner.tiny.data import sample_windows
from reasoner.tiny.labels import (
    MOTION_IGNORE,
    MOTION_KINDS,
    MOTION_MOVING,
    MOTION_STILL,
    motion_labels,
)
from reasoner.tiny.model import TinyConfig
from reasoner.tiny.train import EVAL_SEED_BASE, TRAIN_SEED_BASE, clips_of


def pool(
    seeds: range, per_scene: int, cfg: TinyConfig, still_share: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    pixels, labels, kinds = [], [], []
    grid = cfg.image_size // cfg.patch_size
    for seed in seeds:
        for w in sample_windows(seed, per_scene, cfg.image_size, still_share=still_share):
            lab, kind = motion_labels(w, grid)
            pixels.append(clips_of(w))
            labels.append(torch.from_numpy(lab))
            kinds.append(torch.from_numpy(kind))
    return torch.cat(pixels), torch.cat(labels), torch.cat(kinds)


def scores(predicted: torch.Tensor, labels: torch.Tensor, kinds: torch.Tensor) -> dict:
    out = {}
    for k, name in enumerate(MOTION_KINDS):
        still = (labels == MOTION_STILL) & (kinds == k)
        moving = (labels == MOTION_MOVING) & (kinds == k)
        s = float((predicted[still] == MOTION_STILL).float().mean()) if still.any() else math.nan
        m = float((predicted[moving] == MOTION_MOVING).float().mean()) if moving.any() else math.nan
        out[name] = {
            "still": round(s, 3),
            "moving": round(m, 3),
            "balanced": round((s + m) / 2, 3),
            "patches": [int(still.sum()), int(moving.sum())],
        }
    return out


def predict(enc: UMTEncoder, head: nn.Linear, pixels: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return torch.cat(
            [head(enc(pixels[i : i + 64])).argmax(-1) for i in range(0, len(pixels), 64)]
        )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=2500)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--scenes", type=int, default=60, help="training scenes (6 windows each)")
    ap.add_argument("--eval-scenes", type=int, default=20, help="held-out scenes")
    ap.add_argument("--still-share", type=float, default=0.0, help="windows held still")
    ap.add_argument("--depth", type=int, default=TinyConfig.vision_depth)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    t0 = time.perf_counter()
    cfg = replace(TinyConfig(), vision_depth=args.depth)
    train_seeds = range(TRAIN_SEED_BASE + 5 * 10_000, TRAIN_SEED_BASE + 5 * 10_000 + args.scenes)
    held_seeds = range(EVAL_SEED_BASE + 700, EVAL_SEED_BASE + 700 + args.eval_scenes)
    tr_pix, tr_lab, tr_kind = pool(train_seeds, 6, cfg, args.still_share)
    te_pix, te_lab, te_kind = pool(held_seeds, 6, cfg, 0.0)
    pool_s = time.perf_counter() - t0
    enc = UMTEncoder(cfg.umt())
    head = nn.Linear(cfg.vision_dim, 2)
    params = [*enc.parameters(), *head.parameters()]
    optim = torch.optim.AdamW(params, lr=args.lr, weight_decay=0.01)
    gen = torch.Generator().manual_seed(1)
    for step in range(args.steps):
        warm = min(1.0, (step + 1) / 50)
        cosine = 0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * step / args.steps))
        for group in optim.param_groups:
            group["lr"] = args.lr * warm * cosine
        idx = torch.randint(0, len(tr_pix), (48,), generator=gen)
        lab = tr_lab[idx]
        # Moving patches outnumber still ones; weight the two classes equally in each batch.
        n_still, n_moving = int((lab == MOTION_STILL).sum()), int((lab == MOTION_MOVING).sum())
        weight = torch.ones(2)
        weight[MOTION_STILL] = max(1.0, n_moving / max(n_still, 1))
        weight[MOTION_MOVING] = max(1.0, n_still / max(n_moving, 1))
        logits = head(enc(tr_pix[idx]))
        loss = F.cross_entropy(
            logits.reshape(-1, 2), lab.reshape(-1), weight, ignore_index=MOTION_IGNORE
        )
        optim.zero_grad(set_to_none=True)
        loss.backward()
        optim.step()
    enc.eval()
    seen = min(len(tr_pix), 1200)
    report = {
        "bench": "motion_probe",
        "machine": platform.node(),
        "date": time.strftime("%Y-%m-%d"),
        "args": vars(args),
        "train_clips": len(tr_pix),
        "held_out_clips": len(te_pix),
        "pool_seconds": round(pool_s, 1),
        "seconds": round(time.perf_counter() - t0, 1),
        "held_out": scores(predict(enc, head, te_pix), te_lab, te_kind),
        "training_clips": scores(predict(enc, head, tr_pix[:seen]), tr_lab[:seen], tr_kind[:seen]),
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
