"""Can a fresh tiny encoder tell what an actor is doing? A probe on its merged tokens: JSON out.

Why: with ground-truth visual tokens the tiny LLM answers 98% of yes/no questions; over pixels
it stays near 87%, and its misses are actions (loitering vs passing, stopped vs driving). This
isolates the encoder: it trains a fresh UMT + ToMe + projector the way the training's encoder
stage does (distillation onto the oracle tokens of `--init`'s LLM, the per-clip probe, and
optionally the per-patch labels before ToMe), then scores the probe on held-out clips. Per
event: accuracy on clips that show it (`pos`) and on clips where an actor of the same kind
and colour is on screen without doing it (`decoy`); `actors` is (kind, colour) presence.
Balanced 0.5 means blind to it.

    .venv/bin/python -m bench.encoder_probe --init models/tiny --steps 1500 --tome-groups 2
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from reasoner.tiny.data import COLOURS, EVENTS, FOCUS_WEIGHTS, questions_for
from reasoner.tiny.labels import (
    AUX_ACTOR_LABELS,
    AUX_LABELS,
    actor_column,
    clip_labels,
    event_column,
)
from reasoner.tiny.model import TinyVideoChat, exported_config, load_exported
from reasoner.tiny.train import (
    EVAL_SEED_BASE,
    TRAIN_SEED_BASE,
    TrainOptions,
    clips_of,
    lr_at,
    make_batch,
    tokenizer_for,
    window_pool,
)


def fresh_encoder_model(init: Path, tome_groups: int | None) -> TinyVideoChat:
    """`init`'s LLM (its embeddings define the distillation targets, frozen) beside a newly
    initialised encoder, projector and probe."""
    config = replace(exported_config(init), aux_labels=AUX_LABELS)
    if tome_groups is not None:
        config = replace(config, tome_groups=tome_groups)
    model = TinyVideoChat(config)
    fresh = {k: v.clone() for k, v in model.state_dict().items() if not k.startswith("llm.")}
    load_exported(model, init)
    model.load_state_dict(fresh, strict=False)
    for p in model.llm.parameters():
        p.requires_grad_(False)
    return model


def probe_scores(model: TinyVideoChat, windows: list[Any]) -> dict[str, dict[str, Any]]:
    counts: dict[str, list[int]] = {}
    with torch.no_grad():
        for i in range(0, len(windows), 8):
            chunk = windows[i : i + 8]
            pixels = torch.cat([clips_of(w) for w in chunk])
            predicted = model.aux_head(model.vision(pixels)).amax(dim=1) > 0
            truth = torch.from_numpy(np.concatenate([clip_labels(w) for w in chunk])) > 0
            for kind, (actor, _, _) in EVENTS.items():
                for colour in COLOURS:
                    present = truth[:, actor_column(actor, colour)]
                    col = event_column(kind, colour)
                    _tally(counts, kind, predicted[:, col], truth[:, col], present)
            actors = slice(0, AUX_ACTOR_LABELS)
            everywhere = torch.ones_like(truth[:, actors])
            _tally(counts, "actors", predicted[:, actors], truth[:, actors], everywhere)
    out = {}
    for name, (tp, n_pos, tn, n_neg) in counts.items():
        pos, decoy = tp / max(n_pos, 1), tn / max(n_neg, 1)
        out[name] = {"pos": round(pos, 3), "n_pos": n_pos, "decoy": round(decoy, 3),
                     "n_decoy": n_neg, "balanced": round(0.5 * (pos + decoy), 3)}  # fmt: skip
    return out


def _tally(
    counts: dict[str, list[int]], name: str, pred: torch.Tensor, truth: torch.Tensor,
    where: torch.Tensor,
) -> None:  # fmt: skip
    row = counts.setdefault(name, [0, 0, 0, 0])
    row[0] += int((pred & truth & where).sum())
    row[1] += int((truth & where).sum())
    row[2] += int((~pred & ~truth & where).sum())
    row[3] += int((~truth & where).sum())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--init", type=Path, default=Path("models/tiny"), help="LLM to distil onto")
    ap.add_argument("--steps", type=int, default=1500)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--scenes", type=int, default=150, help="training scenes (4 windows each)")
    ap.add_argument("--eval-scenes", type=int, default=40, help="held-out scenes")
    ap.add_argument("--tome-groups", type=int, default=None, help="default: --init's")
    ap.add_argument("--token-weight", type=float, default=0.0, help="per-patch labels' weight")
    ap.add_argument("--distill-weight", type=float, default=30.0)
    ap.add_argument(
        "--still-share", type=float, default=0.0, help="training windows with actors held still"
    )
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    t0 = time.perf_counter()
    tok_dir = Path(tempfile.mkdtemp(prefix="fw-probe-tok-"))
    tok = tokenizer_for(args.init, tok_dir)
    model = fresh_encoder_model(args.init, args.tome_groups)
    model.filler_id = int(tok.convert_tokens_to_ids("<|endoftext|>"))
    cfg = model.config
    train_seeds = [TRAIN_SEED_BASE + 4 * 10_000 + i for i in range(args.scenes)]
    pool = window_pool(train_seeds, 4, cfg.image_size, (1, 8), still_share=args.still_share)
    held_seeds = [EVAL_SEED_BASE + 500 + i for i in range(args.eval_scenes)]
    held = window_pool(held_seeds, 4, cfg.image_size, (1, 8))
    grid = cfg.image_size // cfg.patch_size if args.token_weight > 0 else None
    params = [p for p in model.parameters() if p.requires_grad]
    optim = torch.optim.AdamW(params, lr=args.lr, weight_decay=0.01, betas=(0.9, 0.98))
    rng = np.random.default_rng([4, 11])
    schedule = TrainOptions(lr=args.lr, warmup=20, steps=args.steps)  # the training's schedule
    model.train()
    for step in range(args.steps):
        for group in optim.param_groups:
            group["lr"] = lr_at(step / args.steps, step, schedule)
        windows = [pool[int(i)] for i in rng.choice(len(pool), size=4, replace=False)]
        qas = [questions_for(w, rng, 1, FOCUS_WEIGHTS) for w in windows]
        batch = make_batch(tok, windows, qas, aux=True, slots=True, grid=grid)
        model.visual_blocks(batch)
        assert model.aux_loss is not None and model.distill_loss is not None
        loss = model.aux_loss + args.distill_weight * model.distill_loss
        if model.token_loss is not None:
            loss = loss + args.token_weight * model.token_loss
        optim.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optim.step()
    train_s = time.perf_counter() - t0
    model.eval()
    shutil.rmtree(tok_dir, ignore_errors=True)
    report = {
        "bench": "encoder_probe",
        "machine": platform.node(),
        "date": time.strftime("%Y-%m-%d"),
        "args": {k: str(v) for k, v in vars(args).items()},
        "tome_groups": cfg.tome_groups,
        "train_windows": len(pool),
        "held_out_windows": len(held),
        "train_seconds": round(train_s, 1),
        **probe_scores(model, held),
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
