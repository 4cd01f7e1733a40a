"""Clip tokens ↔ stored precision: fp16, or int8 with one fp16 scale per token.

The encoder produces fp32 (64, C) post-ToMe, pre-projector features. Memory stores them as
fp16 (128 KiB per clip at C = 1024) or int8 (64 KiB + 128 B of scales), the latter halving Redis
memory per camera-hour. Quantisation is symmetric per token (row): scale = absmax / 127, so a
token's few large channels only coarsen that token, and the projector sees int8 * scale. The
scale is rounded to fp16 *before* quantising, so the stored pair reproduces exactly what was
measured (no second rounding at read time).

Quality is measured in the unit tests (cosine to the fp16 tokens ≥ 0.999). The error of one
token is roughly uniform with step absmax/127, so for post-LayerNorm features (per-token RMS 1)
1 − cosine ≈ absmax² / 387,000: tokens whose largest channel stays under ≈ 19.7 keep 0.999.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np
import numpy.typing as npt

from flashwatch.messages import ClipTokens

__all__ = [
    "FP16_MAX",
    "StoredDtype",
    "cosine_rows",
    "dequantize_int8",
    "encode_tokens",
    "quantize_int8",
    "tokens_to_array",
]

StoredDtype = Literal["fp16", "int8", "fp32"]
FP16_MAX = 65504.0
F32 = npt.NDArray[np.float32]


def _check_features(x: npt.ArrayLike) -> F32:
    arr = np.asarray(x, dtype=np.float32)
    if arr.ndim != 2 or arr.shape[0] == 0 or arr.shape[1] == 0:
        raise ValueError(f"tokens must be a non-empty (tokens, channels) array, got {arr.shape}")
    if not np.isfinite(arr).all():
        raise ValueError("tokens contain NaN or infinity; refusing to store them")
    return arr


def quantize_int8(x: npt.ArrayLike) -> tuple[npt.NDArray[np.int8], npt.NDArray[np.float16]]:
    """Per-row symmetric int8: returns (q, scales) with x ≈ q * scales[:, None]."""
    arr = _check_features(x)
    absmax = np.abs(arr).max(axis=1)  # (N,)
    if float(absmax.max()) / 127.0 > FP16_MAX:
        raise ValueError(f"token magnitude {float(absmax.max()):.3g} overflows an fp16 scale")
    scales = (absmax / 127.0).astype(np.float16)  # (N,)
    # A zero row (or a scale that underflowed fp16) quantises to zeros with a harmless scale.
    safe = np.where(scales > 0, scales.astype(np.float32), np.float32(1.0))  # (N,)
    q = np.clip(np.rint(arr / safe[:, None]), -127, 127).astype(np.int8)  # (N, C)
    return q, np.where(scales > 0, scales, np.float16(0)).astype(np.float16)


def dequantize_int8(q: npt.NDArray[np.int8], scales: npt.NDArray[np.float16]) -> F32:
    return q.astype(np.float32) * scales.astype(np.float32)[:, None]  # (N, C)


def encode_tokens(
    x: npt.ArrayLike,
    dtype: StoredDtype,
    *,
    camera_id: int,
    level: int,
    epoch: int,
    t: Sequence[float],
    thumb: bytes | None = None,
) -> ClipTokens:
    """Turn encoder output (N, C) into a `ClipTokens` in the stored precision."""
    arr = _check_features(x)
    scales: bytes | None = None
    if dtype == "int8":
        q, s = quantize_int8(arr)
        payload, scales = q.tobytes(), s.astype("<f2").tobytes()
    elif dtype == "fp16":
        if float(np.abs(arr).max()) > FP16_MAX:
            raise ValueError(f"token magnitude {float(np.abs(arr).max()):.3g} overflows fp16")
        payload = arr.astype("<f2").tobytes()
    elif dtype == "fp32":
        payload = arr.astype("<f4").tobytes()
    else:
        raise ValueError(f"unknown token dtype {dtype!r}")
    t0, t1, t2, t3 = (float(v) for v in t)
    return ClipTokens(
        camera_id=camera_id,
        level=level,
        epoch=epoch,
        t=(t0, t1, t2, t3),
        dtype=dtype,
        shape=(int(arr.shape[0]), int(arr.shape[1])),
        tokens=payload,
        scales=scales,
        thumb=thumb,
    )


def tokens_to_array(ct: ClipTokens) -> F32:
    """The (N, C) float32 features a stored clip represents (int8 dequantised)."""
    rows, cols = ct.shape
    if ct.dtype == "int8":
        if ct.scales is None or len(ct.scales) != 2 * rows:
            raise ValueError(f"int8 clip {ct.clip_id} needs {rows} fp16 scales")
        q = np.frombuffer(ct.tokens, dtype=np.int8).reshape(rows, cols)
        return dequantize_int8(q, np.frombuffer(ct.scales, dtype="<f2"))
    np_dtype = "<f2" if ct.dtype == "fp16" else "<f4"
    return np.frombuffer(ct.tokens, dtype=np_dtype).reshape(rows, cols).astype(np.float32)


def cosine_rows(a: npt.ArrayLike, b: npt.ArrayLike) -> npt.NDArray[np.float64]:
    """Cosine similarity of matching rows (a zero row against a zero row counts as 1)."""
    x = np.asarray(a, dtype=np.float64)
    y = np.asarray(b, dtype=np.float64)
    num = (x * y).sum(axis=1)
    den = np.linalg.norm(x, axis=1) * np.linalg.norm(y, axis=1)
    both_zero = (np.linalg.norm(x, axis=1) == 0) & (np.linalg.norm(y, axis=1) == 0)
    out = np.divide(num, den, out=np.zeros_like(num), where=den > 0)
    return np.where(both_zero, 1.0, out)
