"""CPU cost of the reasoner LLM: progressive dropping vs none, and shared-prefix rule scoring.

Prints one JSON object. One random mid-size Qwen2 (default hidden 512, 28 layers as the real
models, 8/2 heads, MLP 1408, fp32) and one random window, so all numbers of a run compare like
with like:

* prefill time and FLOPs with dropping off (baseline) vs the default dropping
  (`uniform0_attention`, ratios [1, 0.75, 0.25], layers [4, 18]; with `--layers` other than 28
  the layers are rescaled exactly as the engine does for shallow models) at 1,024 and 8,192
  visual tokens. Target: <= 0.6x the time at 8,192.
* marginal cost of each extra rule on a shared 1,024-token window as a fraction of the first
  rule: (t(N rules) - t(1 rule)) / (N - 1) / t(1 rule), default dropping (target <= 0.15), and
  with dropping off for reference; also the same fraction in analytic FLOPs (noise-free).
  With text-guided dropping the layers from the first attention-scored drop on depend on each
  rule's text and are re-run per rule (exact scores), which bounds what sharing can save.

FLOPs are counted analytically from the sequence length each layer saw (projections, MLP, causal
attention, the drop scorer's extra q/k rows, lm_head on the last position). Timings are the best
of `--reps` runs (at least 5 for rule scoring), measured alternately after a warm-up, because
development machines are shared.

    python bench/reasoner.py --threads 1             # 28 layers: the default [4, 18] as is (~8 min)
    python bench/reasoner.py --threads 1 --layers 8  # quick: drop layers rescaled to [1, 5]
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from flashwatch.config import ReasonerConfig
from reasoner.engine import drop_config_for
from reasoner.modeling_qwen2_flash import DropConfig, Qwen2FlashConfig, Qwen2FlashForCausalLM

# Text around the visual block, in tokens, as in the real prompts: system + user header before
# it, the duration sentence after it (shared by all rules), a rule question + chat tail per rule.
TEXT_BEFORE, SENTENCE, RULE_TOKENS = 14, 20, 25


def best_of(fns: dict[str, Callable[[], Any]], reps: int) -> dict[str, float]:
    """Best-of-`reps` seconds of each callable, measured alternately (a, b, a, b, ...) after one
    warm-up each, so load from other processes hits all of them alike."""
    for fn in fns.values():
        fn()
    best = dict.fromkeys(fns, float("inf"))
    for _ in range(reps):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            best[name] = min(best[name], time.perf_counter() - start)
    return best


def token_flops(cfg: Qwen2FlashConfig) -> int:
    """FLOPs of one token through one layer's projections and MLP."""
    d, kv = cfg.hidden_size, cfg.num_key_value_heads * cfg.head_dim
    return 2 * (2 * d * d + 2 * d * kv + 3 * d * cfg.intermediate_size)


def prefill_flops(cfg: Qwen2FlashConfig, seq_lens: list[int], drop: DropConfig) -> float:
    """FLOPs (2 x multiply-adds) of one prefill given each layer's sequence length."""
    d, kv = cfg.hidden_size, cfg.num_key_value_heads * cfg.head_dim
    total = 0.0
    for j, n in enumerate(seq_lens):
        total += token_flops(cfg) * n + 2 * n * n * d  # causal: half of 2 (n x n x d) products
        if drop.active and j in drop.layers:  # scorer: k for all rows + one q row + its logits
            total += 2 * n * (d * kv + d) + 2 * n * d
    return total + 2 * d * cfg.vocab_size


def extra_rule_flops(
    cfg: Qwen2FlashConfig, seq_lens: list[int], drop: DropConfig, suffix: int
) -> float:
    """FLOPs one more rule adds in `score_rules`: its suffix through the shared layers (reading
    the prefix cache), then every layer from the first text-guided drop on, re-run (the lm_head
    row and the drop scorer's few rows are left out: < 0.5%)."""
    a = drop.first_text_guided_layer()
    split = len(seq_lens) if a is None else a
    d, per_token = cfg.hidden_size, token_flops(cfg)
    shared = sum(per_token * suffix + 4 * suffix * n * d for n in seq_lens[:split])
    return shared + sum(per_token * n + 2 * n * n * d for n in seq_lens[split:])


def build(cfg: Qwen2FlashConfig, drop: DropConfig, seed: int) -> Qwen2FlashForCausalLM:
    torch.manual_seed(seed)
    model = Qwen2FlashForCausalLM(cfg, drop)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm.weight"):
                p.fill_(1.0)
            else:
                p.normal_(0.0, 0.02)
    return model.eval()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--hidden", type=int, default=512)
    ap.add_argument("--layers", type=int, default=28)
    ap.add_argument("--heads", type=int, default=8)
    ap.add_argument("--kv-heads", type=int, default=2)
    ap.add_argument("--mlp", type=int, default=1408)
    ap.add_argument("--vocab", type=int, default=4096)
    ap.add_argument("--tokens", type=int, nargs="+", default=[1024, 8192])
    ap.add_argument("--rules", type=int, default=16)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    cfg = Qwen2FlashConfig(
        vocab_size=args.vocab,
        hidden_size=args.hidden,
        intermediate_size=args.mlp,
        num_hidden_layers=args.layers,
        num_attention_heads=args.heads,
        num_key_value_heads=args.kv_heads,
    )
    on_drop = drop_config_for(ReasonerConfig(), cfg.num_hidden_layers)
    off = build(cfg, DropConfig(mode="none"), 0)
    on = build(cfg, on_drop, 0)
    on.load_state_dict(off.state_dict())
    gen = torch.Generator().manual_seed(1)

    prefill: dict[str, Any] = {}
    for n in args.tokens:
        embeds = torch.randn(
            1, TEXT_BEFORE + n + SENTENCE + RULE_TOKENS, cfg.hidden_size, generator=gen
        )
        span = (TEXT_BEFORE, n)
        row: dict[str, Any] = {}
        models = {"off": off, "on": on}
        times = best_of({k: partial(m.prefill, embeds, span) for k, m in models.items()}, args.reps)
        for name, model in models.items():
            pre = model.prefill(embeds, span)
            row[f"{name}_s"] = round(times[name], 4)
            row[f"{name}_gflop"] = round(prefill_flops(cfg, pre.seq_lens, model.drop) / 1e9, 2)
            row[f"{name}_seq_lens"] = ",".join(map(str, pre.seq_lens))
        row["time_ratio"] = round(row["on_s"] / row["off_s"], 3)
        row["flop_ratio"] = round(row["on_gflop"] / row["off_gflop"], 3)
        prefill[str(n)] = row

    rules: dict[str, Any] = {"window_tokens": 1024, "rules": args.rules}
    prefix = torch.randn(1, TEXT_BEFORE + 1024 + SENTENCE, cfg.hidden_size, generator=gen)
    suffixes = torch.randint(0, cfg.vocab_size, (args.rules, RULE_TOKENS), generator=gen).tolist()
    span = (TEXT_BEFORE, 1024)
    for name, model in (("on", on), ("off", off)):
        t = best_of(
            {
                "one": partial(model.score_rules, prefix, span, suffixes[:1], 1, 2),
                "many": partial(
                    model.score_rules, prefix, span, suffixes, 1, 2, max_batch=args.rules
                ),
            },
            max(args.reps, 5),  # cheap (~1 s each) and the noisiest figure: more runs
        )
        one, many = t["one"], t["many"]
        full = torch.cat((prefix, model.embed(suffixes[0])), dim=1)
        lens = model.prefill(full, span).seq_lens
        first = prefill_flops(cfg, lens, model.drop)
        extra = extra_rule_flops(cfg, lens, model.drop, RULE_TOKENS)
        rules[f"{name}_marginal_flop_fraction"] = round(extra / first, 4)
        rules[f"{name}_first_rule_s"] = round(one, 4)
        rules[f"{name}_{args.rules}_rules_s"] = round(many, 4)
        rules[f"{name}_marginal_fraction"] = round((many - one) / (args.rules - 1) / one, 4)

    biggest = str(max(args.tokens))
    out = {
        "bench": "reasoner_cpu",
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": {
            "cpu": platform.processor() or platform.machine(),
            "threads": args.threads,
            "torch": torch.__version__,
        },
        "model": {
            "hidden": cfg.hidden_size,
            "layers": cfg.num_hidden_layers,
            "heads": f"{cfg.num_attention_heads}/{cfg.num_key_value_heads}",
            "mlp": cfg.intermediate_size,
            "dtype": "fp32",
            "attn": cfg.attn_impl,
        },
        "drop_default": {
            "mode": on_drop.mode,
            "layers": list(on_drop.layers),
            "ratios": list(on_drop.ratios),
            "note": "the reference default [4, 18] of 28 layers"
            + ("" if cfg.num_hidden_layers == 28 else ", rescaled to this depth"),
        },
        "prefill": prefill,
        "rule_scoring": rules,
        "targets": {
            f"prefill_time_ratio_at_{biggest}<=0.6": prefill[biggest]["time_ratio"] <= 0.6,
            "marginal_rule_fraction<=0.15": rules["on_marginal_fraction"] <= 0.15,
        },
    }
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
