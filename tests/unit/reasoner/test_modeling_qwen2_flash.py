"""Qwen2 + progressive dropping: HF parity (dropping off), selection rules, caches, scoring."""

from __future__ import annotations

import pytest
import torch
from transformers import Qwen2Config, Qwen2ForCausalLM

from reasoner.modeling_qwen2_flash import (
    DropConfig,
    KVCache,
    Qwen2FlashConfig,
    Qwen2FlashForCausalLM,
    clip_relevance,
    keep_indices,
    normalize_spans,
    reference_decode_position,
    uniform_keep_indices,
)

VOCAB, D, FF, LAYERS, HEADS, KV_HEADS = 97, 64, 96, 6, 4, 2
OFF = DropConfig(mode="none")


def make_model(
    drop: DropConfig = OFF, attn_impl: str = "sdpa", seed: int = 0
) -> Qwen2FlashForCausalLM:
    torch.manual_seed(seed)
    cfg = Qwen2FlashConfig(
        vocab_size=VOCAB,
        hidden_size=D,
        intermediate_size=FF,
        num_hidden_layers=LAYERS,
        num_attention_heads=HEADS,
        num_key_value_heads=KV_HEADS,
        rope_theta=10_000.0,
        attn_impl=attn_impl,  # type: ignore[arg-type]
    )
    model = Qwen2FlashForCausalLM(cfg, drop)
    for p in model.parameters():
        torch.nn.init.normal_(p, std=0.15)
    return model.eval()


def make_hf(model: Qwen2FlashForCausalLM, num_layers: int = LAYERS) -> Qwen2ForCausalLM:
    cfg = Qwen2Config(
        vocab_size=VOCAB,
        hidden_size=D,
        intermediate_size=FF,
        num_hidden_layers=num_layers,
        num_attention_heads=HEADS,
        num_key_value_heads=KV_HEADS,
        rms_norm_eps=1e-6,
        rope_parameters={"rope_type": "default", "rope_theta": 10_000.0},
        tie_word_embeddings=False,
        attn_implementation="eager",
    )
    hf = Qwen2ForCausalLM(cfg).eval()
    state = model.state_dict()
    if num_layers != LAYERS:  # keep the last `num_layers` layers, renumbered from 0
        first = LAYERS - num_layers
        renamed = {}
        for key, value in state.items():
            if key.startswith("model.layers."):
                j = int(key.split(".")[2])
                if j < first:
                    continue
                key = key.replace(f"model.layers.{j}.", f"model.layers.{j - first}.", 1)
            renamed[key] = value
        state = renamed
    hf.load_state_dict(state, strict=True)
    return hf


def prompt(length: int = 40, seed: int = 1) -> torch.Tensor:
    torch.manual_seed(seed)
    return torch.randn(1, length, D)


@pytest.mark.parametrize("attn_impl", ["sdpa", "eager"])
def test_prefill_logits_match_transformers(attn_impl: str) -> None:
    model = make_model(attn_impl=attn_impl)
    hf = make_hf(model)
    x = prompt()
    with torch.no_grad():
        ref = hf(inputs_embeds=x).logits[0]
    ours = model.prefill(x, (5, 24), all_logits=True).logits
    assert ours.shape == ref.shape
    torch.testing.assert_close(ours, ref, atol=1e-5, rtol=0)


def test_greedy_generation_matches_transformers() -> None:
    model = make_model()
    hf = make_hf(model)
    x = prompt()
    # transformers, no cache: recompute the whole sequence for every new token
    seq, ref_tokens, ref_logits = x, [], []
    with torch.no_grad():
        for _ in range(8):
            logits = hf(inputs_embeds=seq).logits[0, -1]
            ref_logits.append(logits)
            ref_tokens.append(int(logits.argmax()))
            seq = torch.cat((seq, hf.model.embed_tokens(torch.tensor([[ref_tokens[-1]]]))), dim=1)
    gen = model.generate_greedy(x, (5, 24), max_new_tokens=8)
    assert gen.tokens == ref_tokens
    pre = model.prefill(x, (5, 24))
    torch.testing.assert_close(pre.logits, ref_logits[0], atol=1e-5, rtol=0)
    for step, tok in enumerate(ref_tokens[:-1]):
        logits = model.decode_step(torch.tensor([[tok]]), pre.cache)[0]
        torch.testing.assert_close(logits, ref_logits[step + 1], atol=1e-5, rtol=0)


def test_generation_stops_at_stop_id() -> None:
    model = make_model()
    x = prompt()
    free = model.generate_greedy(x, None, max_new_tokens=6)
    assert not free.stopped and len(free.tokens) == 6
    stop = free.tokens[2]
    gen = model.generate_greedy(x, None, max_new_tokens=6, stop_ids=[stop])
    first = free.tokens.index(stop)
    assert gen.stopped and gen.tokens == free.tokens[: first + 1]


def test_uniform_keep_indices_truncate_like_reference() -> None:
    assert uniform_keep_indices(11, 4).tolist() == [0, 3, 6, 10]  # linspace(0, 10, 4)
    assert uniform_keep_indices(16, 12).tolist() == [0, 1, 2, 4, 5, 6, 8, 9, 10, 12, 13, 15]
    assert uniform_keep_indices(12, 3).tolist() == [0, 5, 11]
    assert uniform_keep_indices(5, 5).tolist() == [0, 1, 2, 3, 4]


def test_keep_indices_is_topk_in_temporal_order() -> None:
    scores = torch.tensor([0.1, 0.9, 0.3, 0.8, 0.05, 0.7])
    assert keep_indices(scores, 3).tolist() == [1, 3, 5]
    assert keep_indices(scores, 0).tolist() == []


def test_attention_mode_keeps_topk_of_head_mean_last_token_attention() -> None:
    """Scores must equal transformers' layer-k attention row of the last token, head-mean."""
    s0, n, k = 4, 24, 2
    model = make_model(DropConfig(mode="attention", layers=(k,), ratios=(1.0, 0.5)))
    hf = make_hf(model)
    x = prompt()
    with torch.no_grad():
        attn = hf(inputs_embeds=x, output_attentions=True).attentions[k]  # (1, H, L, L)
    expected_scores = attn[0, :, -1, s0 : s0 + n].mean(0)
    pre = model.prefill(x, (s0, n))
    (stage,) = pre.stages
    assert stage.mode == "attention" and stage.layer == k
    assert stage.scores is not None
    torch.testing.assert_close(stage.scores, expected_scores, atol=1e-6, rtol=0)
    expected_kept = sorted(torch.topk(expected_scores, n // 2).indices.tolist())
    assert stage.kept.tolist() == expected_kept


def test_uniform0_attention_schedule_and_lengths() -> None:
    s0, n, length = 3, 32, 44
    model = make_model(DropConfig(mode="uniform0_attention", layers=(2, 4), ratios=(1, 0.75, 0.25)))
    pre = model.prefill(prompt(length), (s0, n))
    first, second = pre.stages
    assert (first.mode, second.mode) == ("uniform", "attention")
    assert first.kept.tolist() == torch.linspace(0, n - 1, 24, dtype=torch.long).tolist()
    assert first.scores is None and second.scores is not None
    assert len(second.kept) == 8 and set(second.kept.tolist()) <= set(first.kept.tolist())
    assert second.kept.tolist() == sorted(second.kept.tolist())
    assert pre.seq_lens == [44, 44, 36, 36, 20, 20]
    assert pre.cache.lengths() == pre.seq_lens


def test_uniform_mode_equals_transformers_on_the_kept_sequence() -> None:
    """After the drop, the remaining layers see the kept tokens at positions 0..L'-1.

    Independent check: transformers' hidden state entering layer k, cut to the kept tokens, fed
    to a transformers model made of layers k.. (default positions 0..L'-1) gives our logits.
    """
    s0, n, k, length = 5, 20, 3, 36
    model = make_model(DropConfig(mode="uniform", layers=(k,), ratios=(1.0, 0.5)))
    x = prompt(length)
    pre = model.prefill(x, (s0, n), all_logits=True)
    kept = pre.stages[0].kept
    assert kept.tolist() == uniform_keep_indices(n, 10).tolist()
    with torch.no_grad():
        hidden_k = make_hf(model)(inputs_embeds=x, output_hidden_states=True).hidden_states[k]
        keep_seq = torch.cat((torch.arange(s0), s0 + kept, torch.arange(s0 + n, length)))
        tail = make_hf(model, num_layers=LAYERS - k)
        ref = tail(inputs_embeds=hidden_k[:, keep_seq]).logits[0]
    torch.testing.assert_close(pre.logits, ref, atol=1e-5, rtol=0)


@pytest.mark.parametrize("mode", ["uniform0_attention", "attention", "uniform"])
def test_decode_with_uneven_caches_matches_recomputation(mode: str) -> None:
    s0, n, length = 3, 32, 44
    model = make_model(DropConfig(mode=mode, layers=(2, 4), ratios=(1, 0.75, 0.25)))  # type: ignore[arg-type]
    x = prompt(length)
    gen = model.generate_greedy(x, (s0, n), max_new_tokens=5)
    pre = gen.prefill
    assert len(set(pre.cache.lengths())) == 3  # three different per-layer lengths
    # Replay: same cache after prefill, step by step, checking positions and logits.
    fresh = model.prefill(x, (s0, n))
    forced = [st.kept for st in fresh.stages]
    assert [f.tolist() for f in forced] == [st.kept.tolist() for st in pre.stages]
    seq = x
    for step, tok in enumerate(gen.tokens[:-1]):
        for j in range(LAYERS):
            assert fresh.cache.length(j) == reference_decode_position(length, step, j, fresh.stages)
        logits = model.decode_step(torch.tensor([[tok]]), fresh.cache)[0]
        seq = torch.cat((seq, model.embed([tok])), dim=1)
        again = model.prefill(seq, (s0, n), forced_keep=forced)
        torch.testing.assert_close(logits, again.logits, atol=1e-5, rtol=0)
        assert int(logits.argmax()) == gen.tokens[step + 1]


def test_multi_span_drops_only_visual_tokens() -> None:
    model = make_model(DropConfig(mode="uniform", layers=(2,), ratios=(1.0, 0.5)))
    x = prompt(40)
    pre = model.prefill(x, [(3, 10), (20, 10)])
    assert pre.seq_lens[2] == 40 - 10
    assert pre.stages[0].kept.tolist() == uniform_keep_indices(20, 10).tolist()


@pytest.mark.parametrize("mode", ["none", "uniform0_attention", "attention", "uniform"])
def test_shared_prefix_scores_equal_separate_runs(mode: str) -> None:
    drop = DropConfig(mode=mode, layers=(2, 4), ratios=(1, 0.75, 0.25))  # type: ignore[arg-type]
    model = make_model(drop)
    prefix = prompt(30)
    span = (2, 24)
    suffixes = [[5, 6, 7], [8], [9, 10, 11, 12, 13], [5, 6, 7]]
    yes, no = 11, 12
    shared = model.score_yes_no(prefix, span, suffixes, yes, no, max_batch=3)
    for suffix, p in zip(suffixes, shared, strict=True):
        full = torch.cat((prefix, model.embed(suffix)), dim=1)
        logits = model.prefill(full, span).logits
        expected = float(torch.stack((logits[yes], logits[no])).softmax(0)[0])
        assert p == pytest.approx(expected, abs=1e-5)
    assert shared[0] == pytest.approx(shared[3], abs=1e-6)


def test_drop_config_validation() -> None:
    with pytest.raises(ValueError, match="len\\(ratios\\)"):
        DropConfig(mode="uniform", layers=(4,), ratios=(1.0,))
    with pytest.raises(ValueError, match="increasing"):
        DropConfig(mode="uniform", layers=(8, 4), ratios=(1.0, 0.5, 0.25))
    with pytest.raises(ValueError, match="ratios\\[0\\]"):
        DropConfig(mode="uniform", layers=(4,), ratios=(0.9, 0.5))
    with pytest.raises(ValueError, match="< num_hidden_layers"):
        make_model(DropConfig(mode="uniform", layers=(LAYERS,), ratios=(1.0, 0.5)))
    assert DropConfig() == DropConfig("uniform0_attention", (4, 18), (1.0, 0.75, 0.25))
    assert DropConfig().first_text_guided_layer() == 18
    assert DropConfig(mode="none").first_text_guided_layer() is None


def test_normalize_spans() -> None:
    assert normalize_spans(None) == []
    assert normalize_spans((3, 4)) == [(3, 4)]
    assert normalize_spans([(9, 1), (3, 4)]) == [(3, 4), (9, 1)]
    with pytest.raises(ValueError, match="overlap"):
        normalize_spans([(3, 4), (5, 1)])


def test_cache_lengths_empty() -> None:
    assert KVCache.empty(3).lengths() == [0, 0, 0]


def test_rule_stages_and_clip_relevance() -> None:
    model = make_model(DropConfig(mode="uniform0_attention", layers=(2, 4), ratios=(1, 0.75, 0.25)))
    prefix = prompt(40)
    span = (4, 32)  # two "clips" of 16 tokens
    rules = model.score_rules(prefix, span, [[5, 6], [7]], 11, 12)
    for rule, suffix in zip(rules, [[5, 6], [7]], strict=True):
        full = model.prefill(torch.cat((prefix, model.embed(suffix)), dim=1), span)
        assert [st.kept.tolist() for st in rule.stages] == [st.kept.tolist() for st in full.stages]
        relevance = clip_relevance(rule.stages[1], 32, tokens_per_clip=16)
        assert relevance.shape == (2,)
        assert rule.stages[1].scores is not None
        assert float(relevance.sum()) == pytest.approx(float(rule.stages[1].scores.sum()), rel=1e-5)
    with pytest.raises(ValueError, match="no scores"):
        clip_relevance(rules[0].stages[0], 32, 16)
