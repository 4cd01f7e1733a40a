"""A small byte-level BPE tokenizer with Qwen2's pipeline and the ChatML special tokens.

Same normaliser (NFC), pre-tokeniser (Qwen2's split regex + byte-level) and decoder as
`transformers.Qwen2Tokenizer`, so the project's `load_tokenizer_from` (a plain
`Qwen2Tokenizer.from_pretrained`) loads it unchanged; only the vocabulary is small. Merges are
learned from the reference prompt and every question/answer phrase of `reasoner.tiny.data`, so
frequent words ("Yes", "No", colours) are single tokens. Ids 0, 1, 2 are `<|endoftext|>`,
`<|im_start|>`, `<|im_end|>` (Qwen2 uses 151643-151645; no code may hard-code those).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from reasoner.prompt import SYSTEM_PROMPT, chat_prompt, time_sentence

SPECIALS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")
DEFAULT_VOCAB = 640


def _prompt_corpus() -> list[str]:
    texts = [chat_prompt("x"), SYSTEM_PROMPT, "\n"]
    for n in range(4, 80, 4):
        for d in (n * 1.0, n * 2.0, n * 0.75):
            texts.append("\n" + time_sentence(d, n) + " ")
    return texts


def build_tokenizer(out_dir: str | Path, texts: list[str], vocab_size: int = DEFAULT_VOCAB) -> Any:
    """Train the BPE on `texts` (+ the prompt scaffolding) and save Qwen2Tokenizer files."""
    from tokenizers import (
        AddedToken,
        Regex,
        Tokenizer,
        decoders,
        models,
        normalizers,
        pre_tokenizers,
        trainers,
    )
    from transformers import Qwen2Tokenizer
    from transformers.models.qwen2.tokenization_qwen2 import PRETOKENIZE_REGEX

    tok = Tokenizer(models.BPE(unk_token=None, fuse_unk=False, byte_fallback=False))
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(PRETOKENIZE_REGEX), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=1,
        special_tokens=list(SPECIALS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    corpus = _prompt_corpus() + texts
    # Repeat so the scaffolding (seen in every sample) wins merges over rare phrases.
    tok.train_from_iterator(corpus[:3] * 50 + corpus, trainer=trainer)
    tok.add_special_tokens([AddedToken(s, special=True, normalized=False) for s in SPECIALS])
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    raw = out / "raw_tokenizer.json"
    tok.save(str(raw))
    no_token: dict[str, Any] = {"unk_token": None, "bos_token": None}  # Qwen has neither
    hf = Qwen2Tokenizer(
        tokenizer_file=str(raw),
        eos_token="<|im_end|>",  # noqa: S106 - a token, not a password
        pad_token="<|endoftext|>",  # noqa: S106
        **no_token,
    )
    hf.model_max_length = 32768
    hf.save_pretrained(str(out))
    raw.unlink()
    return hf
