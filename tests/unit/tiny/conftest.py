"""One small tokenizer per test session (building it takes ~2 s)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from reasoner.tiny.data import corpus_texts
from reasoner.tiny.tokenizer import build_tokenizer


@pytest.fixture(scope="session")
def tok_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("tiny-tok")
    build_tokenizer(out, corpus_texts())
    return out


@pytest.fixture(scope="session")
def tok(tok_dir: Path) -> Any:
    from reasoner.loading import load_tokenizer_from

    return load_tokenizer_from(tok_dir)
