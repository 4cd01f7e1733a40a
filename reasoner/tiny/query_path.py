"""Ask a held-out window's questions the way a user's question reaches the model.

Evaluation scores yes/no by feeding a window's clips straight to the LLM. On windows longer
than a checkpoint's `fw_max_frames` the product never does that: the window's clips sit in
memory and `LocalReasoner.query` (strategy `auto`) scans and zooms within the frame budget,
then answers by greedy decoding. `QueryPath` stores each window's encoded clips as level-0
`ClipTokens` in an embedded memory store and asks through that same path, so the report can
say what a user asking about such a window gets.
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from flashwatch.config import MemoryConfig, ReasonerConfig
from flashwatch.messages import CameraWindow, QueryAnswer, QueryRequest
from memory import open_store
from memory.codec import encode_tokens
from reasoner.engine import LocalReasoner
from reasoner.modeling_qwen2_flash import DropConfig
from reasoner.tiny.data import Window

EPOCH0 = 1_780_000_000.0
"""Wall-clock time of scene time 0 (memory keys clips by wall-clock seconds); `bench.accuracy`
stores its synthetic streams from here too."""


class QueryPath:
    """One embedded memory store and reasoner; each window becomes its own camera."""

    def __init__(self, model_dir: str | Path, drop: DropConfig | None = None) -> None:
        self._tmp = tempfile.TemporaryDirectory(prefix="fw-eval-")
        self.store = open_store(MemoryConfig(retention_hours=[87840.0]), Path(self._tmp.name))
        drop = drop or DropConfig(mode="none")
        cfg = ReasonerConfig(
            model_dir=Path(model_dir),
            drop_mode=drop.mode,
            drop_layers=list(drop.layers) if drop.mode != "none" else [],
            drop_ratios=list(drop.ratios),
        )
        self.reasoner = LocalReasoner.from_config(cfg, self.store)
        self._cameras = 0

    def ask(
        self, window: Window, tokens: np.ndarray, questions: Sequence[str]
    ) -> list[QueryAnswer]:
        """Answers to `questions` about `window`, whose clips encode to `tokens` (n, 64, C)."""
        self._cameras += 1
        camera = self._cameras
        times = window.times
        for c, clip in enumerate(tokens):
            t = tuple(EPOCH0 + times[4 * c + k] for k in range(4))
            self.store.put(encode_tokens(clip, "fp16", camera_id=camera, level=0, epoch=0, t=t))
        asked = CameraWindow(
            camera_id=camera,
            t_from=EPOCH0 + window.t0,
            t_to=EPOCH0 + window.t0 + window.duration,
        )
        return [
            self.reasoner.query(
                QueryRequest(question=q, windows=[asked], strategy="auto", max_new_tokens=4)
            )
            for q in questions
        ]

    def close(self) -> None:
        self.store.close()
        self._tmp.cleanup()
