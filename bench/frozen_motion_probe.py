"""Does a trained tiny model's vision side say who moves? A frozen linear probe: JSON out.

Why: the bundled model's remaining yes/no errors are actions only motion tells apart (a car
driving past or stopped, a person walking or loitering), and the LLM reads ground truth far
better than pixels. This asks where the motion signal is lost: a logistic regression per
actor kind (person, car) reads, from one vector at a time, whether the actor under it moves
during its clip (`labels.motion_labels`), at the three places the LLM's input passes
through: the encoder's patches before ToMe, the 64 merged tokens of a clip (a token counts
when the bodies it holds all move or all stand), and the projected tokens the LLM reads.
The model is frozen; the probe is fitted on held-out set `--fit-seed` and scored on
`--seed` (balanced accuracy: moving bodies outnumber still ones).

    .venv/bin/python -m bench.frozen_motion_probe --model models/tiny
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from reasoner.tiny.evaluate import held_out_windows
from reasoner.tiny.labels import MOTION_KINDS, MOTION_MOVING, MOTION_STILL, motion_labels
from reasoner.tiny.model import (
    TinyVideoChat,
    exported_config,
    holding,
    load_exported,
    merge_with_sources,
)
from reasoner.tiny.train import clips_of

DEPTHS = ("patches", "merged", "projected")


def features(
    model: TinyVideoChat, n_windows: int, seed: int
) -> dict[tuple[str, str], tuple[Tensor, Tensor]]:
    """(depth, kind) -> (vectors (N, D), moving (N,) bool) over `n_windows` held-out windows."""
    cfg = model.config
    grid = cfg.image_size // cfg.patch_size
    rows: dict[tuple[str, str], tuple[list[Tensor], list[Tensor]]] = {
        (d, k): ([], []) for d in DEPTHS for k in MOTION_KINDS
    }
    with torch.no_grad():
        for w in held_out_windows(n_windows, seed, cfg.image_size):
            labels_np, kinds_np = motion_labels(w, grid)
            labels, kinds = torch.from_numpy(labels_np), torch.from_numpy(kinds_np)
            patches = model.vision.encoder(clips_of(w))  # (C, P, M)
            merged, sources = merge_with_sources(model.vision, patches)  # (C, 64, M), (C, 64, P)
            projected = model.projector(merged)
            moving_all, still_all = labels == MOTION_MOVING, labels == MOTION_STILL
            any_moving = holding(sources, moving_all)
            any_still = holding(sources, still_all)
            for k, kind in enumerate(MOTION_KINDS):
                moving, still = moving_all & (kinds == k), still_all & (kinds == k)
                pick = moving | still
                rows[("patches", kind)][0].append(patches[pick])
                rows[("patches", kind)][1].append(moving[pick])
                # A token counts when it holds this kind's bodies and they all move or stand.
                token_moving = holding(sources, moving) & ~any_still
                token_still = holding(sources, still) & ~any_moving
                token_pick = token_moving | token_still
                for depth, vecs in (("merged", merged), ("projected", projected)):
                    rows[(depth, kind)][0].append(vecs[token_pick])
                    rows[(depth, kind)][1].append(token_moving[token_pick])
    return {key: (torch.cat(v), torch.cat(y)) for key, (v, y) in rows.items()}


def fit_probe(x: Tensor, y: Tensor, l2: float = 1e-3, iters: int = 300) -> tuple[Tensor, ...]:
    """Class-balanced logistic regression on standardised x: (mean, std, weight, bias)."""
    mean, std = x.mean(0), x.std(0) + 1e-6
    z = (x - mean) / std
    yf = y.float()
    pos = max(float(yf.sum()), 1.0)
    neg = max(float(len(yf) - yf.sum()), 1.0)
    sample_w = torch.where(y, 0.5 / pos, 0.5 / neg)
    weight = torch.zeros(x.shape[1], requires_grad=True)
    bias = torch.zeros(1, requires_grad=True)
    opt = torch.optim.LBFGS([weight, bias], max_iter=iters, line_search_fn="strong_wolfe")

    def closure() -> Tensor:
        opt.zero_grad()
        logits = z @ weight + bias
        per = torch.nn.functional.binary_cross_entropy_with_logits(logits, yf, reduction="none")
        loss = (per * sample_w).sum() + l2 * weight.square().sum()
        loss.backward()
        return loss

    opt.step(closure)
    return mean, std, weight.detach(), bias.detach()


def balanced_accuracy(probe: tuple[Tensor, ...], x: Tensor, y: Tensor) -> dict[str, Any]:
    mean, std, weight, bias = probe
    pred = ((x - mean) / std) @ weight + bias > 0
    moving = float((pred[y]).float().mean()) if bool(y.any()) else float("nan")
    still = float((~pred[~y]).float().mean()) if bool((~y).any()) else float("nan")
    return {
        "moving": round(moving, 3),
        "still": round(still, 3),
        "balanced": round((moving + still) / 2, 3),
        "n": [int((~y).sum()), int(y.sum())],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", type=Path, default=Path("models/tiny"))
    ap.add_argument("--fit-windows", type=int, default=300)
    ap.add_argument("--fit-seed", type=int, default=5, help="held-out set the probe is fitted on")
    ap.add_argument("--windows", type=int, default=200)
    ap.add_argument("--seed", type=int, default=0, help="held-out set the probe is scored on")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    if args.fit_seed == args.seed:
        ap.error("--fit-seed and --seed must differ: the probe is scored on unseen scenes")
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    t0 = time.perf_counter()
    model = TinyVideoChat(exported_config(args.model))
    load_exported(model, args.model)
    model.eval()
    fit = features(model, args.fit_windows, args.fit_seed)
    test = features(model, args.windows, args.seed)
    scores = {
        depth: {
            kind: balanced_accuracy(fit_probe(*fit[(depth, kind)]), *test[(depth, kind)])
            for kind in MOTION_KINDS
        }
        for depth in DEPTHS
    }
    report = {
        "bench": "frozen_motion_probe",
        "machine": platform.node(),
        "date": time.strftime("%Y-%m-%d"),
        "model": str(args.model),
        "args": {k: str(v) for k, v in vars(args).items()},
        "held_out": scores,
        "seconds": round(time.perf_counter() - t0, 1),
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
