"""TensorRT engine: cache key and profile logic with a mocked `tensorrt`; real build if present."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

from encoder_trt.modeling_umt import UMTClipEncoder, UMTConfig
from encoder_trt.onnx_export import export_onnx
from encoder_trt.testing import randomize_, tiny_config
from encoder_trt.trt_engine import (
    EngineMismatchError,
    build_engine,
    check_engine,
    engine_identity,
    profile_shapes,
)


class FakeTensorRT:
    """Just enough of the TensorRT 10 builder API to record what `build_engine` asks for."""

    __version__ = "10.99.0"

    def __init__(self) -> None:
        self.builds = 0
        self.flags: list[str] = []
        self.profiles: list[tuple[str, tuple[int, ...], tuple[int, ...], tuple[int, ...]]] = []
        self.parsed: list[str] = []
        self.network_flags: list[int] = []
        fake = self

        class Logger:
            WARNING = 2

            def __init__(self, level: int) -> None:
                self.level = level

        class Profile:
            def set_shape(self, name: str, lo: Any, opt: Any, hi: Any) -> None:
                fake.profiles.append((name, tuple(lo), tuple(opt), tuple(hi)))

        class Config:
            def set_memory_pool_limit(self, pool: str, size: int) -> None:
                assert pool == "workspace" and size > 0

            def set_flag(self, flag: str) -> None:
                fake.flags.append(flag)

            def add_optimization_profile(self, profile: Profile) -> int:
                return 0

        class Builder:
            def __init__(self, logger: Logger) -> None:
                fake.builds += 1

            def create_network(self, flags: int) -> object:
                fake.network_flags.append(flags)
                return object()

            def create_builder_config(self) -> Config:
                return Config()

            def create_optimization_profile(self) -> Profile:
                return Profile()

            def build_serialized_network(self, network: object, config: Config) -> bytes:
                return b"fake-engine"

        class OnnxParser:
            num_errors = 0

            def __init__(self, network: object, logger: Logger) -> None:
                pass

            def parse_from_file(self, path: str) -> bool:
                fake.parsed.append(path)
                return True

        self.Logger = Logger
        self.Builder = Builder
        self.OnnxParser = OnnxParser
        self.NetworkDefinitionCreationFlag = type("F", (), {"EXPLICIT_BATCH": 0})
        self.MemoryPoolType = type("M", (), {"WORKSPACE": "workspace"})
        self.BuilderFlag = type("B", (), {"FP16": "FP16", "BF16": "BF16"})


@pytest.fixture(scope="module")
def onnx_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    model = randomize_(UMTClipEncoder(tiny_config()), seed=1, std=0.1).eval()
    path = tmp_path_factory.mktemp("trt") / "tiny.onnx"
    return export_onnx(model, path, max_batch=8, dynamo=False)  # fast; content is irrelevant


def changed_copy(onnx_file: Path, tmp_path: Path) -> Path:
    """Same config metadata, different bytes (as after re-exporting other weights)."""
    import onnx

    proto = onnx.load(str(onnx_file))
    proto.doc_string = "re-exported"
    out = tmp_path / "changed.onnx"
    onnx.save(proto, str(out))
    return out


def test_profile_shapes() -> None:
    assert profile_shapes(UMTConfig(), 8) == (
        (1, 4, 3, 224, 224),
        (8, 4, 3, 224, 224),
        (8, 4, 3, 224, 224),
    )
    assert profile_shapes(UMTConfig(image_size=448), 16, opt_batch=4)[1] == (4, 4, 3, 448, 448)
    with pytest.raises(ValueError, match=r"opt_batch 9 outside 1\.\.8"):
        profile_shapes(UMTConfig(), 8, opt_batch=9)


def test_build_mocked_profile_flags_and_cache(onnx_file: Path, tmp_path: Path) -> None:
    trt = FakeTensorRT()
    path = build_engine(onnx_file, tmp_path, precision="fp16", max_batch=4, trt=trt, gpu="FakeGPU")
    assert path.read_bytes() == b"fake-engine"
    assert trt.profiles == [("pixels", (1, 4, 3, 96, 96), (4, 4, 3, 96, 96), (4, 4, 3, 96, 96))]
    assert trt.flags == ["FP16"]
    assert trt.parsed == [str(onnx_file)]
    assert trt.network_flags == [1]  # explicit batch
    sidecar = json.loads(path.with_suffix(".json").read_text())
    assert sidecar["gpu"] == "FakeGPU" and sidecar["trt_version"] == "10.99.0"
    # second call: cache hit, no new builder
    again = build_engine(onnx_file, tmp_path, precision="fp16", max_batch=4, trt=trt, gpu="FakeGPU")
    assert again == path and trt.builds == 1
    # bf16 is another engine
    bf16 = build_engine(onnx_file, tmp_path, precision="bf16", max_batch=4, trt=trt, gpu="FakeGPU")
    assert bf16 != path and trt.flags[-1] == "BF16" and trt.builds == 2


def test_cache_key_mocked_sensitivity(onnx_file: Path, tmp_path: Path) -> None:
    def key(**kw: Any) -> str:
        args: dict[str, Any] = {"trt_version": "10.1", "gpu": "H100"} | kw
        precision = args.pop("precision", "fp16")
        max_batch = args.pop("max_batch", 8)
        onnx = args.pop("onnx", onnx_file)
        return engine_identity(onnx, precision, max_batch, **args).key()

    base = key()
    assert key() == base  # deterministic
    assert key(trt_version="10.2") != base
    assert key(gpu="A100") != base
    assert key(precision="bf16") != base
    assert key(max_batch=4) != base
    assert key(onnx=changed_copy(onnx_file, tmp_path)) != base
    with pytest.raises(ValueError, match="max_batch 9 > the ONNX export's max_batch 8"):
        key(max_batch=9)


def test_stale_engine_mocked_named(onnx_file: Path, tmp_path: Path) -> None:
    trt = FakeTensorRT()
    path = build_engine(onnx_file, tmp_path, precision="fp16", max_batch=2, trt=trt, gpu="H100")
    check_engine(path, trt_version="10.99.0", gpu="H100", onnx_path=onnx_file, precision="fp16")
    with pytest.raises(EngineMismatchError, match=r"gpu: engine built for 'H100', now 'L4'"):
        check_engine(path, trt_version="10.99.0", gpu="L4")
    with pytest.raises(EngineMismatchError, match=r"trt_version: engine built for '10.99.0'"):
        check_engine(path, trt_version="10.3.0", gpu="H100")
    other = changed_copy(onnx_file, tmp_path)
    with pytest.raises(EngineMismatchError, match="onnx_sha256"):
        check_engine(path, trt_version="10.99.0", gpu="H100", onnx_path=other)
    path.with_suffix(".json").unlink()
    with pytest.raises(EngineMismatchError, match="missing"):
        check_engine(path, trt_version="10.99.0", gpu="H100")


def test_tensorrt_backend_without_tensorrt_is_clear() -> None:
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        from encoder_trt.backends import create_backend

        with pytest.raises(RuntimeError, match="needs TensorRT 10"):
            create_backend("tensorrt", engine_path="missing.engine")
    else:
        pytest.skip("tensorrt is installed")


@pytest.mark.gpu
def test_real_tensorrt_matches_torch(tmp_path: Path) -> None:
    pytest.importorskip("tensorrt")
    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    from encoder_trt.trt_engine import TensorRTBackend

    model = randomize_(UMTClipEncoder(tiny_config()), seed=2, std=0.1).eval()
    onnx = export_onnx(model, tmp_path / "m.onnx", max_batch=4)
    engine = build_engine(onnx, tmp_path / "cache", precision="fp32", max_batch=4)
    backend = TensorRTBackend(engine, onnx_path=onnx)
    x = torch.randn(3, 4, 3, 96, 96)
    with torch.no_grad():
        expected = model(x)
    got = backend.encode(x)
    cos = torch.nn.functional.cosine_similarity(got, expected, dim=-1)
    assert cos.min() >= 0.9999
