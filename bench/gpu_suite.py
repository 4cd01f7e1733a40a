"""The one-call GPU benchmark (issues 4 and 6): clip encoder and reasoner, one JSON object.

Run it whenever a session has a GPU and record the card, date and numbers in BENCHMARKS.md.
Random weights throughout (throughput does not depend on them); only the repo's model code and
torch are imported, so it runs with the GPU machine's own torch and no installs. Under 8 minutes
on an H100/H200 (`--budget-s` skips the sections that would start after that many seconds).

Sections (each in its own try/except: a failure is reported under its name, the rest still run;
every section records its wall time):
- `encoder_parity`: tiny-width UMT at 224 px, device fp32/bf16/fp16 (eager/sdpa) vs CPU fp32.
- `encoder_eager`, `encoder_compiled`: UMT-L clips/s at 224 (batch 32) and 448 (batch 8), bf16,
  eager and torch.compile, MFU against the card's dense bf16 peak (989 TFLOP/s H100/H200 SXM).
  Measurement code lives in `bench/encoder_gpu.py`. Compiled runs go last: they are the slowest
  to start, so a budget cut loses the least.
- `reasoner_parity`: tiny Qwen2, CPU fp32 vs device fp32 in every dropping mode.
- `reasoner_prefill`: Qwen2-7B-sized random model (bf16, built on the meta device and filled on
  the GPU): prefill time at 1k/8k/32k visual tokens with dropping off and with the default
  dropping (uniform0_attention, layers [4, 18], ratios [1, .75, .25]), and on/off.
- `reasoner_rules`: rule scoring (`score_rules`) on a shared 1,024-token visual prefix for 1, 8
  and 32 rules: rules/s and the marginal cost of each extra rule as a fraction of the first.

Timings: warm-up, then the median of a few synchronised repeats.

    python bench/gpu_suite.py                                  # on a CUDA machine
    python bench/gpu_suite.py --out "$OUT/gpu_suite.json"      # also saved after each section
    OMP_NUM_THREADS=2 python bench/gpu_suite.py --smoke        # tiny sizes on CPU, < 1 minute

Progress goes to stderr; stdout holds only the final JSON object.
"""

from __future__ import annotations

import argparse
import gc
import json
import platform
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.encoder_gpu import PEAK_BF16, median_seconds, parity, peak_bf16, sync, throughput
from reasoner.modeling_qwen2_flash import DropConfig, Qwen2FlashConfig, Qwen2FlashForCausalLM

QWEN2_7B = Qwen2FlashConfig(
    vocab_size=152064,
    hidden_size=3584,
    intermediate_size=18944,
    num_hidden_layers=28,
    num_attention_heads=28,
    num_key_value_heads=4,
)
# Same depth (the default drop layers [4, 18] need > 18 layers), tiny widths.
QWEN2_SMOKE = Qwen2FlashConfig(
    vocab_size=512,
    hidden_size=64,
    intermediate_size=128,
    num_hidden_layers=28,
    num_attention_heads=4,
    num_key_value_heads=2,
)
DROP_OFF = DropConfig("none")
DROP_DEFAULT = DropConfig()  # uniform0_attention, (4, 18), (1.0, 0.75, 0.25)
TEXT_BEFORE, TEXT_AFTER = 30, 30  # prompt tokens around the visual block


@dataclass
class Plan:
    """Sizes for one run: the full suite or the CPU smoke check."""

    encoder_sizes: tuple[tuple[int, int], ...] = ((224, 32), (448, 8))
    encoder_depth: int = 23
    encoder_iters: int = 10
    parity_clips: int = 4
    compile_backend: str = "inductor"
    qwen: Qwen2FlashConfig = QWEN2_7B
    qwen_dtype: torch.dtype = torch.bfloat16
    visual_tokens: tuple[int, ...] = (1024, 8192, 32768)
    rule_prefix: int = 1024
    rule_counts: tuple[int, ...] = (1, 8, 32)
    repeats: int = 3


SMOKE = Plan(
    encoder_sizes=((224, 1),),
    encoder_depth=1,
    encoder_iters=1,
    parity_clips=1,
    compile_backend="eager",  # dynamo only: inductor on CPU needs a compiler and minutes
    qwen=QWEN2_SMOKE,
    qwen_dtype=torch.float32,  # CPU bf16 matmuls are slow; the smoke run checks wiring only
    visual_tokens=(128, 512),
    rule_prefix=128,
    repeats=1,
)


@dataclass
class Suite:
    plan: Plan
    device: torch.device
    peak: float | None
    deadline: float = float("inf")  # time.perf_counter() after which no new run starts
    state: dict[str, Any] = field(default_factory=dict)  # the 7B model, shared by two sections

    def free(self) -> None:
        gc.collect()
        if self.device.type == "cuda":
            torch.cuda.empty_cache()


# ----------------------------------------------------------------------------- encoder


def encoder_parity(s: Suite) -> dict[str, object]:
    return parity(s.device.type, clips=s.plan.parity_clips)


def encoder_runs(s: Suite, compiled: bool) -> list[dict[str, object]]:
    runs: list[dict[str, object]] = []
    for size, batch in s.plan.encoder_sizes:
        if time.perf_counter() > s.deadline:
            runs.append({"image_size": size, "batch": batch, "skipped": "budget"})
            continue
        runs.append(
            throughput(
                size,
                batch,
                s.device.type,
                compiled,
                iters=s.plan.encoder_iters,
                depth=s.plan.encoder_depth,
                repeats=s.plan.repeats,
                peak=s.peak,
                compile_backend=s.plan.compile_backend,
            )
        )
        log(f"  {json.dumps(runs[-1])}")
        if compiled:
            torch._dynamo.reset()
        s.free()
    return runs


# ----------------------------------------------------------------------------- reasoner


def tiny_qwen(drop: DropConfig, seed: int = 0) -> Qwen2FlashForCausalLM:
    torch.manual_seed(seed)
    cfg = Qwen2FlashConfig(
        vocab_size=97,
        hidden_size=64,
        intermediate_size=96,
        num_hidden_layers=6,
        num_attention_heads=4,
        num_key_value_heads=2,
    )
    model = Qwen2FlashForCausalLM(cfg, drop)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.15)
    return model.eval()


def reasoner_parity(s: Suite) -> dict[str, object]:
    """Tiny model, fp32: CPU vs device logits, kept indices and greedy tokens in every mode, and
    shared-prefix rule scores vs separate full prefills on the device."""
    x = torch.randn(1, 300, 64, generator=torch.Generator().manual_seed(1))
    span = (10, 256)
    rules = [[5, 6, 7], [8], [9, 10, 11, 12]]
    out: dict[str, object] = {}
    for mode in ("none", "uniform", "attention", "uniform0_attention"):
        model = tiny_qwen(DropConfig(mode, (2, 4), (1.0, 0.75, 0.25)))
        cpu = model.prefill(x, span)
        cpu_greedy = model.generate_greedy(x, span, max_new_tokens=8)
        model = model.to(s.device)
        xd = x.to(s.device)
        dev = model.prefill(xd, span)
        dev_greedy = model.generate_greedy(xd, span, max_new_tokens=8)
        shared = model.score_yes_no(xd[:, :280], span, rules, 11, 12)
        separate = []
        for suffix in rules:
            lg = model.prefill(torch.cat((xd[:, :280], model.embed(suffix)), 1), span).logits
            separate.append(float(lg[[11, 12]].softmax(0)[0]))
        out[mode] = {
            "prefill_max_abs_diff": float((cpu.logits - dev.logits.cpu()).abs().max()),
            "kept_equal": all(
                a.kept.tolist() == b.kept.cpu().tolist()
                for a, b in zip(cpu.stages, dev.stages, strict=True)
            ),
            "greedy_equal": cpu_greedy.tokens == dev_greedy.tokens,
            "shared_vs_separate_max_abs_diff": max(
                abs(a - b) for a, b in zip(shared, separate, strict=True)
            ),
        }
    return out


def big_qwen(s: Suite) -> Qwen2FlashForCausalLM:
    """The plan's Qwen2 (bf16 unless smoke), built on the meta device and filled with
    N(0, 0.02) directly on the device (RMSNorm weights 1): no fp32 copy, no host transfer."""
    if "qwen" in s.state:
        return s.state["qwen"]
    t0 = time.perf_counter()
    with torch.device("meta"):
        model = Qwen2FlashForCausalLM(s.plan.qwen, DROP_OFF)
    model = model.to(s.plan.qwen_dtype).to_empty(device=s.device)
    gen = torch.Generator(device=s.device).manual_seed(0)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm.weight"):
                p.fill_(1.0)
            else:
                p.normal_(0, 0.02, generator=gen)
    sync(s.device)
    s.state["qwen"] = model.eval()
    s.state["qwen_init_s"] = round(time.perf_counter() - t0, 2)
    s.state["qwen_params_b"] = round(sum(p.numel() for p in model.parameters()) / 1e9, 3)
    return model


def timed(s: Suite, fn: Callable[[], object]) -> float:
    fn()  # warm-up
    return median_seconds(fn, s.device, iters=1, repeats=s.plan.repeats)


def random_embeds(s: Suite, length: int, seed: int) -> torch.Tensor:
    gen = torch.Generator(device=s.device).manual_seed(seed)
    d = s.plan.qwen.hidden_size
    x = torch.randn(1, length, d, device=s.device, generator=gen) * 0.02
    return x.to(s.plan.qwen_dtype)


def peak_mem_gb(s: Suite) -> float | None:
    if s.device.type != "cuda":
        return None
    return round(torch.cuda.max_memory_allocated() / 1e9, 1)


def reasoner_prefill(s: Suite) -> dict[str, object]:
    model = big_qwen(s)
    out: dict[str, object] = {
        "params_b": s.state["qwen_params_b"],
        "init_s": s.state["qwen_init_s"],
        "drop_on": {
            "mode": DROP_DEFAULT.mode,
            "layers": list(DROP_DEFAULT.layers),
            "ratios": list(DROP_DEFAULT.ratios),
        },
        "text_tokens": TEXT_BEFORE + TEXT_AFTER,
    }
    try:
        for n in s.plan.visual_tokens:
            if s.device.type == "cuda":
                torch.cuda.reset_peak_memory_stats()
            emb = random_embeds(s, TEXT_BEFORE + n + TEXT_AFTER, seed=n)
            span = (TEXT_BEFORE, n)
            model.drop = DROP_OFF
            t_off = timed(s, lambda emb=emb, span=span: model.prefill(emb, span))
            model.drop = DROP_DEFAULT
            t_on = timed(s, lambda emb=emb, span=span: model.prefill(emb, span))
            row = {
                "off_s": round(t_off, 4),
                "on_s": round(t_on, 4),
                "on_over_off": round(t_on / t_off, 3),
                "peak_mem_gb": peak_mem_gb(s),
            }
            out[f"visual_{n}"] = row
            log(f"  visual {n}: {json.dumps(row)}")
            del emb
            s.free()
    finally:
        model.drop = DROP_OFF
    return out


def reasoner_rules(s: Suite) -> dict[str, object]:
    """`score_rules` on one shared prefix (text + visual window) with 1, 8, 32 rule suffixes of
    8 tokens each, all rules in one batch."""
    model = big_qwen(s)
    vocab = s.plan.qwen.vocab_size
    n = s.plan.rule_prefix
    prefix = random_embeds(s, TEXT_BEFORE + n, seed=1)
    span = (TEXT_BEFORE, n)
    yes, no = 9454 % vocab, 2753 % vocab  # Qwen2's "Yes"/"No" ids (any ids would do)
    counts = s.plan.rule_counts
    rules = [
        [(t + i) % vocab for t in (100, 200)]
        + [t % vocab for t in (300, 400, 500, 13, 151645, 198)]
        for i in range(max(counts))
    ]
    out: dict[str, object] = {"prefix_tokens": TEXT_BEFORE + n, "suffix_tokens": 8}
    try:
        for name, drop in (("off", DROP_OFF), ("on", DROP_DEFAULT)):
            model.drop = drop
            times: dict[int, float] = {}
            row: dict[str, object] = {}
            for k in counts:
                chunk = rules[:k]

                def score(chunk: list[list[int]] = chunk) -> object:
                    scores = model.score_rules(prefix, span, chunk, yes, no, max_batch=len(chunk))
                    if not all(0.0 <= r.p_yes <= 1.0 for r in scores):
                        raise ValueError("p_yes outside [0, 1]")
                    return scores

                times[k] = timed(s, score)
                row[f"t{k}_s"] = round(times[k], 4)
                row[f"rules_per_s_at_{k}"] = round(k / times[k], 1)
            first = times[counts[0]]
            for k in counts[1:]:
                extra = k - counts[0]
                row[f"marginal_frac_at_{k}"] = round((times[k] - first) / extra / first, 3)
            out[name] = row
            log(f"  rules {name}: {json.dumps(row)}")
    finally:
        model.drop = DROP_OFF
    return out


def release_reasoner(s: Suite) -> dict[str, object]:
    s.state.clear()
    s.free()
    return {"peak_mem_gb": peak_mem_gb(s)}


# ----------------------------------------------------------------------------- driver


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def environment(device: torch.device, peak: float | None) -> dict[str, object]:
    env: dict[str, object] = {
        "date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "peak_bf16_tflops": None if peak is None else round(peak / 1e12),
        "cpu_threads": torch.get_num_threads(),
    }
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        env["capability"] = f"{props.major}.{props.minor}"
        env["memory_gb"] = round(props.total_memory / 1e9, 1)
    return env


def summary(results: dict[str, Any]) -> dict[str, object]:
    """The headline numbers next to their issue targets (missing sections are left out)."""
    out: dict[str, object] = {}
    for key in ("encoder_eager", "encoder_compiled"):
        for run in results.get(key, {}).get("result") or []:
            if "clips_per_s" not in run:
                continue
            tag = f"{key.split('_')[1]}_{run['image_size']}"
            out[f"encoder_{tag}_clips_per_s"] = run["clips_per_s"]
            out[f"encoder_{tag}_mfu"] = run["mfu"]
    prefill = results.get("reasoner_prefill", {}).get("result") or {}
    for name, row in prefill.items():
        if name.startswith("visual_"):
            out[f"prefill_{name}_on_over_off"] = row["on_over_off"]
    rules = results.get("reasoner_rules", {}).get("result") or {}
    for name, row in rules.items():
        if isinstance(row, dict):
            marginal = [v for k, v in row.items() if k.startswith("marginal_frac_at_")]
            rate = [v for k, v in row.items() if k.startswith("rules_per_s_at_")]
            if marginal:
                out[f"rules_{name}_marginal_frac"] = marginal[-1]
            if rate:
                out[f"rules_{name}_rules_per_s"] = rate[-1]
    out["targets"] = {
        "encoder_mfu_h100": ">= 0.40 (>= 770 clips/s at 224, >= 144 at 448)",
        "prefill_on_over_off_at_8192": "<= 0.6",
        "rules_marginal_frac": "<= 0.15",
    }
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--smoke", action="store_true", help="tiny sizes; CPU allowed")
    ap.add_argument("--out", type=Path, help="also write the JSON here after every section")
    ap.add_argument(
        "--budget-s", type=float, default=420.0, help="start no section or encoder run after this"
    )
    ap.add_argument("--only", default="", help="comma-separated section names to run")
    ap.add_argument("--no-compile", action="store_true", help="skip encoder_compiled")
    ap.add_argument("--peak-tflops", type=float, help="dense bf16 peak if the card is unknown")
    args = ap.parse_args()

    t_start = time.perf_counter()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    plan = SMOKE if args.smoke else Plan()
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    peak = args.peak_tflops * 1e12 if args.peak_tflops else peak_bf16(name)
    if peak is None and device.type == "cuda":
        peak = PEAK_BF16
    suite = Suite(plan, device, peak, deadline=t_start + args.budget_s)
    results: dict[str, Any] = {"suite": "bench/gpu_suite.py", "smoke": args.smoke}
    results["env"] = environment(device, peak)
    if device.type != "cuda" and not args.smoke:
        results["warning"] = "no CUDA device: full sizes on CPU will not finish in time"

    sections: list[tuple[str, Callable[[Suite], object]]] = [
        ("encoder_parity", encoder_parity),
        ("encoder_eager", lambda s: encoder_runs(s, compiled=False)),
        ("reasoner_parity", reasoner_parity),
        ("reasoner_prefill", reasoner_prefill),
        ("reasoner_rules", reasoner_rules),
        ("release_reasoner", release_reasoner),
        ("encoder_compiled", lambda s: encoder_runs(s, compiled=True)),
    ]
    only = {x for x in args.only.split(",") if x}
    for section, fn in sections:
        if (only and section not in only and section != "release_reasoner") or (
            section == "encoder_compiled" and args.no_compile
        ):
            continue
        elapsed = time.perf_counter() - t_start
        if elapsed > args.budget_s and section != "release_reasoner":
            results[section] = {"skipped": f"budget: {elapsed:.0f} s > {args.budget_s:.0f} s"}
            log(f"[{section}] skipped (budget)")
            continue
        log(f"[{section}] start at {elapsed:.0f} s")
        t0 = time.perf_counter()
        entry: dict[str, object] = {}
        try:
            entry["result"] = fn(suite)
            entry["ok"] = True
        except Exception as exc:
            entry["ok"] = False
            entry["error"] = f"{type(exc).__name__}: {exc}"
            entry["traceback"] = traceback.format_exc().splitlines()[-8:]
            log(f"[{section}] FAILED: {entry['error']}")
        entry["wall_s"] = round(time.perf_counter() - t0, 2)
        results[section] = entry
        suite.free()
        if args.out:
            args.out.write_text(json.dumps(results, indent=1, default=str))
    try:
        results["summary"] = summary(results)
    except Exception as exc:
        results["summary"] = {"error": f"{type(exc).__name__}: {exc}"}
    results["total_wall_s"] = round(time.perf_counter() - t_start, 2)
    text = json.dumps(results, indent=1, default=str)
    if args.out:
        args.out.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
