"""GPU checks for the clip encoder: CUDA parity against CPU fp32, then UMT-L clips/s and MFU.

Prints one JSON object. Random weights (throughput does not depend on them). MFU counts the
matmul FLOPs of the 23 blocks (24*N*C^2 per block for qkv/proj/MLP plus 4*N^2*C for attention)
against the card's dense bf16 peak (989 TFLOP/s for H100/H200 SXM).

    python bench/encoder_gpu.py            # on a CUDA machine
    python bench/encoder_gpu.py --smoke    # tiny sizes, CPU allowed: checks the script runs

`bench/gpu_suite.py` imports `parity`, `throughput` and the timing helpers from here.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from encoder_trt.modeling_umt import UMTClipEncoder, UMTConfig
from encoder_trt.testing import randomize_, tiny_config

PEAK_BF16 = 989e12  # H100/H200 SXM dense bf16
# Dense bf16 peaks by device-name fragment, most specific first (NVIDIA datasheets, no sparsity).
PEAKS_BF16: tuple[tuple[str, float], ...] = (
    ("H100 PCIe", 756e12),
    ("H100 NVL", 835e12),
    ("H200 NVL", 835e12),
    ("H100", 989e12),
    ("H200", 989e12),
    ("H800", 989e12),
    ("A100", 312e12),
)


def peak_bf16(device_name: str) -> float | None:
    """The card's dense bf16 peak in FLOP/s, or None for a card not in `PEAKS_BF16`."""
    for fragment, peak in PEAKS_BF16:
        if fragment in device_name:
            return peak
    return None


def sync(device: str | torch.device) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def median_seconds(
    fn: Callable[[], object], device: str | torch.device, iters: int = 1, repeats: int = 3
) -> float:
    """Median over `repeats` rounds of the mean seconds per call of `iters` back-to-back calls.

    The caller warms up first; each round is bracketed by device synchronisation.
    """
    rounds = []
    for _ in range(repeats):
        sync(device)
        t0 = time.perf_counter()
        for _ in range(iters):
            fn()
        sync(device)
        rounds.append((time.perf_counter() - t0) / iters)
    return statistics.median(rounds)


def flops_per_clip(cfg: UMTConfig) -> float:
    n, c = cfg.tokens_per_clip, cfg.embed_dim
    per_block = 24 * n * c * c + 4 * n * n * c
    return float(cfg.depth * per_block + 2 * n * c * 3 * cfg.patch_size**2)


def init_on_device(cfg: UMTConfig, device: str, dtype: torch.dtype) -> UMTClipEncoder:
    with torch.device("meta"):
        model = UMTClipEncoder(cfg)
    model = model.to_empty(device=device)
    torch.manual_seed(0)
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.normal_(0, 0.02)
            if "norm" in name and name.endswith("weight"):
                p.add_(1.0)
    model.encoder.reset_position_tables()
    return model.to(dtype).eval()


def parity(device: str, clips: int = 4) -> dict[str, object]:
    """Tiny-width model at 224 px: CUDA fp32/bf16/fp16, sdpa/eager vs CPU fp32 eager.

    sdpa rows run with cuDNN TF32 off; the caller's TF32 setting is restored afterwards.
    """
    cfg = UMTConfig(embed_dim=128, depth=2, num_heads=2, attn_implementation="eager")
    ref = randomize_(UMTClipEncoder(cfg), seed=0, std=0.05).eval()
    x = torch.randn(clips, 4, 3, 224, 224, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        want_feats = ref.encoder(x)
        want = ref(x)
    out: dict[str, object] = {}
    tf32 = torch.backends.cudnn.allow_tf32
    try:
        for attn in ("eager", "sdpa"):
            for name, dtype in (
                ("fp32", torch.float32),
                ("bf16", torch.bfloat16),
                ("fp16", torch.float16),
            ):
                model = UMTClipEncoder(cfg.with_attention(attn))
                model.load_state_dict(ref.state_dict())
                model = model.to(device=device, dtype=dtype).eval()
                torch.backends.cudnn.allow_tf32 = tf32 if attn == "eager" else False
                with torch.no_grad():
                    xd = x.to(device=device, dtype=dtype)
                    feats = model.encoder(xd).float().cpu()
                    toks = model(xd).float().cpu()
                cos = F.cosine_similarity(toks, want, dim=-1)  # (B, 64) same positions
                tag = "_tf32conv" if torch.backends.cudnn.allow_tf32 and device == "cuda" else ""
                out[f"{attn}_{name}{tag}"] = {
                    "feat_max_abs_diff": float((feats - want_feats).abs().max()),
                    "token_max_abs_diff": float((toks - want).abs().max()),
                    "token_cos_min": float(cos.min()),
                    "tokens_same_position_cos>0.999": float((cos > 0.999).float().mean()),
                }
    finally:
        torch.backends.cudnn.allow_tf32 = tf32
    return out


def throughput(
    size: int,
    batch: int,
    device: str,
    compiled: bool,
    iters: int,
    depth: int = 23,
    *,
    repeats: int = 3,
    peak: float | None = PEAK_BF16,
    compile_backend: str = "inductor",
) -> dict[str, object]:
    """bf16 clips/s of a random UMT-L (`depth` blocks) at `size` px, batch `batch`.

    Times `repeats` rounds of `iters` calls after a warm-up and reports the median round.
    `first_call_s` includes compilation for compiled runs. MFU is None when `peak` is None.
    """
    cfg = UMTConfig(image_size=size, depth=depth)
    model = init_on_device(cfg, device, torch.bfloat16)
    x = torch.randn(batch, 4, 3, size, size, device=device, dtype=torch.bfloat16)
    fn = torch.compile(model, backend=compile_backend) if compiled else model
    with torch.inference_mode():
        sync(device)
        t0 = time.perf_counter()
        fn(x)
        sync(device)
        first = time.perf_counter() - t0
        fn(x)
        dt = median_seconds(lambda: fn(x), device, iters, repeats)
        tome_share = None
        if not compiled:  # ToMe share: the encoder alone (no ToMe), eager
            model.encoder(x)
            enc_dt = median_seconds(lambda: model.encoder(x), device, iters, repeats)
            tome_share = round(max(0.0, 1 - enc_dt / dt), 3)
    clips_s = batch / dt
    return {
        "image_size": size,
        "batch": batch,
        "depth": depth,
        "compiled": compiled,
        "first_call_s": round(first, 2),
        "clips_per_s": round(clips_s, 1),
        "ms_per_batch": round(dt * 1e3, 2),
        "mfu": None if peak is None else round(flops_per_clip(cfg) * clips_s / peak, 3),
        "tome_share_eager": tome_share,
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--smoke", action="store_true")
    ap.add_argument("--no-compile", action="store_true")
    ap.add_argument("--sizes", default="224:32,448:8", help="size:batch,...")
    ap.add_argument("--skip-eager", action="store_true")
    args = ap.parse_args()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    name = torch.cuda.get_device_name() if device == "cuda" else "cpu"
    peak = peak_bf16(name) or PEAK_BF16
    result: dict[str, object] = {"torch": torch.__version__, "device": name, "peak_bf16": peak}
    if args.smoke:
        cfg = tiny_config()
        model = randomize_(UMTClipEncoder(cfg)).eval()
        with torch.no_grad():
            result["smoke_shape"] = list(model(torch.randn(1, 4, 3, 96, 96)).shape)
        result["tput"] = [throughput(224, 1, device, False, 1, depth=1)]
        print(json.dumps(result, indent=1))
        return
    result["parity"] = parity(device)
    print(json.dumps(result, indent=1), flush=True)
    runs = []
    for item in args.sizes.split(","):
        size, batch = (int(v) for v in item.split(":"))
        if not args.skip_eager:
            runs.append(throughput(size, batch, device, False, iters=10, peak=peak))
            print(json.dumps(runs[-1]), flush=True)
        if not args.no_compile:
            runs.append(throughput(size, batch, device, True, iters=10, peak=peak))
            print(json.dumps(runs[-1]), flush=True)
    result["tput"] = runs
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
