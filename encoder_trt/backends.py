"""Clip-encoder backends chosen by name: `torch`, `onnxruntime`, `tensorrt`.

Every backend implements `ClipEncoder.encode(pixels (B, T, 3, S, S) float32) -> (B, 64, C)`
float32 on the CPU, i.e. the pre-projector tokens memory stores. The PyTorch model
(`encoder_trt.modeling_umt.UMTClipEncoder`) is the specification; the other backends run graphs
exported from it and are held to it by parity tests.

`tensorrt` is registered lazily: `encoder_trt.trt_engine` (and TensorRT itself) is imported only
when that backend is created, so this module imports on machines without TensorRT.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch

from encoder_trt.modeling_umt import UMTClipEncoder, UMTConfig

DTYPES: dict[str, torch.dtype] = {
    "fp32": torch.float32,
    "fp16": torch.float16,
    "bf16": torch.bfloat16,
}


@runtime_checkable
class ClipEncoder(Protocol):
    """Batch of 4-frame clips -> 64 merged tokens per clip."""

    name: str
    config: UMTConfig

    def encode(self, pixels: torch.Tensor) -> torch.Tensor:
        """(B, T, 3, S, S) float32 normalised pixels -> (B, 64, C) float32 CPU tensor."""
        ...


BackendFactory = Callable[..., ClipEncoder]
_REGISTRY: dict[str, BackendFactory] = {}


def register_backend(name: str) -> Callable[[BackendFactory], BackendFactory]:
    def deco(factory: BackendFactory) -> BackendFactory:
        if name in _REGISTRY:
            raise ValueError(f"backend {name!r} registered twice")
        _REGISTRY[name] = factory
        return factory

    return deco


def available_backends() -> list[str]:
    """Registered names (a registered backend may still fail to start, e.g. without a GPU)."""
    return sorted(_REGISTRY)


def create_backend(name: str, **kwargs: Any) -> ClipEncoder:
    """Instantiate backend `name`; kwargs go to its constructor."""
    try:
        factory = _REGISTRY[name]
    except KeyError:
        raise ValueError(
            f"unknown encoder backend {name!r}; choose from {available_backends()}"
        ) from None
    return factory(**kwargs)


def check_pixels(pixels: torch.Tensor | np.ndarray, config: UMTConfig) -> None:
    """Fail fast, with the numbers, on input that does not fit the model."""
    s, t = config.image_size, config.num_frames
    shape = tuple(pixels.shape)
    if len(shape) != 5 or shape[1] not in (t, 1) or shape[2:] != (3, s, s):
        raise ValueError(f"expected pixels (B, {t}, 3, {s}, {s}), got {shape}")


def parse_dtype(dtype: str | torch.dtype) -> torch.dtype:
    if isinstance(dtype, torch.dtype):
        return dtype
    try:
        return DTYPES[dtype]
    except KeyError:
        raise ValueError(f"unknown dtype {dtype!r}; choose from {sorted(DTYPES)}") from None


@register_backend("torch")
class TorchBackend:
    """The PyTorch model on CPU or CUDA in fp32/fp16/bf16, optionally `torch.compile`d.

    Takes ownership of `model`: it is moved/cast in place (no second copy of a 290M model).

    `cuda_graphs` compiles with mode "reduce-overhead" (CUDA graphs per batch size) on CUDA.
    `allow_tf32` is off by default: cuDNN runs fp32 convolutions in TF32 unless told otherwise,
    and the patch-embedding error (~1e-3 on an H200) is enough to flip ToMe matches, so fp32 on
    CUDA would no longer be the spec.
    """

    name = "torch"

    def __init__(
        self,
        model: UMTClipEncoder,
        *,
        device: str | torch.device = "cpu",
        dtype: str | torch.dtype = "fp32",
        compile: bool = False,
        cuda_graphs: bool = False,
        allow_tf32: bool = False,
    ) -> None:
        self.allow_tf32 = allow_tf32
        self.device = torch.device(device)
        self.dtype = parse_dtype(dtype)
        self.config = model.config
        self.model = model.to(device=self.device, dtype=self.dtype).eval()
        self._forward: Callable[[torch.Tensor], torch.Tensor] = self.model
        if compile or cuda_graphs:
            mode = "reduce-overhead" if cuda_graphs and self.device.type == "cuda" else None
            self._forward = torch.compile(self.model, mode=mode, dynamic=False)

    def encode(self, pixels: torch.Tensor) -> torch.Tensor:
        check_pixels(pixels, self.config)
        cudnn = torch.backends.cudnn
        flags = cudnn.flags(
            enabled=cudnn.enabled,
            benchmark=cudnn.benchmark,
            deterministic=cudnn.deterministic,
            allow_tf32=self.allow_tf32,
        )
        with torch.inference_mode(), flags:
            x = pixels.to(device=self.device, dtype=self.dtype, non_blocking=True)
            tokens = self._forward(x)  # (B, 64, C)
            return tokens.float().cpu()


@register_backend("onnxruntime")
class OnnxRuntimeBackend:
    """Runs a file written by `encoder_trt.onnx_export.export_onnx` (whole UMT + ToMe graph).

    Batches larger than the exported maximum are split into chunks.
    """

    name = "onnxruntime"

    def __init__(
        self,
        onnx_path: str | Path,
        *,
        providers: list[str] | None = None,
        intra_op_threads: int | None = None,
    ) -> None:
        import onnxruntime as ort

        from encoder_trt.onnx_export import INPUT_NAME, read_onnx_metadata

        meta = read_onnx_metadata(onnx_path)
        if not meta:
            raise ValueError(f"{onnx_path} has no flashwatch.umt_config metadata; re-export it")
        fields = set(UMTConfig.__dataclass_fields__)
        self.config = UMTConfig(**{k: v for k, v in meta.items() if k in fields})
        self.max_batch = int(meta.get("max_batch", 1))
        options = ort.SessionOptions()
        if intra_op_threads is not None:
            options.intra_op_num_threads = intra_op_threads
        self.session = ort.InferenceSession(
            str(onnx_path), options, providers=providers or ["CPUExecutionProvider"]
        )
        self._input = INPUT_NAME

    def encode(self, pixels: torch.Tensor) -> torch.Tensor:
        check_pixels(pixels, self.config)
        if pixels.shape[1] != self.config.num_frames:
            raise ValueError("the exported graph serves video clips only, not single images")
        arr = pixels.detach().to("cpu", torch.float32).numpy()
        outs = [
            self.session.run(None, {self._input: arr[i : i + self.max_batch]})[0]
            for i in range(0, arr.shape[0], self.max_batch)
        ]  # each (b, 64, C)
        return torch.from_numpy(np.concatenate(outs, axis=0))  # (B, 64, C)


@register_backend("tensorrt")
def _tensorrt_backend(**kwargs: Any) -> ClipEncoder:
    from encoder_trt.trt_engine import TensorRTBackend

    return TensorRTBackend(**kwargs)
