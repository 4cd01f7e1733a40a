"""Loading a VideoChat-Flash directory: key selection, errors, dtypes, tying, config mapping."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors import safe_open

import reasoner.loading as loading
from reasoner.loading import (
    CheckpointError,
    drop_config_from_dict,
    load_reasoner,
    qwen2_config_from_dict,
)
from reasoner.modeling_qwen2_flash import DropConfig
from reasoner.testing import VISION_SAMPLE, tiny_config_json, write_tiny_checkpoint

SMALL = {"vocab_size": 300}  # no tokenizer needed: keep the embedding small


def stored(directory: Path) -> dict[str, torch.Tensor]:
    out: dict[str, torch.Tensor] = {}
    for file in directory.glob("*.safetensors"):
        with safe_open(str(file), framework="pt") as f:
            for k in f.keys():  # noqa: SIM118
                out[k] = f.get_tensor(k)
    return out


@pytest.mark.parametrize("sharded", [False, True])
def test_round_trip_reads_only_reasoner_tensors(
    tmp_path: Path, sharded: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    ck = write_tiny_checkpoint(tmp_path / "ck", sharded=sharded, tokenizer=False, **SMALL)
    read: list[str] = []
    real_open = loading.safe_open

    class Spy:
        def __init__(self, path: str, framework: str) -> None:
            self.inner = real_open(path, framework=framework)

        def __enter__(self) -> Spy:
            self.f = self.inner.__enter__()
            return self

        def __exit__(self, *exc: Any) -> None:
            self.inner.__exit__(*exc)

        def keys(self) -> list[str]:
            return list(self.f.keys())

        def get_tensor(self, name: str) -> torch.Tensor:
            read.append(name)
            return self.f.get_tensor(name)

    monkeypatch.setattr(loading, "safe_open", Spy)
    r = load_reasoner(ck, dtype="fp32", load_tokenizer=False)
    assert read and not any(k.startswith("model.vision_tower.") for k in read)
    assert set(VISION_SAMPLE) <= set(stored(ck))
    ref = stored(ck)
    for k, v in r.llm.state_dict().items():
        torch.testing.assert_close(v, ref[k].float(), atol=0, rtol=0)
    torch.testing.assert_close(
        r.projector.mlp[2].bias, ref["model.mm_projector.mlp.2.bias"].float()
    )
    assert r.llm.drop == DropConfig(mode="none")  # mm_llm_compress is false in the tiny config
    assert r.llm.lm_head.weight.data_ptr() != r.llm.model.embed_tokens.weight.data_ptr()
    assert not any(p.requires_grad for p in r.llm.parameters())


def test_lm_head_tied_only_when_absent(tmp_path: Path) -> None:
    ck = write_tiny_checkpoint(tmp_path / "ck", with_lm_head=False, tokenizer=False, **SMALL)
    r = load_reasoner(ck, dtype="fp32", load_tokenizer=False)
    assert r.llm.lm_head.weight is r.llm.model.embed_tokens.weight
    # present beats the config's tie flag (the 2B ties in its base config but stores lm_head)
    ck2 = write_tiny_checkpoint(
        tmp_path / "ck2", tie_word_embeddings=True, tokenizer=False, **SMALL
    )
    r2 = load_reasoner(ck2, dtype="fp32", load_tokenizer=False)
    torch.testing.assert_close(r2.llm.lm_head.weight, stored(ck2)["lm_head.weight"].float())
    assert r2.llm.lm_head.weight is not r2.llm.model.embed_tokens.weight


def test_missing_and_unexpected_keys_are_named(tmp_path: Path) -> None:
    ck = write_tiny_checkpoint(
        tmp_path / "ck",
        tokenizer=False,
        drop_keys=("model.layers.1.self_attn.k_proj.bias", "model.mm_projector.mlp.0.weight"),
        extra_tensors={"model.image_newline": torch.zeros(4)},
        **SMALL,
    )
    with pytest.raises(CheckpointError) as err:
        load_reasoner(ck, load_tokenizer=False)
    msg = str(err.value)
    assert (
        "missing keys: model.layers.1.self_attn.k_proj.bias, model.mm_projector.mlp.0.weight" in msg
    )
    assert "unexpected keys: model.image_newline" in msg


def test_shape_mismatch_and_missing_files(tmp_path: Path) -> None:
    ck = write_tiny_checkpoint(tmp_path / "ck", tokenizer=False, **SMALL)
    cfg = json.loads((ck / "config.json").read_text())
    cfg["intermediate_size"] = 48
    (ck / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match=r"mlp.gate_proj.weight: checkpoint shape \(64, 32\)"):
        load_reasoner(ck, load_tokenizer=False)
    (ck / "model.safetensors").unlink()
    with pytest.raises(CheckpointError, match="neither"):
        load_reasoner(ck, load_tokenizer=False)


@pytest.mark.parametrize(
    ("name", "dtype"), [("bf16", torch.bfloat16), ("fp16", torch.float16), ("fp32", torch.float32)]
)
def test_dtypes(tmp_path: Path, name: str, dtype: torch.dtype) -> None:
    ck = write_tiny_checkpoint(tmp_path / "ck", tokenizer=False, **SMALL)
    r = load_reasoner(ck, dtype=name, device="cpu", load_tokenizer=False)
    assert {p.dtype for p in r.llm.parameters()} == {dtype}
    assert r.projector.mlp[0].weight.dtype == dtype
    x = r.llm.embed([1, 2, 3])
    assert torch.isfinite(r.llm.prefill(x).logits).all()


def test_config_mapping() -> None:
    cfg = tiny_config_json(num_layers=6, drop=("uniform0_attention", [2, 4], [1, 0.75, 0.25]))
    q = qwen2_config_from_dict(cfg)
    assert (q.hidden_size, q.num_hidden_layers, q.num_attention_heads) == (32, 6, 4)
    assert (q.num_key_value_heads, q.intermediate_size, q.vocab_size) == (2, 64, 151_936)
    assert (q.rms_norm_eps, q.rope_theta) == (1e-6, 1e6)
    assert drop_config_from_dict(cfg) == DropConfig("uniform0_attention", (2, 4), (1.0, 0.75, 0.25))
    assert drop_config_from_dict({**cfg, "mm_llm_compress": False}).mode == "none"
    ref_default = drop_config_from_dict({"mm_llm_compress": True})
    assert ref_default == DropConfig("attention", (8, 16, 24), (1.0, 0.5, 0.25, 0.125))
    with pytest.raises(CheckpointError, match="uniform1_attention"):
        drop_config_from_dict({**cfg, "llm_compress_type": "uniform1_attention"})
    v5 = {k: v for k, v in cfg.items() if k != "rope_theta"}
    v5["rope_parameters"] = {"rope_type": "default", "rope_theta": 5e5}
    assert qwen2_config_from_dict(v5).rope_theta == 5e5


def test_drop_settings_from_config_and_override(tmp_path: Path) -> None:
    drop = ("uniform0_attention", [1, 2], [1.0, 0.75, 0.25])
    ck = write_tiny_checkpoint(tmp_path / "ck", tokenizer=False, drop=drop, **SMALL)
    assert load_reasoner(ck, load_tokenizer=False).llm.drop.layers == (1, 2)
    off = load_reasoner(ck, load_tokenizer=False, drop=DropConfig(mode="none"))
    assert not off.llm.drop.active
    with pytest.raises(ValueError, match="< num_hidden_layers"):
        load_reasoner(ck, load_tokenizer=False, drop=DropConfig())  # [4, 18] on 4 layers


@pytest.mark.slow
def test_tokenizer_loaded_from_directory(tmp_path: Path) -> None:
    ck = write_tiny_checkpoint(tmp_path / "ck")
    tok = load_reasoner(ck, dtype="fp32").tokenizer
    assert tok("Hello world!")["input_ids"] == [9707, 1879, 0]
    assert tok.convert_tokens_to_ids(["<|im_start|>", "<|im_end|>"]) == [151644, 151645]
    assert tok.decode([9707, 1879, 0, 151645], skip_special_tokens=True) == "Hello world!"
