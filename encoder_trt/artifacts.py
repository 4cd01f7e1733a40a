"""Build-once artifacts of the encoder (ONNX graphs, TensorRT engines) and backend opening.

An ONNX file is named after a fingerprint of the checkpoint (its config.json and the
names, shapes and dtypes of the encoder tensors, read from safetensors headers only) and
the maximum batch, so a changed model never reuses a stale graph. TensorRT engines add
their own identity (TensorRT version, GPU, precision) in `trt_engine.build_engine`.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any

import torch

from encoder_trt.backends import ClipEncoder, create_backend
from encoder_trt.checkpoint import encoder_key_files, load_clip_encoder, read_config_json

log = logging.getLogger("flashwatch.encoder")


def checkpoint_fingerprint(model_dir: Path) -> str:
    """sha256 over config.json and the encoder tensors' names, dtypes and bytes.

    Hashing the bytes (only the vision tower's, ~0.6 GB for UMT-L in bf16) is what keeps a
    fine-tuned checkpoint with identical shapes from reusing a stale graph.
    """
    from safetensors import safe_open

    h = hashlib.sha256(json.dumps(read_config_json(model_dir), sort_keys=True).encode())
    by_file: dict[str, list[str]] = {}
    for key, fname in encoder_key_files(model_dir).items():
        by_file.setdefault(fname, []).append(key)
    for fname in sorted(by_file):
        with safe_open(str(model_dir / fname), framework="pt") as fh:
            for key in sorted(by_file[fname]):
                tensor = fh.get_tensor(key).contiguous()
                h.update(f"{key}:{tuple(tensor.shape)}:{tensor.dtype}".encode())
                h.update(tensor.view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:16]


def onnx_path_for(model_dir: Path, cache_dir: Path, max_batch: int) -> Path:
    return cache_dir / f"umt-{checkpoint_fingerprint(model_dir)}-b{max_batch}.onnx"


def ensure_onnx(model_dir: Path, cache_dir: Path, max_batch: int, *, force: bool = False) -> Path:
    """The exported UMT+ToMe graph for this checkpoint, exporting it when not cached."""
    from encoder_trt.onnx_export import export_onnx

    path = onnx_path_for(model_dir, cache_dir, max_batch)
    if path.is_file() and not force:
        return path
    cache_dir.mkdir(parents=True, exist_ok=True)
    model, _ = load_clip_encoder(model_dir)
    tmp = path.with_suffix(".onnx.tmp")
    export_onnx(model, tmp, max_batch=max_batch)
    tmp.replace(path)  # atomic: a crashed export never leaves a half file under the real name
    log.info("exported %s", path)
    return path


def open_encoder(
    backend: str,
    model_dir: Path,
    cache_dir: Path,
    *,
    device: str = "cpu",
    dtype: str = "fp32",
    max_batch: int = 8,
) -> ClipEncoder:
    """A ready `ClipEncoder` of the named backend, building cached artifacts as needed."""
    if backend == "torch":
        model, _ = load_clip_encoder(model_dir, device=device)
        return create_backend("torch", model=model, device=device, dtype=dtype)
    onnx = ensure_onnx(model_dir, cache_dir, max_batch)
    if backend == "onnxruntime":
        return create_backend("onnxruntime", onnx_path=onnx)
    if backend == "tensorrt":
        from encoder_trt.trt_engine import build_engine

        precision = "fp16" if dtype == "fp32" else dtype
        engine = build_engine(onnx, cache_dir, precision=precision, max_batch=max_batch)
        kwargs: dict[str, Any] = {"onnx_path": onnx, "precision": precision}
        return create_backend("tensorrt", engine_path=engine, **kwargs)
    raise ValueError(f"unknown encoder backend {backend!r}")
