"""`flashwatch engine export|build` and backend opening from a checkpoint directory."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from encoder_trt.artifacts import checkpoint_fingerprint, open_encoder
from encoder_trt.testing import tiny_config, write_fake_checkpoint

pytestmark = pytest.mark.slow


def run_cli(*args: str, data_dir: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FW_")}
    env["FW_DATA_DIR"] = str(data_dir)
    return subprocess.run(
        [sys.executable, "-m", "flashwatch.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def test_export_is_cached_and_onnxruntime_matches_torch(tmp_path: Path) -> None:
    ckpt = tmp_path / "model"
    write_fake_checkpoint(ckpt, tiny_config(), seed=5)
    first = run_cli(
        "engine", "export", "--model-dir", str(ckpt), "--max-batch", "4", data_dir=tmp_path
    )
    assert first.returncode == 0, first.stderr
    onnx = Path(first.stdout.strip())
    assert onnx.is_file() and onnx.parent == tmp_path / "engines" and "-b4.onnx" in onnx.name
    mtime = onnx.stat().st_mtime_ns
    t0 = time.monotonic()
    again = run_cli(
        "engine", "export", "--model-dir", str(ckpt), "--max-batch", "4", data_dir=tmp_path
    )
    assert again.returncode == 0 and Path(again.stdout.strip()) == onnx
    assert onnx.stat().st_mtime_ns == mtime and time.monotonic() - t0 < 30

    torch_enc = open_encoder("torch", ckpt, tmp_path / "engines", max_batch=4)
    ort_enc = open_encoder("onnxruntime", ckpt, tmp_path / "engines", max_batch=4)
    pixels = torch.randn(3, 4, 3, 96, 96, generator=torch.Generator().manual_seed(1))
    diff = (torch_enc.encode(pixels) - ort_enc.encode(pixels)).abs().max().item()
    assert diff < 1e-4, diff


def test_changed_weights_change_the_fingerprint(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    write_fake_checkpoint(a, tiny_config(), seed=1)
    write_fake_checkpoint(b, tiny_config(), seed=2)  # same shapes, other weights
    assert checkpoint_fingerprint(a) != checkpoint_fingerprint(b)
    assert checkpoint_fingerprint(a) == checkpoint_fingerprint(a)


def test_build_without_tensorrt_fails_clearly(tmp_path: Path) -> None:
    pytest.importorskip("onnxruntime")
    if __import__("importlib").util.find_spec("tensorrt") is not None:
        pytest.skip("TensorRT is installed here: the real build is covered by the gpu tests")
    ckpt = tmp_path / "model"
    write_fake_checkpoint(ckpt, tiny_config())
    res = run_cli("engine", "build", "--model-dir", str(ckpt), data_dir=tmp_path)
    assert res.returncode == 1 and "TensorRT" in res.stderr
    missing = run_cli("engine", "export", data_dir=tmp_path)
    assert missing.returncode == 2 and "no model directory" in missing.stderr
