"""Role processes (`flashwatch run <role>`): probes, metrics, and a clean drain on SIGTERM."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from encoder_trt.testing import tiny_config, write_fake_checkpoint
from flashwatch.api.serving import SHUTDOWN_GRACE_S
from tests.services import free_port

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def start_role(role: str, env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "flashwatch.cli", "run", role],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def wait_ready(base: str, proc: subprocess.Popen[str], timeout: float = 60) -> httpx.Response:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
        try:
            resp = httpx.get(base + "/v1/ready", timeout=1)
            if resp.status_code == 200:
                return resp
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise AssertionError("role never became ready")


def test_encoder_role_serves_probes_and_drains_on_sigterm(
    tmp_path: Path, kafka_bootstrap: str
) -> None:
    ckpt = tmp_path / "model"
    write_fake_checkpoint(ckpt, tiny_config())
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("FW_")}
    env |= {
        "FW_DATA_DIR": str(tmp_path),
        "FW_API__PORT": str(port),
        "FW_API__METRICS_PUBLIC": "true",
        "FW_BUS__KIND": "kafka",
        "FW_KAFKA_BOOTSTRAP": kafka_bootstrap,
        "FW_ENCODER__MODEL_DIR": str(ckpt),
    }
    proc = start_role("encoder", env)
    base = f"http://127.0.0.1:{port}"
    try:
        ready = wait_ready(base, proc)
        assert ready.json()["checks"] == {"db": True, "memory": True}
        metrics = httpx.get(base + "/metrics", timeout=5).text
        assert "fw_encoder_clips_total" in metrics
        # The role serves no user API.
        assert httpx.get(base + "/v1/cameras", timeout=5).status_code == 404
        t0 = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=30)
        assert proc.returncode == 0, out
        assert time.monotonic() - t0 < 20
        assert "Traceback" not in out
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_role_with_nothing_to_run_exits_3(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FW_")}
    env |= {"FW_DATA_DIR": str(tmp_path), "FW_API__PORT": str(free_port())}
    proc = start_role("encoder", env)  # no model directory
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 3 and "no model directory" in out


def test_ingest_role_publishes_clips_of_api_registered_cameras_to_kafka(
    tmp_path: Path,
    kafka_bootstrap: str,
    rtsp_server,
    h264_clip: Path,  # type: ignore[no-untyped-def]
) -> None:
    from kafka import KafkaConsumer

    from flashwatch.messages import Clip, decode
    from tests.apiharness import make_api, settings_for

    server = rtsp_server({"/cam1": h264_clip})
    topic = f"fw.clips.{tmp_path.name[-12:]}"
    api = make_api(settings_for(tmp_path, None))  # the registry the ingest role reads
    cam = api.camera(url=server.url("/cam1"))
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("FW_")}
    env |= {
        "FW_DATA_DIR": str(tmp_path),
        "FW_API__PORT": str(port),
        "FW_BUS__KIND": "kafka",
        "FW_BUS__CLIPS_TOPIC": topic,
        "FW_KAFKA_BOOTSTRAP": kafka_bootstrap,
        "FW_INGEST__ALLOW_LOOPBACK": "true",
        "FW_INGEST__PYRAMID_LEVELS": "2",
    }
    proc = start_role("ingest", env)
    consumer = KafkaConsumer(
        topic,
        bootstrap_servers=kafka_bootstrap,
        group_id="probe",
        auto_offset_reset="earliest",
        session_timeout_ms=6000,
        heartbeat_interval_ms=1000,
        consumer_timeout_ms=1000,
    )
    try:
        wait_ready(f"http://127.0.0.1:{port}", proc)
        levels: dict[int, int] = {}
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not (levels.get(0, 0) >= 3 and levels.get(1)):
            for record in consumer:
                clip = decode(record.value, Clip)
                assert clip.camera_id == cam["id"] and record.key == str(cam["id"]).encode()
                levels[clip.level] = levels.get(clip.level, 0) + 1
        assert levels.get(0, 0) >= 3 and levels.get(1, 0) >= 1, levels
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=30)
        assert proc.returncode == 0, out[-3000:]
    finally:
        consumer.close()
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_api_role_exits_on_sigterm_with_an_alert_stream_open(tmp_path: Path) -> None:
    """An open alert stream never ends by itself; the API ends it when told to stop, so the
    process exits promptly and cleanly instead of waiting for the subscriber forever."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("FW_")}
    env |= {"FW_DATA_DIR": str(tmp_path), "FW_API__PORT": str(port), "FW_API__SSE_POLL_S": "0.2"}
    proc = start_role("api", env)
    base = f"http://127.0.0.1:{port}"
    ended = threading.Event()

    def subscribe(headers: dict[str, str]) -> None:
        with httpx.stream("GET", base + "/v1/alerts/stream", headers=headers, timeout=30) as r:
            assert r.status_code == 200
            subscribed.set()
            for _ in r.iter_lines():
                pass
        ended.set()

    subscribed = threading.Event()
    try:
        wait_ready(base, proc)
        token = (tmp_path / "admin.token").read_text().strip()
        reader = threading.Thread(
            target=subscribe, args=({"Authorization": f"Bearer {token}"},), daemon=True
        )
        reader.start()
        assert subscribed.wait(10), "the alert stream never answered"
        t0 = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=30)
        assert proc.returncode == 0, out
        assert time.monotonic() - t0 < SHUTDOWN_GRACE_S, out  # ended, not cancelled
        assert "Traceback" not in out
        assert ended.wait(5), "the subscriber's stream did not end"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_a_role_whose_port_is_taken_exits_3_and_says_so(tmp_path: Path) -> None:
    """Serving on a port another process holds fails the start: exit 3 and the reason, not
    a drain and exit 0 as if all went well."""
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        env = {k: v for k, v in os.environ.items() if not k.startswith("FW_")}
        env |= {"FW_DATA_DIR": str(tmp_path), "FW_API__PORT": str(port)}
        proc = start_role("api", env)
        out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 3, out
    assert "address already in use" in out
