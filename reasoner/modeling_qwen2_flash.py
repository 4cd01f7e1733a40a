"""Qwen2 decoder with VideoChat-Flash's progressive visual-token dropping.

One file, top to bottom: config, RMSNorm, RoPE, attention, MLP, decoder layer, the pure dropping
functions, the model, prefill / greedy decode / shared-prefix yes-no scoring (`score_rules`: one
prefix, many rule suffixes, batched; exact against separate runs in every mode).

Shapes: B = batch, L = sequence length (after any dropping), P = cached (past) length of one layer,
D = hidden size, H = query heads, Hkv = key/value heads, hd = head dim (D / H), F = MLP width,
V = vocabulary, N = visual tokens in the prompt (16 per frame).

Why our own layers instead of transformers' Qwen2 modules: the drop routine needs (a) the next
layer's RMSNorm + q/k projections applied to one query row, (b) per-layer KV caches of different
lengths and per-layer decode positions, and (c) a prefix cache shared by several suffixes. All three
cut across transformers' `Cache` / mask / `GenerationMixin` plumbing, whose signatures move between
releases (5.x renamed `past_key_values` to `cache`; the reference's own custom decoder broke on a
newer transformers exactly this way, spec §8). The module attribute names are the checkpoint's
(`model.layers.{j}.self_attn.q_proj` ...), so weights load with a plain `load_state_dict`, and the
parity test keeps us honest against `transformers.Qwen2ForCausalLM`.

Dropping (spec §5), with `layers=[k_0, k_1, ...]` and `ratios=[r_0, r_1, ...]`: before decoder layer
k_s runs (i.e. after layer k_s - 1), the N_s = int(N*r_s) visual tokens still present are cut to
int(N*r_{s+1}). "uniform" keeps `linspace(0, N_s-1, keep)` (truncated); "attention" keeps the
top-k tokens by the head-mean attention that the *last prompt token* pays them, computed with layer
k_s's own `input_layernorm`, `q_proj`, `k_proj` and RoPE; kept tokens stay in temporal order.
"uniform0_attention" is uniform at stage 0 and attention afterwards. After a drop the positions are
renumbered 0..L-1; layer j's cache then holds that layer's (shorter) sequence, and a decoded token's
position in layer j is the length of layer j's cache, which equals the reference's
"full position minus (N_s - keep_s) for every boundary crossed" (see `reference_decode_position`).
Unlike the reference we accept several visual spans (multi-camera prompts); the kept count is taken
over all of them together and only visual tokens are ever dropped. Not supported: the GitHub-only
"uniform1_attention" mode, padding/batches of prompts (the reference also requires batch 1),
`rope_scaling` (the reference ignores it too).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from itertools import pairwise
from typing import Literal, cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn

DropMode = Literal["none", "uniform", "attention", "uniform0_attention"]
AttnImpl = Literal["sdpa", "eager"]
Span = tuple[int, int]  # (start index in the sequence, number of visual tokens)


@dataclass(frozen=True)
class Qwen2FlashConfig:
    """The Qwen2 numbers the decoder needs (`loading` reads them from config.json)."""

    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    rms_norm_eps: float = 1e-6
    rope_theta: float = 1_000_000.0
    attn_impl: AttnImpl = "sdpa"

    def __post_init__(self) -> None:
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(
                f"hidden_size {self.hidden_size} not divisible by heads {self.num_attention_heads}"
            )
        if self.num_attention_heads % self.num_key_value_heads:
            raise ValueError(
                f"heads {self.num_attention_heads} not divisible by kv heads "
                f"{self.num_key_value_heads}"
            )

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads


@dataclass(frozen=True)
class DropConfig:
    """Progressive dropping schedule. The default is the reference README's "on" setting."""

    mode: DropMode = "uniform0_attention"
    layers: tuple[int, ...] = (4, 18)
    ratios: tuple[float, ...] = (1.0, 0.75, 0.25)

    def __post_init__(self) -> None:
        if self.mode == "none":
            return
        if len(self.ratios) != len(self.layers) + 1:
            raise ValueError(
                f"need len(ratios) == len(layers) + 1, got {len(self.ratios)} ratios for "
                f"{len(self.layers)} layers"
            )
        if list(self.layers) != sorted(set(self.layers)) or (self.layers and self.layers[0] < 1):
            raise ValueError(f"drop layers must be strictly increasing and >= 1: {self.layers}")
        if self.ratios[0] != 1.0:
            raise ValueError(f"ratios[0] must be 1.0 (the N before any drop): {self.ratios}")
        if any(b > a or b < 0 for a, b in zip(self.ratios, self.ratios[1:], strict=False)):
            raise ValueError(f"ratios must be non-increasing and >= 0: {self.ratios}")

    @property
    def active(self) -> bool:
        return self.mode != "none" and len(self.layers) > 0

    def stage_mode(self, stage: int) -> Literal["uniform", "attention"]:
        if self.mode == "uniform" or (self.mode == "uniform0_attention" and stage == 0):
            return "uniform"
        return "attention"

    def first_text_guided_layer(self) -> int | None:
        """Layer index of the first attention-scored drop (None if no stage uses attention)."""
        if not self.active:
            return None
        for s, layer in enumerate(self.layers):
            if self.stage_mode(s) == "attention":
                return layer
        return None


# ----------------------------------------------------------------------------- building blocks


class Qwen2RMSNorm(nn.Module):
    """RMSNorm computed in float32 and cast back, as Qwen2 does."""

    def __init__(self, hidden_size: int, eps: float) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(hidden_size))
        self.eps = eps

    def forward(self, x: Tensor) -> Tensor:
        dtype = x.dtype
        x32 = x.float()
        x32 = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * x32.to(dtype)


def rope_cos_sin(
    positions: Tensor, head_dim: int, theta: float, dtype: torch.dtype
) -> tuple[Tensor, Tensor]:
    """cos/sin tables (L, hd) for integer positions (L,), computed in float32 then cast.

    Recomputed per call rather than kept as a buffer so that `model.half()` cannot round the
    frequencies themselves (only the final tables are cast, as in the reference).
    """
    exponents = torch.arange(0, head_dim, 2, device=positions.device).float() / head_dim
    inv_freq = 1.0 / (theta**exponents)  # (hd/2,)
    freqs = positions.float()[:, None] * inv_freq[None, :]  # (L, hd/2)
    emb = torch.cat((freqs, freqs), dim=-1)  # (L, hd)
    return emb.cos().to(dtype), emb.sin().to(dtype)


def apply_rope(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """Rotate x (B, heads, L, hd) by the (L, hd) tables; halves convention of Qwen2."""
    half = x.shape[-1] // 2
    rotated = torch.cat((-x[..., half:], x[..., :half]), dim=-1)
    return x * cos + rotated * sin


def causal_mask(q_len: int, k_len: int, device: torch.device) -> Tensor | None:
    """Boolean (q_len, k_len) mask, True = may attend; query i sits at key index k_len-q_len+i.

    None where no masking is needed (a single query row sees every cached key).
    """
    if q_len == 1:
        return None
    q_pos = torch.arange(k_len - q_len, k_len, device=device)
    return torch.arange(k_len, device=device)[None, :] <= q_pos[:, None]  # (q_len, k_len)


def eager_attention(q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None) -> Tensor:
    """Readable reference path: softmax(q k^T / sqrt(hd)) v with float32 softmax.

    q (B, H, Lq, hd); k, v (B, H, Lk, hd) already repeated to H heads; returns (B, H, Lq, hd).
    """
    logits = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])  # (B, H, Lq, Lk)
    if mask is not None:
        logits = logits.masked_fill(~mask, float("-inf"))
    return logits.softmax(-1, dtype=torch.float32).to(q.dtype) @ v


def repeat_kv(x: Tensor, n_rep: int) -> Tensor:
    """(B, Hkv, L, hd) -> (B, Hkv*n_rep, L, hd); query head h reads kv head h // n_rep."""
    if n_rep == 1:
        return x
    b, hkv, length, hd = x.shape
    return x[:, :, None].expand(b, hkv, n_rep, length, hd).reshape(b, hkv * n_rep, length, hd)


KV = tuple[Tensor, Tensor]  # rotated keys, values: each (B, Hkv, P, hd)


class Qwen2Attention(nn.Module):
    def __init__(self, cfg: Qwen2FlashConfig) -> None:
        super().__init__()
        self.cfg = cfg
        hd = cfg.head_dim
        self.q_proj = nn.Linear(cfg.hidden_size, cfg.num_attention_heads * hd, bias=True)
        self.k_proj = nn.Linear(cfg.hidden_size, cfg.num_key_value_heads * hd, bias=True)
        self.v_proj = nn.Linear(cfg.hidden_size, cfg.num_key_value_heads * hd, bias=True)
        self.o_proj = nn.Linear(cfg.num_attention_heads * hd, cfg.hidden_size, bias=False)

    def heads(self, x: Tensor, n_heads: int) -> Tensor:
        b, length, _ = x.shape
        return x.view(b, length, n_heads, self.cfg.head_dim).transpose(1, 2)  # (B, h, L, hd)

    def forward(self, x: Tensor, cos: Tensor, sin: Tensor, past: KV | None) -> tuple[Tensor, KV]:
        """x (B, L, D) at positions given by cos/sin (L, hd); past keys/values are prepended."""
        cfg = self.cfg
        q = apply_rope(self.heads(self.q_proj(x), cfg.num_attention_heads), cos, sin)
        k = apply_rope(self.heads(self.k_proj(x), cfg.num_key_value_heads), cos, sin)
        v = self.heads(self.v_proj(x), cfg.num_key_value_heads)  # (B, Hkv, L, hd)
        if past is not None:
            k = torch.cat((past[0].expand(k.shape[0], -1, -1, -1), k), dim=2)  # (B, Hkv, P+L, hd)
            v = torch.cat((past[1].expand(v.shape[0], -1, -1, -1), v), dim=2)
        n_rep = cfg.num_attention_heads // cfg.num_key_value_heads
        kr, vr = repeat_kv(k, n_rep), repeat_kv(v, n_rep)  # (B, H, P+L, hd)
        q_len, k_len = q.shape[2], k.shape[2]
        if cfg.attn_impl == "eager":
            out = eager_attention(q, kr, vr, causal_mask(q_len, k_len, x.device))
        elif q_len == k_len:
            out = F.scaled_dot_product_attention(q, kr, vr, is_causal=q_len > 1)
        else:
            out = F.scaled_dot_product_attention(
                q, kr, vr, attn_mask=causal_mask(q_len, k_len, x.device)
            )
        out = out.transpose(1, 2).reshape(x.shape[0], q_len, -1)  # (B, L, H*hd)
        return self.o_proj(out), (k, v)


class Qwen2MLP(nn.Module):
    def __init__(self, cfg: Qwen2FlashConfig) -> None:
        super().__init__()
        self.gate_proj = nn.Linear(cfg.hidden_size, cfg.intermediate_size, bias=False)
        self.up_proj = nn.Linear(cfg.hidden_size, cfg.intermediate_size, bias=False)
        self.down_proj = nn.Linear(cfg.intermediate_size, cfg.hidden_size, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class Qwen2DecoderLayer(nn.Module):
    def __init__(self, cfg: Qwen2FlashConfig) -> None:
        super().__init__()
        self.input_layernorm = Qwen2RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.self_attn = Qwen2Attention(cfg)
        self.post_attention_layernorm = Qwen2RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.mlp = Qwen2MLP(cfg)

    def forward(self, x: Tensor, cos: Tensor, sin: Tensor, past: KV | None) -> tuple[Tensor, KV]:
        attn, kv = self.self_attn(self.input_layernorm(x), cos, sin, past)
        x = x + attn
        return x + self.mlp(self.post_attention_layernorm(x)), kv


# ----------------------------------------------------------------------------- dropping (pure)


def uniform_keep_indices(cur: int, keep: int) -> Tensor:
    """Evenly spaced indices in [0, cur): the reference's `linspace(0, cur-1, keep, dtype=long)`.

    Always on the CPU, as in the reference (it passes no device): CUDA's integer linspace rounds
    differently (on an H200, 570 of ~7,400 (cur, keep) pairs up to 2,048 differed, e.g. (46, 34)).
    """
    if keep >= cur:
        return torch.arange(cur)
    return torch.linspace(0, cur - 1, keep, dtype=torch.long)


def keep_indices(scores: Tensor, keep: int) -> Tensor:
    """Indices of the `keep` largest scores along the last dim ((cur,) or (B, cur)), sorted
    ascending so kept tokens stay in temporal order."""
    cur = scores.shape[-1]
    if keep >= cur:
        return torch.arange(cur, device=scores.device).expand(scores.shape)
    return torch.topk(scores, keep, dim=-1).indices.sort(dim=-1).values


def text_guided_scores(
    layer: Qwen2DecoderLayer,
    hidden: Tensor,
    visual_pos: Tensor,
    cfg: Qwen2FlashConfig,
    last: Tensor | None = None,
) -> Tensor:
    """Head-mean attention paid by each row's last prompt token to its visual tokens, using
    `layer`'s own input RMSNorm, q/k projections and RoPE (the layer the drop comes before).

    hidden (B, L, D) is the input of `layer` at positions 0..L-1; visual_pos (B, cur) or (cur,)
    are sequence indices of the visual tokens; last (B,) is the index of each row's last real
    token (default L-1; rows may be right-padded after it). Returns (B, cur), or (cur,) for a
    1-D visual_pos. Only the query row of `last` is computed: the reference computes the full
    L x L map and keeps that row, which gives the same numbers.
    """
    attn = layer.self_attn
    b, length, _ = hidden.shape
    rows = torch.arange(b, device=hidden.device)
    last = torch.full((b,), length - 1, device=hidden.device) if last is None else last
    pos = torch.arange(length, device=hidden.device)
    cos, sin = rope_cos_sin(pos, cfg.head_dim, cfg.rope_theta, hidden.dtype)  # (L, hd)
    h = layer.input_layernorm(hidden.detach())  # (B, L, D)
    q = attn.heads(attn.q_proj(h[rows, last][:, None]), cfg.num_attention_heads)  # (B, H, 1, hd)
    q = apply_rope(q, cos[last][:, None, None], sin[last][:, None, None])
    k = apply_rope(attn.heads(attn.k_proj(h), cfg.num_key_value_heads), cos, sin)  # (B, Hkv, L, hd)
    k = repeat_kv(k, cfg.num_attention_heads // cfg.num_key_value_heads)  # (B, H, L, hd)
    logits = (q @ k.transpose(-1, -2)) / math.sqrt(cfg.head_dim)  # (B, H, 1, L)
    future = pos[None, :] > last[:, None]  # (B, L): padding after the query row
    logits = logits.masked_fill(future[:, None, None, :], float("-inf"))
    probs = logits.softmax(-1, dtype=torch.float32).to(hidden.dtype)
    per_token = probs.mean(dim=1)[:, 0]  # (B, L)
    if visual_pos.dim() == 1:
        return per_token[0, visual_pos]  # (cur,)
    return per_token.gather(1, visual_pos)  # (B, cur)


def spans_to_positions(spans: Sequence[Span], device: torch.device) -> Tensor:
    parts = [torch.arange(s, s + n, device=device) for s, n in spans if n > 0]
    return torch.cat(parts) if parts else torch.zeros(0, dtype=torch.long, device=device)


def reference_decode_position(
    prompt_len: int, step: int, layer: int, stages: Sequence[DropStage]
) -> int:
    """The reference's decode position for `layer`: full position minus the tokens dropped at
    every boundary at or before `layer` (spec §5.5). Used by tests to check our cache lengths."""
    shift = sum(len(st.candidates) - len(st.kept) for st in stages if st.layer <= layer)
    return prompt_len + step - shift


@dataclass
class DropStage:
    """One applied drop: which original visual tokens (0..N-1) went in and which were kept."""

    layer: int
    mode: Literal["uniform", "attention"]
    candidates: Tensor  # (cur,) original visual indices present before the drop
    kept: Tensor  # (keep,) original visual indices kept, ascending
    scores: Tensor | None  # (cur,) head-mean attention ("attention" stages), as candidates


@dataclass
class _DropState:
    """Mutable bookkeeping of a prefill over B rows that share the visual layout (B = 1 for a
    prompt, B = rules for batched rule tails): where each row's surviving visual tokens sit."""

    n_visual: int
    visual_pos: Tensor  # (B, cur) sequence indices of surviving visual tokens
    visual_orig: Tensor  # (B, cur) their original visual indices (0..N-1), ascending
    last: Tensor  # (B,) index of each row's last real token (right padding after it)
    forced: Sequence[Tensor] | None = None  # per-stage original indices to keep (tests/replays)
    stages: list[list[DropStage]] = field(default_factory=list)  # per row

    def expand(self, last: Tensor) -> _DropState:
        """The same layout for len(last) rows, with fresh stage records."""
        b = last.shape[0]
        return _DropState(
            self.n_visual,
            self.visual_pos.expand(b, -1),
            self.visual_orig.expand(b, -1),
            last,
            self.forced,
            [[] for _ in range(b)],
        )


@dataclass
class KVCache:
    """Per-layer keys/values; layers may hold different lengths after dropping."""

    layers: list[KV | None]

    @classmethod
    def empty(cls, num_layers: int) -> KVCache:
        return cls([None] * num_layers)

    def length(self, j: int) -> int:
        kv = self.layers[j]
        return 0 if kv is None else kv[0].shape[2]

    def lengths(self) -> list[int]:
        return [self.length(j) for j in range(len(self.layers))]


@dataclass
class Prefill:
    logits: Tensor  # (V,) float32 logits of the last position, or (L_final, V) if all_logits
    cache: KVCache
    stages: list[DropStage]
    seq_lens: list[int]  # sequence length seen by each layer
    prompt_len: int


@dataclass
class Generation:
    tokens: list[int]  # generated ids, including the stop token if one was produced
    prefill: Prefill
    stopped: bool  # True when a stop id ended generation


# ----------------------------------------------------------------------------- the model


class Qwen2Model(nn.Module):
    def __init__(self, cfg: Qwen2FlashConfig) -> None:
        super().__init__()
        self.embed_tokens = nn.Embedding(cfg.vocab_size, cfg.hidden_size)
        self.layers = nn.ModuleList(Qwen2DecoderLayer(cfg) for _ in range(cfg.num_hidden_layers))
        self.norm = Qwen2RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)


class Qwen2FlashForCausalLM(nn.Module):
    """Qwen2 causal LM; batch 1 for prompts with visual tokens (as the reference)."""

    def __init__(self, cfg: Qwen2FlashConfig, drop: DropConfig | None = None) -> None:
        super().__init__()
        self.cfg = cfg
        self.drop = drop if drop is not None else DropConfig()
        if self.drop.active and self.drop.layers[-1] >= cfg.num_hidden_layers:
            raise ValueError(
                f"drop layers {self.drop.layers} must be < num_hidden_layers "
                f"{cfg.num_hidden_layers}"
            )
        self.model = Qwen2Model(cfg)
        self.lm_head = nn.Linear(cfg.hidden_size, cfg.vocab_size, bias=False)

    # -- helpers

    def embed(self, ids: Sequence[int] | Tensor) -> Tensor:
        """Token ids (L,) or (B, L) -> embeddings (B, L, D)."""
        t = torch.as_tensor(ids, dtype=torch.long, device=self.lm_head.weight.device)
        return self.model.embed_tokens(t if t.dim() == 2 else t[None])

    def logits_of(self, hidden: Tensor) -> Tensor:
        return self.lm_head(self.model.norm(hidden)).float()

    def _apply_drop(self, j: int, hidden: Tensor, st: _DropState) -> Tensor:
        """Drop visual tokens before layer j (a boundary); (B, L, D) -> (B, L', D).

        Every row keeps the same number of visual tokens, so rows stay aligned and any right
        padding stays at the end.
        """
        s = self.drop.layers.index(j)
        keep = int(st.n_visual * self.drop.ratios[s + 1])
        b, length, _ = hidden.shape
        cur = st.visual_pos.shape[1]
        mode = self.drop.stage_mode(s)
        scores: Tensor | None = None
        if st.forced is not None:
            want = st.forced[s].to(hidden.device).expand(b, -1)
            rel = torch.searchsorted(st.visual_orig.contiguous(), want.contiguous())  # (B, keep)
        elif mode == "uniform":
            rel = uniform_keep_indices(cur, keep).to(hidden.device).expand(b, -1)  # (B, keep)
        else:
            layer = cast(Qwen2DecoderLayer, self.model.layers[j])
            scores = text_guided_scores(layer, hidden, st.visual_pos, self.cfg, st.last)
            rel = keep_indices(scores, keep)  # (B, keep)
        kept_visual = torch.zeros(b, cur, dtype=torch.bool, device=hidden.device)
        kept_visual.scatter_(1, rel, True)
        drop_pos = st.visual_pos[~kept_visual].view(b, cur - keep)  # (B, cur-keep)
        keep_seq = torch.ones(b, length, dtype=torch.bool, device=hidden.device)
        keep_seq.scatter_(1, drop_pos, False)
        new_index = torch.cumsum(keep_seq.long(), 1) - 1  # (B, L): old index -> new index
        kept_orig = st.visual_orig.gather(1, rel)  # (B, keep)
        for row in range(b):
            row_scores = scores[row] if scores is not None else None
            stage = DropStage(j, mode, st.visual_orig[row], kept_orig[row], row_scores)
            st.stages[row].append(stage)
        st.visual_pos = new_index.gather(1, st.visual_pos.gather(1, rel))
        st.visual_orig, st.last = kept_orig, new_index.gather(1, st.last[:, None])[:, 0]
        return hidden[keep_seq].view(b, length - (cur - keep), -1)  # (B, L', D)

    def _run_layers(
        self,
        hidden: Tensor,
        layers: range,
        past: KVCache | None,
        store: KVCache | None,
        drop: _DropState | None,
    ) -> Tensor:
        """Run decoder layers `layers` on hidden (B, L, D).

        Positions in layer j continue from that layer's past length, so they are contiguous per
        layer whatever was dropped. Drops happen only on a past-free batch-1 prefill.
        """
        rope_key, cos, sin = (-1, -1), hidden, hidden  # tables reused while (past, L) repeats
        for j in layers:
            if drop is not None and j in self.drop.layers and hidden.shape[1] > 1:
                hidden = self._apply_drop(j, hidden, drop)
            p = past.length(j) if past is not None else 0
            if rope_key != (p, hidden.shape[1]):
                rope_key = (p, hidden.shape[1])
                pos = torch.arange(p, p + hidden.shape[1], device=hidden.device)
                cos, sin = rope_cos_sin(pos, self.cfg.head_dim, self.cfg.rope_theta, hidden.dtype)
            hidden, kv = self.model.layers[j](hidden, cos, sin, past.layers[j] if past else None)
            if store is not None:
                store.layers[j] = kv
        return hidden

    def _drop_state(
        self,
        spans: Sequence[Span],
        length: int,
        device: torch.device,
        forced: Sequence[Tensor] | None,
    ) -> _DropState | None:
        """Layout of one prompt of `length` tokens (batch 1); None when nothing can be dropped."""
        pos = spans_to_positions(spans, device)
        if not self.drop.active or pos.numel() == 0:
            return None
        if int(pos.max()) >= length:
            raise ValueError(f"visual spans {list(spans)} exceed the {length} input tokens")
        orig = torch.arange(pos.numel(), device=device)
        last = torch.tensor([length - 1], device=device)
        return _DropState(pos.numel(), pos[None], orig[None], last, forced, [[]])

    # -- public API

    @torch.no_grad()
    def prefill(
        self,
        inputs_embeds: Tensor,
        visual_spans: Span | Sequence[Span] | None = None,
        *,
        all_logits: bool = False,
        forced_keep: Sequence[Tensor] | None = None,
    ) -> Prefill:
        """Run the prompt (1, L, D) through all layers, dropping visual tokens as configured.

        `visual_spans`: (start, length) of the spliced visual block, or a list of them.
        `forced_keep`: per stage, the original visual indices to keep instead of choosing them
        (replays a previous selection; used to check decoding against recomputation).
        """
        if inputs_embeds.shape[0] != 1:
            raise ValueError(f"prefill takes batch 1, got {tuple(inputs_embeds.shape)}")
        spans = normalize_spans(visual_spans)
        state = self._drop_state(spans, inputs_embeds.shape[1], inputs_embeds.device, forced_keep)
        cache = KVCache.empty(self.cfg.num_hidden_layers)
        hidden = self._run_layers(
            inputs_embeds, range(self.cfg.num_hidden_layers), None, cache, state
        )
        logits = self.logits_of(hidden[0] if all_logits else hidden[0, -1])
        stages = state.stages[0] if state else []
        return Prefill(logits, cache, stages, cache.lengths(), inputs_embeds.shape[1])

    @torch.no_grad()
    def decode_step(self, token_ids: Tensor, cache: KVCache) -> Tensor:
        """Append tokens (B, 1) to `cache` in place and return their float32 logits (B, V)."""
        hidden = self.model.embed_tokens(token_ids)  # (B, 1, D)
        store = KVCache.empty(self.cfg.num_hidden_layers)
        hidden = self._run_layers(hidden, range(self.cfg.num_hidden_layers), cache, store, None)
        cache.layers[:] = store.layers
        return self.logits_of(hidden[:, -1])

    @torch.no_grad()
    def generate_greedy(
        self,
        inputs_embeds: Tensor,
        visual_spans: Span | Sequence[Span] | None = None,
        *,
        max_new_tokens: int = 64,
        stop_ids: Sequence[int] = (),
    ) -> Generation:
        """Greedy decoding with per-layer caches (no sampling, no repetition penalty)."""
        pre = self.prefill(inputs_embeds, visual_spans)
        tokens: list[int] = []
        logits = pre.logits[None]  # (1, V)
        for _ in range(max_new_tokens):
            nxt = int(logits[0].argmax())
            tokens.append(nxt)
            if nxt in stop_ids:
                return Generation(tokens, pre, True)
            if len(tokens) == max_new_tokens:
                break
            logits = self.decode_step(torch.tensor([[nxt]], device=inputs_embeds.device), pre.cache)
        return Generation(tokens, pre, False)

    @torch.no_grad()
    def score_yes_no(
        self,
        prefix_embeds: Tensor,
        visual_spans: Span | Sequence[Span] | None,
        suffix_token_lists: Sequence[Sequence[int]],
        yes_id: int,
        no_id: int,
        *,
        max_batch: int = 16,
    ) -> list[float]:
        """P(yes) per suffix; see `score_rules` (this drops the per-rule drop records)."""
        rules = self.score_rules(
            prefix_embeds, visual_spans, suffix_token_lists, yes_id, no_id, max_batch=max_batch
        )
        return [r.p_yes for r in rules]

    @torch.no_grad()
    def score_rules(
        self,
        prefix_embeds: Tensor,
        visual_spans: Span | Sequence[Span] | None,
        suffix_token_lists: Sequence[Sequence[int]],
        yes_id: int,
        no_id: int,
        *,
        max_batch: int = 16,
    ) -> list[RuleScore]:
        """P(yes) = softmax([yes, no] logits)[0] at the first answer position, for each suffix.

        The prefix (1, P, D) holds the prompt up to and including the visual block(s) (and any
        text common to all rules); each suffix is the rest of its prompt (rule text + chat tail)
        as ids. Layers before the first text-guided drop layer `a` are shared through the
        prefix's KV cache (uniform drops there do not depend on the text, so they are applied to
        the prefix once) and the suffixes run through them batched, right-padded. Layers >= a
        depend on each rule's last token (the scorer's query), so they are re-run per rule over
        (dropped prefix + suffix) from the stored layer-a input. Results therefore equal separate
        full runs in every mode. Extra cost per rule ~ the layers >= a over the kept tokens (with
        [4, 18] / [1, .75, .25] on 28 layers: 10 layers at 0.25N against 4 at N + 14 at 0.75N for
        the prefix, ~15%). With no text-guided stage everything but the suffix tokens is shared.
        """
        if not suffix_token_lists:
            return []
        n_layers = self.cfg.num_hidden_layers
        a = self.drop.first_text_guided_layer()
        split = n_layers if a is None else a
        spans = normalize_spans(visual_spans)
        state = self._drop_state(spans, prefix_embeds.shape[1], prefix_embeds.device, None)
        past = KVCache.empty(n_layers)
        prefix_hidden = self._run_layers(prefix_embeds, range(split), None, past, state)
        shared = state.stages[0] if state is not None else []
        out: list[RuleScore] = []
        for i in range(0, len(suffix_token_lists), max_batch):
            chunk = [list(s) for s in suffix_token_lists[i : i + max_batch]]
            if min(len(s) for s in chunk) < 1:
                raise ValueError("every suffix needs at least one token")
            lens = torch.tensor([len(s) for s in chunk], device=prefix_embeds.device)
            ids = torch.zeros(len(chunk), int(lens.max()), dtype=torch.long)
            for b, s in enumerate(chunk):
                ids[b, : len(s)] = torch.as_tensor(s, dtype=torch.long)
            hidden = self._run_layers(self.embed(ids), range(split), past, None, None)  # (B, S, D)
            last = lens - 1
            tail: _DropState | None = None
            if split < n_layers:  # rerun layers >= a on (prefix + suffix), rows right-padded
                p = prefix_hidden.shape[1]
                hidden = torch.cat((prefix_hidden.expand(len(chunk), -1, -1), hidden), dim=1)
                last = last + p
                tail = state.expand(last) if state is not None else None
                hidden = self._run_layers(hidden, range(split, n_layers), None, None, tail)
                last = tail.last if tail is not None else last
            rows = torch.arange(len(chunk), device=hidden.device)
            logits = self.logits_of(hidden[rows, last])  # (B, V)
            p_yes = logits[:, [yes_id, no_id]].softmax(-1)[:, 0].tolist()
            for b in range(len(chunk)):
                own = tail.stages[b] if tail is not None else []
                out.append(RuleScore(p_yes[b], [*shared, *own]))
        return out

    @torch.no_grad()
    def score_prompts(
        self,
        inputs_embeds: Tensor,
        visual_spans: Span | Sequence[Span] | None,
        yes_id: int,
        no_id: int,
    ) -> list[RuleScore]:
        """P(yes) for B whole prompts (B, L, D) that share one layout (same visual spans, same
        length; e.g. zoom windows of equal size with the same text), as one batch.

        Each row drops its own visual tokens (attention stages score each row's own last
        token), exactly as B separate `prefill` calls would; no cache is kept.
        """
        b, length, _ = inputs_embeds.shape
        spans = normalize_spans(visual_spans)
        one = self._drop_state(spans, length, inputs_embeds.device, None)
        last = torch.full((b,), length - 1, device=inputs_embeds.device)
        state = one.expand(last) if one is not None else None
        layers = range(self.cfg.num_hidden_layers)
        hidden = self._run_layers(inputs_embeds, layers, None, None, state)
        last = state.last if state is not None else last
        logits = self.logits_of(hidden[torch.arange(b, device=hidden.device), last])  # (B, V)
        p_yes = logits[:, [yes_id, no_id]].softmax(-1)[:, 0].tolist()
        return [RuleScore(p_yes[i], state.stages[i] if state else []) for i in range(b)]


@dataclass
class RuleScore:
    p_yes: float
    stages: list[DropStage]  # drops applied for this rule (shared uniform ones + its own)


def clip_relevance(stage: DropStage, n_visual: int, tokens_per_clip: int = 64) -> Tensor:
    """Sum of a text-guided stage's scores per clip, (n_visual // tokens_per_clip,).

    Evidence for answers/rules: visual tokens are clips of 64 tokens in temporal order, so
    original index // 64 is the clip. Tokens dropped before this stage count as 0.
    """
    if stage.scores is None:
        raise ValueError(f"stage at layer {stage.layer} is {stage.mode}, it has no scores")
    per_token = torch.zeros(n_visual, dtype=torch.float32, device=stage.scores.device)
    per_token[stage.candidates] = stage.scores.float()
    return per_token.view(-1, tokens_per_clip).sum(-1)  # (clips,)


def normalize_spans(spans: Span | Sequence[Span] | None) -> list[Span]:
    """Accept one (start, length) pair, a list of them, or None; return a sorted list."""
    if spans is None:
        return []
    if len(spans) == 2 and isinstance(spans[0], int) and isinstance(spans[1], int):
        return [(int(spans[0]), int(spans[1]))]
    out = sorted((int(s), int(n)) for s, n in cast(Sequence[Span], spans))
    for (s0, n0), (s1, _) in pairwise(out):
        if s0 + n0 > s1:
            raise ValueError(f"visual spans overlap: {out}")
    return out
