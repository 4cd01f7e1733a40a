"""Test helpers: synthetic clips and throw-away redis-server processes.

Used by the memory tests and benchmark, and by other components' tests that need a realistic
`ClipTokens` or a private Redis (the fault scenarios kill -9 and fill their own server, never
the shared one).
"""

from __future__ import annotations

import random
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt

from flashwatch.messages import ClipTokens
from memory.codec import StoredDtype, encode_tokens

__all__ = ["RedisCluster3", "RedisServer", "free_port", "make_clip", "postln_features"]


def postln_features(
    rng: np.random.Generator,
    tokens: int = 64,
    channels: int = 1024,
    outlier_channels: int = 4,
    outlier_scale: float = 8.0,
) -> npt.NDArray[np.float32]:
    """Features shaped like post-LayerNorm ViT outputs: per token mean 0 and RMS 1.

    A few fixed channels carry a large offset of `outlier_scale` (random sign) on every token,
    the "massive activation" dimensions ViTs are known for, on top of unit noise.
    """
    x = rng.standard_normal((tokens, channels)).astype(np.float32)  # (N, C)
    if outlier_channels:
        idx = rng.choice(channels, size=outlier_channels, replace=False)
        signs = rng.choice(np.array([-1.0, 1.0], dtype=np.float32), size=outlier_channels)
        x[:, idx] += signs * outlier_scale
    x -= x.mean(axis=1, keepdims=True)
    x /= np.sqrt((x * x).mean(axis=1, keepdims=True))
    return x


def make_clip(
    camera_id: int,
    level: int,
    t0: float,
    *,
    dtype: StoredDtype = "int8",
    tokens: int = 64,
    channels: int = 1024,
    stride_s: float = 1.0,
    epoch: int = 0,
    thumb: bytes | None = None,
    seed: int | None = None,
) -> ClipTokens:
    """A clip of random post-LN-like features; frames `stride_s` apart from `t0`."""
    rng = np.random.default_rng(seed)
    x = postln_features(rng, tokens, channels, outlier_channels=min(4, channels // 4))
    t = tuple(t0 + i * stride_s for i in range(4))
    return encode_tokens(x, dtype, camera_id=camera_id, level=level, epoch=epoch, t=t, thumb=thumb)


def _bindable(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def free_port() -> int:
    """A free port p with p + 10000 free too (a cluster node's bus port) and both < 65536."""
    rng = random.Random()
    for _ in range(200):
        port = rng.randrange(20000, 45000)
        if _bindable(port) and _bindable(port + 10000):
            return port
    raise RuntimeError("no free port pair found")


def _wait_ping(port: int, timeout_s: float, proc: subprocess.Popen[bytes] | None = None) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"redis-server on port {port} exited with {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2) as s:
                s.sendall(b"PING\r\n")
                if s.recv(64).startswith(b"+PONG"):
                    return
        except OSError:
            pass
        time.sleep(0.02)
    raise TimeoutError(f"redis-server on port {port} did not answer within {timeout_s} s")


class RedisServer:
    """A private redis-server on a free port, in its own directory (AOF lives there)."""

    def __init__(self, *args: str, port: int | None = None) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise FileNotFoundError("redis-server is not installed")
        self.binary = binary
        self.port = port or free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="fw-redis-"))
        self.args = ["--save", "", "--appendonly", "no", *args]
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout_s: float = 10.0) -> RedisServer:
        cmd = [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.dir)]
        log = (self.dir / "redis.log").open("ab")
        self.proc = subprocess.Popen([*cmd, *self.args], stdout=log, stderr=log, cwd=self.dir)
        _wait_ping(self.port, timeout_s, self.proc)
        return self

    def kill9(self) -> None:
        """SIGKILL: no shutdown save, no AOF rewrite; what survives is what was fsynced."""
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(timeout=10)
            self.proc = None

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
            self.proc = None

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


class RedisCluster3:
    """Three cluster-enabled masters (no replicas) joined with `redis-cli --cluster create`."""

    def __init__(self) -> None:
        self.nodes = [
            RedisServer("--cluster-enabled", "yes", "--cluster-node-timeout", "2000")
            for _ in range(3)
        ]

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.nodes[0].port}/0?cluster=1"

    def start(self, timeout_s: float = 15.0) -> RedisCluster3:
        deadline = time.monotonic() + timeout_s
        for node in self.nodes:
            node.start()
        addrs: Sequence[str] = [f"127.0.0.1:{n.port}" for n in self.nodes]
        subprocess.run(
            ["redis-cli", "--cluster", "create", *addrs, "--cluster-yes"],
            check=True,
            capture_output=True,
            timeout=timeout_s,
        )
        while time.monotonic() < deadline:
            states = [self._state(n.port) for n in self.nodes]
            if all(s == "ok" for s in states):
                return self
            time.sleep(0.1)
        raise TimeoutError(f"cluster not ok within {timeout_s} s: {states}")

    @staticmethod
    def _state(port: int) -> str:
        out = subprocess.run(
            ["redis-cli", "-p", str(port), "cluster", "info"],
            capture_output=True,
            text=True,
            timeout=5,
        ).stdout
        for line in out.splitlines():
            if line.startswith("cluster_state:"):
                return line.split(":", 1)[1].strip()
        return "unknown"

    def cleanup(self) -> None:
        for node in self.nodes:
            node.cleanup()
