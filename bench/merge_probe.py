"""Where does ToMe put a car's body? Output tokens per car per clip, moving against standing: JSON.

Why: a tiny clip's 256 patches are merged 256 -> 128 -> 64, every even token into its most
similar odd one in each step, so a car seen in four frames can end in one output token whose
features average its four places: the LLM then cannot tell a car driving past from one that
stands. For each car on screen in all four frames of a held-out clip this follows every input
patch to the output token that holds it and counts how many distinct output tokens hold the
car's four body patches (1: merged into one; 4: one per frame). `cosine` gives the merge
metric's similarity between one actor's body patches in two frames of a clip (`moved`: in
different patches), and `best_match` the first step's best-match score over all patches.

    .venv/bin/python -m bench.merge_probe --model models/tiny --windows 120
"""

from __future__ import annotations

import argparse
import json
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from encoder_trt.checkpoint import load_clip_encoder
from encoder_trt.tome import bipartite_soft_matching, hd_metric, merge_wavg
from reasoner.tiny.data import Window, on_screen
from reasoner.tiny.evaluate import held_out_windows
from reasoner.tiny.labels import body_patch
from reasoner.tiny.train import clips_of


def merged_owner(clip_encoder: Any, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(metric of the first merge step (B, P, M) normalised, owner (B, P): the index of the
    output token that holds each input patch), following ToMe's own matching."""
    cfg = clip_encoder.config
    with torch.no_grad():
        x = clip_encoder.encoder(pixels)  # (B, P, C)
        first = F.normalize(hd_metric(x, cfg.tome_groups), dim=-1)
        n, p, _ = x.shape
        sources = torch.eye(p).expand(n, p, p).clone()  # row: output token, column: input patch
        size = None
        for r in clip_encoder.schedule:
            merge, _ = bipartite_soft_matching(hd_metric(x, cfg.tome_groups), r)
            x, size = merge_wavg(merge, x, size)
            sources = merge(sources)
    return first, sources.argmax(dim=1)


def probe_window(
    w: Window, metric: torch.Tensor, owner: torch.Tensor, grid: int, out: dict[str, list]
) -> None:
    per_frame = grid * grid
    for c in range(owner.shape[0]):
        ts = w.times[4 * c : 4 * c + 4]
        for tr in w.truth.tracks:
            if not all(on_screen(tr, t) for t in ts):
                continue
            at = [body_patch(tr, t, w.aspect, grid) for t in ts]
            idx = [i * per_frame + p for i, p in enumerate(at)]
            for i in range(4):
                for j in range(i + 1, 4):
                    key = f"{tr.actor_kind}-{'moved' if at[i] != at[j] else 'same'}"
                    out[key].append(float(metric[c, idx[i]] @ metric[c, idx[j]]))
            if tr.actor_kind == "car":
                places = len(set(at))
                kind = "standing" if places == 1 else "moving" if places >= 3 else "slow"
                out[f"tokens/{kind}"].append(len({int(owner[c, k]) for k in idx}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", type=Path, default=Path("models/tiny"))
    ap.add_argument("--windows", type=int, default=120, help="held-out windows (seed 0)")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    clip_encoder, report = load_clip_encoder(args.model)
    grid = report.image_size // clip_encoder.config.patch_size
    found: dict[str, list] = defaultdict(list)
    best = []
    for w in held_out_windows(args.windows, 0, report.image_size):
        metric, owner = merged_owner(clip_encoder, clips_of(w))
        best.append((metric[:, ::2] @ metric[:, 1::2].transpose(-1, -2)).amax(-1).flatten())
        probe_window(w, metric, owner, grid, found)
    b = torch.cat(best).numpy()
    out: dict[str, Any] = {
        "bench": "merge_probe",
        "model": str(args.model),
        "windows": args.windows,
        "car_body_output_tokens": {
            k.split("/")[1]: {"clips": len(v), "tokens": dict(sorted(Counter(v).items()))}
            for k, v in sorted(found.items())
            if k.startswith("tokens/")
        },
        "cosine": {
            k: {"pairs": len(v), "median": round(float(np.median(v)), 3)}
            for k, v in sorted(found.items())
            if not k.startswith("tokens/")
        },
        "best_match_median": round(float(np.median(b)), 3),
        "seconds": round(time.perf_counter() - t0, 1),
    }
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
