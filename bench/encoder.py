"""CPU clips/s of the clip encoder: torch fp32 (baseline) vs onnxruntime, same run, same threads.

Prints one JSON object. Configs: `tiny` (96 px, width 64, 2 blocks) and `umt224x2` (UMT-L widths
at 224 px but only 2 of the 23 blocks, so it finishes in seconds; per-block cost is what the full
tower repeats 23 times). Also reports ToMe's share of the torch time (ToMe timed on its own).
Timings are best-of-3 rounds because development machines are shared; compare only numbers from
one run.

    python bench/encoder.py --threads 2 --iters 5
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from encoder_trt.backends import OnnxRuntimeBackend, TorchBackend
from encoder_trt.modeling_umt import UMTClipEncoder, UMTConfig
from encoder_trt.onnx_export import export_onnx
from encoder_trt.testing import randomize_, tiny_config
from encoder_trt.tome import tome_compress

CONFIGS = {
    "tiny": tiny_config(),
    "umt224x2": UMTConfig(depth=2),
    "umt224": UMTConfig(),  # the full 23-block tower; minutes on 2 cores
}


def timed(fn: object, x: torch.Tensor, iters: int, rounds: int = 3) -> float:
    """Best-of-`rounds` seconds per call (after a warm-up): robust to other load on the cores."""
    assert callable(fn)
    fn(x)
    best = float("inf")
    for _ in range(rounds):
        t0 = time.perf_counter()
        for _ in range(iters):
            fn(x)
        best = min(best, (time.perf_counter() - t0) / iters)
    return best


def bench(
    name: str, cfg: UMTConfig, batches: list[int], iters: int, threads: int, tmp: Path
) -> list[dict]:
    model = randomize_(UMTClipEncoder(cfg), seed=0, std=0.02).eval()
    t0 = time.perf_counter()
    onnx_path = export_onnx(model, tmp / f"{name}.onnx", max_batch=max(batches))
    export_s = time.perf_counter() - t0
    torch_backend = TorchBackend(model)
    ort_backend = OnnxRuntimeBackend(onnx_path, intra_op_threads=threads)
    return [
        measure(name, model, torch_backend, ort_backend, batch, iters) | {"onnx_export_s": export_s}
        for batch in batches
    ]


def measure(
    name: str,
    model: UMTClipEncoder,
    torch_backend: TorchBackend,
    ort_backend: OnnxRuntimeBackend,
    batch: int,
    iters: int,
) -> dict:
    s = model.config.image_size
    x = torch.randn(batch, model.config.num_frames, 3, s, s)
    t_torch = timed(torch_backend.encode, x, iters)
    t_ort = timed(ort_backend.encode, x, iters)
    with torch.inference_mode():
        t_enc = timed(model.encoder, x, iters)
        feats = model.encoder(x)  # (B, N, C)
        t_tome = timed(lambda f: tome_compress(f, model.schedule), feats, iters)
        t_torch = min(t_torch, timed(torch_backend.encode, x, iters))  # re-measure baseline last
    diff = (torch_backend.encode(x) - ort_backend.encode(x)).abs().max().item()
    return {
        "config": name,
        "batch": batch,
        "torch_fp32_clips_s": round(batch / t_torch, 2),
        "onnxruntime_clips_s": round(batch / t_ort, 2),
        "ort_over_torch": round(t_torch / t_ort, 3),
        "tome_share_torch": round(t_tome / (t_enc + t_tome), 4),
        "max_abs_diff": diff,
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    ap.add_argument("--iters", type=int, default=3)
    ap.add_argument("--batches", default="1,4")
    ap.add_argument("--configs", default="tiny,umt224x2")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    results: list[dict] = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.configs.split(","):
            batches = [int(b) for b in args.batches.split(",")]
            results += bench(name, CONFIGS[name], batches, args.iters, args.threads, Path(tmp))
    out = {"torch": torch.__version__, "threads": args.threads, "results": results}
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
