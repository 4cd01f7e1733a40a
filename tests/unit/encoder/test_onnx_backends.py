"""ONNX export + onnxruntime backend parity against the PyTorch spec model, and the registry."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from encoder_trt.backends import (
    ClipEncoder,
    OnnxRuntimeBackend,
    TorchBackend,
    available_backends,
    create_backend,
)
from encoder_trt.modeling_umt import UMTClipEncoder
from encoder_trt.onnx_export import export_onnx, read_onnx_metadata
from encoder_trt.testing import randomize_, tiny_config

MAX_BATCH = 4


@pytest.fixture(scope="module")
def model() -> UMTClipEncoder:
    torch.manual_seed(0)
    return randomize_(UMTClipEncoder(tiny_config()), seed=7, std=0.1).eval()


@pytest.fixture(scope="module")
def onnx_path(model: UMTClipEncoder, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("onnx") / "umt_tiny.onnx"
    return export_onnx(model, path, image_size=96, opset=18, max_batch=MAX_BATCH)


def pixels(batch: int, seed: int) -> torch.Tensor:
    return torch.randn(batch, 4, 3, 96, 96, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("batch", [1, 3])
def test_onnxruntime_matches_torch(
    model: UMTClipEncoder, onnx_path: Path, batch: int, capsys: pytest.CaptureFixture[str]
) -> None:
    ort_backend = create_backend("onnxruntime", onnx_path=onnx_path, intra_op_threads=1)
    x = pixels(batch, seed=batch)
    with torch.no_grad():
        expected = model(x)
    got = ort_backend.encode(x)
    assert got.shape == expected.shape == (batch, 64, 64)
    diff = (got - expected).abs().max().item()
    cos = F.cosine_similarity(got, expected, dim=-1)  # (B, 64) token by token, same positions
    with capsys.disabled():
        print(
            f"\n[encoder] onnxruntime vs torch fp32, batch {batch}: max|diff| {diff:.2e}, "
            f"min token cosine {cos.min().item():.7f}"
        )
    assert diff < 1e-4
    assert cos.min() >= 0.9999  # also proves identical token order
    # the nearest torch token of every onnx token is the one at the same position
    sims = F.normalize(got, dim=-1) @ F.normalize(expected, dim=-1).transpose(1, 2)
    assert torch.equal(sims.argmax(-1), torch.arange(64).expand(batch, 64))


def test_onnx_metadata(onnx_path: Path) -> None:
    meta = read_onnx_metadata(onnx_path)
    assert meta["image_size"] == 96
    assert meta["schedule"] == [72, 8]
    assert meta["max_batch"] == MAX_BATCH


def test_onnx_graph_has_no_mean_scatter(onnx_path: Path) -> None:
    import onnx

    graph = onnx.load(str(onnx_path)).graph
    reductions = {
        attr.s.decode()
        for node in graph.node
        if node.op_type == "ScatterElements"
        for attr in node.attribute
        if attr.name == "reduction"
    }
    assert reductions == {"add"}
    assert graph.input[0].type.tensor_type.shape.dim[0].dim_param  # symbolic batch axis


def test_onnxruntime_splits_batches_over_max(model: UMTClipEncoder, onnx_path: Path) -> None:
    backend = OnnxRuntimeBackend(onnx_path, intra_op_threads=1)
    x = pixels(MAX_BATCH + 1, seed=11)
    with torch.no_grad():
        expected = model(x)
    torch.testing.assert_close(backend.encode(x), expected, rtol=1e-4, atol=1e-4)


def test_torch_backend_and_protocol(model: UMTClipEncoder) -> None:
    backend = create_backend("torch", model=model, dtype="fp32")
    assert isinstance(backend, ClipEncoder)
    x = pixels(2, seed=5)
    with torch.no_grad():
        expected = model(x)
    got = backend.encode(x)
    assert got.dtype == torch.float32 and got.device.type == "cpu"
    torch.testing.assert_close(got, expected, rtol=0, atol=0)


def test_torch_backend_bf16_runs() -> None:
    model = randomize_(UMTClipEncoder(tiny_config()), seed=8, std=0.1).eval()
    backend = TorchBackend(model, dtype="bf16")
    out = backend.encode(pixels(1, seed=2))
    assert out.shape == (1, 64, 64) and out.dtype == torch.float32
    assert np.isfinite(out.numpy()).all()


def test_backend_input_checked(model: UMTClipEncoder) -> None:
    backend = TorchBackend(model)
    with pytest.raises(
        ValueError, match=r"expected pixels \(B, 4, 3, 96, 96\), got \(1, 4, 3, 64, 64\)"
    ):
        backend.encode(torch.zeros(1, 4, 3, 64, 64))


def test_registry() -> None:
    assert available_backends() == ["onnxruntime", "tensorrt", "torch"]
    with pytest.raises(ValueError, match="unknown encoder backend 'tvm'"):
        create_backend("tvm")
    with pytest.raises(ValueError, match="unknown dtype"):
        TorchBackend(UMTClipEncoder(tiny_config()), dtype="fp8")


def test_export_rejects_wrong_image_size(model: UMTClipEncoder, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="image_size 224"):
        export_onnx(model, tmp_path / "x.onnx", image_size=224)


def test_legacy_exporter_also_matches(model: UMTClipEncoder, tmp_path: Path) -> None:
    path = export_onnx(model, tmp_path / "legacy.onnx", max_batch=2, dynamo=False)
    backend = OnnxRuntimeBackend(path, intra_op_threads=1)
    x = pixels(2, seed=21)
    with torch.no_grad():
        expected = model(x)
    torch.testing.assert_close(backend.encode(x), expected, rtol=1e-4, atol=1e-4)


def test_export_max_batch_one(model: UMTClipEncoder, tmp_path: Path) -> None:
    """max_batch=1 still exports a dynamic axis; the backend feeds larger batches clip by clip."""
    path = export_onnx(model, tmp_path / "b1.onnx", max_batch=1)
    backend = OnnxRuntimeBackend(path, intra_op_threads=1)
    assert backend.max_batch == 1
    x = pixels(2, seed=31)
    with torch.no_grad():
        expected = model(x)
    torch.testing.assert_close(backend.encode(x), expected, rtol=1e-4, atol=1e-4)


@pytest.mark.gpu
def test_torch_backend_cuda_fp32_matches_cpu() -> None:
    """On an H200, with cuDNN TF32 off (the default here) CUDA fp32 = CPU fp32 to ~5e-6."""
    cfg = tiny_config(image_size=224, embed_dim=128, num_heads=2)
    model = randomize_(UMTClipEncoder(cfg), seed=9, std=0.05).eval()
    x = torch.randn(3, 4, 3, 224, 224, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        expected = model(x)
    got = TorchBackend(model, device="cuda", dtype="fp32").encode(x)
    cos = F.cosine_similarity(got, expected, dim=-1)
    assert cos.min() >= 0.9999
