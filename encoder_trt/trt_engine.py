"""TensorRT 10 engine for the clip encoder: build from our ONNX export, cache, and run.

Written against the documented TensorRT 10 Python API (`trt.Builder`, `trt.OnnxParser`,
`IBuilderConfig`, optimisation profiles, `IExecutionContext.set_tensor_address` +
`execute_async_v3`). TensorRT is imported lazily, so this module imports (and its cache-key and
profile logic is testable) on machines without it; TensorRT itself cannot be installed on our CPU
machines (environment notes §7), so the build/run path is exercised only where it exists.

Engines are cached under a name keyed by sha256 of (model config + ONNX bytes + TensorRT version
+ GPU name + precision + batch profile). A JSON sidecar records those fields; loading an engine
compares them with the running machine and refuses a stale or foreign engine with a message naming
each mismatch, instead of failing later with wrong tokens or a deserialisation crash.

Device buffers and the stream use pycuda (the product owner's choice) through the primary
context, so they coexist with PyTorch in one process; without pycuda, torch CUDA tensors are used.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from encoder_trt.modeling_umt import UMTConfig
from encoder_trt.onnx_export import INPUT_NAME, OUTPUT_NAME, read_onnx_metadata

PRECISIONS = ("fp32", "fp16", "bf16")
KEY_FIELDS = ("config", "onnx_sha256", "trt_version", "gpu", "precision", "profile")


class EngineMismatchError(RuntimeError):
    """The cached engine was built for another model, GPU, TensorRT version or precision."""


def import_tensorrt() -> Any:
    try:
        import tensorrt as trt
    except ImportError as exc:
        raise RuntimeError(
            "the tensorrt backend needs TensorRT 10 (pip extra [trt]); use 'torch' or "
            "'onnxruntime' on this machine"
        ) from exc
    return trt


def onnx_sha256(onnx_path: str | Path) -> str:
    """sha256 of the ONNX file plus its external-data file when the exporter wrote one."""
    path = Path(onnx_path)
    digest = hashlib.sha256()
    for part in (path, path.with_name(path.name + ".data")):
        if part.is_file():
            with part.open("rb") as f:
                for chunk in iter(lambda: f.read(1 << 20), b""):
                    digest.update(chunk)
    return digest.hexdigest()


def current_gpu_name(device: int = 0) -> str:
    if not torch.cuda.is_available():
        raise RuntimeError("the tensorrt backend needs a CUDA GPU")
    return torch.cuda.get_device_name(device)


def profile_shapes(
    config: UMTConfig, max_batch: int, opt_batch: int | None = None
) -> tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]:
    """(min, opt, max) input shapes of the one optimisation profile: batch 1..max_batch."""
    if max_batch < 1:
        raise ValueError(f"max_batch must be >= 1, got {max_batch}")
    opt = max_batch if opt_batch is None else opt_batch
    if not 1 <= opt <= max_batch:
        raise ValueError(f"opt_batch {opt} outside 1..{max_batch}")
    per_clip = (config.num_frames, config.in_chans, config.image_size, config.image_size)
    return (1, *per_clip), (opt, *per_clip), (max_batch, *per_clip)


@dataclass(frozen=True)
class EngineIdentity:
    """Everything an engine depends on; its sha256 names the cache file."""

    config: dict[str, Any]
    onnx_sha256: str
    trt_version: str
    gpu: str
    precision: str
    profile: list[list[int]]

    def as_dict(self) -> dict[str, Any]:
        return {f: getattr(self, f) for f in KEY_FIELDS}

    def key(self) -> str:
        blob = json.dumps(self.as_dict(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(blob.encode()).hexdigest()

    def mismatches(self, recorded: dict[str, Any]) -> list[str]:
        """Human-readable differences between this identity and a recorded one."""
        out = []
        for field in KEY_FIELDS:
            want, have = getattr(self, field), recorded.get(field)
            if want != have:
                out.append(f"{field}: engine built for {have!r}, now {want!r}")
        return out


def engine_identity(
    onnx_path: str | Path,
    precision: str,
    max_batch: int,
    *,
    trt_version: str,
    gpu: str,
    opt_batch: int | None = None,
) -> EngineIdentity:
    if precision not in PRECISIONS:
        raise ValueError(f"precision {precision!r} not in {PRECISIONS}")
    meta = read_onnx_metadata(onnx_path)
    if not meta:
        raise ValueError(f"{onnx_path} has no flashwatch.umt_config metadata; re-export it")
    if max_batch > int(meta.get("max_batch", max_batch)):
        raise ValueError(f"max_batch {max_batch} > the ONNX export's max_batch {meta['max_batch']}")
    config = config_from_metadata(meta)
    shapes = profile_shapes(config, max_batch, opt_batch)
    return EngineIdentity(
        config=meta,
        onnx_sha256=onnx_sha256(onnx_path),
        trt_version=trt_version,
        gpu=gpu,
        precision=precision,
        profile=[list(s) for s in shapes],
    )


def config_from_metadata(meta: dict[str, Any]) -> UMTConfig:
    fields = set(UMTConfig.__dataclass_fields__)
    return UMTConfig(**{k: v for k, v in meta.items() if k in fields})


def engine_paths(cache_dir: str | Path, identity: EngineIdentity) -> tuple[Path, Path]:
    size = identity.config.get("image_size", "x")
    stem = f"umt{size}_{identity.precision}_b{identity.profile[2][0]}_{identity.key()[:16]}"
    base = Path(cache_dir) / stem
    return base.with_suffix(".engine"), base.with_suffix(".json")


def build_engine(
    onnx_path: str | Path,
    cache_dir: str | Path,
    *,
    precision: str = "fp16",
    max_batch: int = 8,
    opt_batch: int | None = None,
    workspace_gib: float = 8.0,
    trt: Any | None = None,
    gpu: str | None = None,
) -> Path:
    """Build (or reuse from the cache) a serialized engine for `onnx_path`; returns its path.

    `trt` and `gpu` are injectable for tests; by default TensorRT is imported and the GPU
    queried.
    """
    trt = trt if trt is not None else import_tensorrt()
    identity = engine_identity(
        onnx_path,
        precision,
        max_batch,
        trt_version=str(trt.__version__),
        gpu=gpu if gpu is not None else current_gpu_name(),
        opt_batch=opt_batch,
    )
    engine_path, meta_path = engine_paths(cache_dir, identity)
    cached = engine_path.is_file() and meta_path.is_file()
    if cached and not identity.mismatches(json.loads(meta_path.read_text())):
        return engine_path

    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    # TensorRT 10 networks are always explicit-batch; the flag exists (deprecated) on older 10.x.
    flag = getattr(trt.NetworkDefinitionCreationFlag, "EXPLICIT_BATCH", None)
    network = builder.create_network(0 if flag is None else 1 << int(flag))
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise RuntimeError(f"TensorRT could not parse {onnx_path}: {errors}")

    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_gib * (1 << 30)))
    if precision == "fp16":
        config.set_flag(trt.BuilderFlag.FP16)
    elif precision == "bf16":
        config.set_flag(trt.BuilderFlag.BF16)
    profile = builder.create_optimization_profile()
    lo, opt, hi = (tuple(s) for s in identity.profile)
    profile.set_shape(INPUT_NAME, lo, opt, hi)
    config.add_optimization_profile(profile)

    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise RuntimeError(f"TensorRT failed to build an engine from {onnx_path}")
    engine_path.parent.mkdir(parents=True, exist_ok=True)
    _atomic_write(engine_path, bytes(serialized))
    _atomic_write(meta_path, json.dumps(identity.as_dict(), indent=2, sort_keys=True).encode())
    return engine_path


def _atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    tmp.write_bytes(data)
    tmp.replace(path)


def check_engine(
    engine_path: str | Path,
    *,
    trt_version: str,
    gpu: str,
    onnx_path: str | Path | None = None,
    precision: str | None = None,
) -> dict[str, Any]:
    """Fail fast if the engine's sidecar does not match this machine (and ONNX, if given)."""
    meta_path = Path(engine_path).with_suffix(".json")
    if not meta_path.is_file():
        raise EngineMismatchError(f"{meta_path} missing: rebuild with `flashwatch engine build`")
    recorded: dict[str, Any] = json.loads(meta_path.read_text())
    problems = []
    if recorded.get("trt_version") != trt_version:
        problems.append(
            f"trt_version: engine built for {recorded.get('trt_version')!r}, now {trt_version!r}"
        )
    if recorded.get("gpu") != gpu:
        problems.append(f"gpu: engine built for {recorded.get('gpu')!r}, now {gpu!r}")
    if precision is not None and recorded.get("precision") != precision:
        problems.append(f"precision: engine is {recorded.get('precision')!r}, asked {precision!r}")
    if onnx_path is not None:
        want = onnx_sha256(onnx_path)
        if recorded.get("onnx_sha256") != want:
            problems.append(
                f"onnx_sha256: engine built from {recorded.get('onnx_sha256')!r}, now {want!r}"
            )
    if problems:
        raise EngineMismatchError(f"stale TensorRT engine {engine_path}: " + "; ".join(problems))
    return recorded


class _PycudaBuffers:
    """Pinned host + device buffers and a stream on the primary CUDA context (shared with torch)."""

    def __init__(self, in_shape: tuple[int, ...], out_shape: tuple[int, ...], device: int) -> None:
        import pycuda.driver as cuda

        cuda.init()
        self._cuda = cuda
        self._ctx = cuda.Device(device).retain_primary_context()
        self._ctx.push()
        try:
            self.stream = cuda.Stream()
            self.host_in = cuda.pagelocked_empty(in_shape, np.float32)
            self.host_out = cuda.pagelocked_empty(out_shape, np.float32)
            self.dev_in = cuda.mem_alloc(self.host_in.nbytes)
            self.dev_out = cuda.mem_alloc(self.host_out.nbytes)
        finally:
            self._ctx.pop()

    @property
    def stream_handle(self) -> int:
        return int(self.stream.handle)

    @property
    def pointers(self) -> tuple[int, int]:
        return int(self.dev_in), int(self.dev_out)

    def run(self, batch: np.ndarray, execute: Callable[[int], bool]) -> np.ndarray:
        """Copy in, `execute(stream_handle)`, copy out; the context is pushed only meanwhile."""
        self._ctx.push()
        try:
            self.host_in[: batch.shape[0]] = batch
            self._cuda.memcpy_htod_async(self.dev_in, self.host_in, self.stream)
            if not execute(self.stream_handle):
                raise RuntimeError("TensorRT execute_async_v3 failed")
            self._cuda.memcpy_dtoh_async(self.host_out, self.dev_out, self.stream)
            self.stream.synchronize()
        finally:
            self._ctx.pop()
        return np.array(self.host_out[: batch.shape[0]])


class _TorchCudaBuffers:
    """Fallback when pycuda is not installed: torch CUDA tensors and the current torch stream."""

    def __init__(self, in_shape: tuple[int, ...], out_shape: tuple[int, ...], device: int) -> None:
        self.device = torch.device("cuda", device)
        self.dev_in = torch.empty(in_shape, dtype=torch.float32, device=self.device)
        self.dev_out = torch.empty(out_shape, dtype=torch.float32, device=self.device)
        self.stream = torch.cuda.Stream(self.device)

    @property
    def stream_handle(self) -> int:
        return int(self.stream.cuda_stream)

    @property
    def pointers(self) -> tuple[int, int]:
        return self.dev_in.data_ptr(), self.dev_out.data_ptr()

    def run(self, batch: np.ndarray, execute: Callable[[int], bool]) -> np.ndarray:
        with torch.cuda.stream(self.stream):
            self.dev_in[: batch.shape[0]].copy_(torch.from_numpy(batch))
            if not execute(self.stream_handle):
                raise RuntimeError("TensorRT execute_async_v3 failed")
        self.stream.synchronize()
        return self.dev_out[: batch.shape[0]].cpu().numpy()


class TensorRTBackend:
    """`ClipEncoder` over a cached engine from `build_engine`; batches over max are chunked."""

    name = "tensorrt"

    def __init__(
        self,
        engine_path: str | Path,
        *,
        onnx_path: str | Path | None = None,
        precision: str | None = None,
        device: int = 0,
        use_pycuda: bool | None = None,
    ) -> None:
        trt = import_tensorrt()
        recorded = check_engine(
            engine_path,
            trt_version=str(trt.__version__),
            gpu=current_gpu_name(device),
            onnx_path=onnx_path,
            precision=precision,
        )
        self.config = config_from_metadata(recorded["config"])
        self.max_batch = int(recorded["profile"][2][0])
        self._logger = trt.Logger(trt.Logger.WARNING)
        self._runtime = trt.Runtime(self._logger)
        self.engine = self._runtime.deserialize_cuda_engine(Path(engine_path).read_bytes())
        if self.engine is None:
            raise EngineMismatchError(f"TensorRT could not deserialize {engine_path}")
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        if sorted(names) != sorted([INPUT_NAME, OUTPUT_NAME]):
            raise EngineMismatchError(f"engine I/O tensors {names}, expected pixels/tokens")
        self.context = self.engine.create_execution_context()
        in_shape = tuple(recorded["profile"][2])  # (Bmax, T, 3, S, S)
        out_shape = (self.max_batch, self.config.tome_target, self.config.embed_dim)
        if use_pycuda is None:
            try:
                import pycuda.driver  # noqa: F401

                use_pycuda = True
            except ImportError:
                use_pycuda = False
        buffers = _PycudaBuffers if use_pycuda else _TorchCudaBuffers
        self.buffers: _PycudaBuffers | _TorchCudaBuffers = buffers(in_shape, out_shape, device)
        dev_in, dev_out = self.buffers.pointers
        self.context.set_tensor_address(INPUT_NAME, dev_in)
        self.context.set_tensor_address(OUTPUT_NAME, dev_out)

    def encode(self, pixels: torch.Tensor) -> torch.Tensor:
        from encoder_trt.backends import check_pixels

        check_pixels(pixels, self.config)
        arr = np.ascontiguousarray(pixels.detach().to("cpu", torch.float32).numpy())
        outs = [self._run(arr[i : i + self.max_batch]) for i in range(0, len(arr), self.max_batch)]
        return torch.from_numpy(np.concatenate(outs, axis=0))  # (B, 64, C)

    def _run(self, batch: np.ndarray) -> np.ndarray:
        """One chunk of at most max_batch clips: (b, T, 3, S, S) -> (b, 64, C)."""
        self.context.set_input_shape(INPUT_NAME, tuple(batch.shape))
        return self.buffers.run(batch, self.context.execute_async_v3)
