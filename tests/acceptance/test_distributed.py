"""Distributed mode on one machine (issue 9): every role its own process on a real
Kafka-API broker (tansu), Redis and PostgreSQL, two live synthetic RTSP cameras, alerts
delivered to an HMAC-verifying webhook receiver.

Mid-run one encoder and one ingest replica are killed with SIGKILL (the ingest replica is
restarted, as an orchestrator would). Checked afterwards, against everything ingest
published to the clip topic: lost = 0 (every published clip id is in memory) and
duplicated = 0 (one memory entry per id); alerts keep arriving after the kills; every
process drains and exits 0 on SIGTERM.

The model is a random checkpoint, so the rule fires on every window (threshold 0): this
tests the plumbing and the delivery guarantees, not the answers.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from kafka import KafkaConsumer

from flashwatch.messages import Clip, decode
from flashwatch.security import verify_webhook_signature
from memory.redis_store import RedisStore
from memory.testing import RedisServer
from tests.apiharness import fresh_db
from tests.checkpoints import write_full_random_checkpoint
from tests.services import free_port

pytestmark = [
    pytest.mark.acceptance,
    pytest.mark.slow,
    pytest.mark.integration,
    # Its own pytest process (scripts/test.sh): nine role processes on a 2-core machine.
    # It used to time out waiting for the first alerts in most runs: a camera's clips start
    # on its own 4-frame grid, and with a phase of ~0.8-3.2 s against the rules' step grid
    # every window was measured as < 90 % covered and skipped (fixed in alerts/evaluate.py,
    # regression test tests/integration/alerts/test_scheduler.py).
    pytest.mark.isolated,
]
SECRET = "whsec-distributed-test-0123456789"
ADMIN = "fw_distributed_admin_token_0123456789abcdef"


class Receiver:
    """A webhook endpoint that verifies every signature and records each delivery."""

    def __init__(self) -> None:
        self.events: list[tuple[float, dict[str, Any]]] = []
        self.bad_signatures = 0
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                ok = verify_webhook_signature(
                    SECRET.encode(),
                    int(self.headers["X-FlashWatch-Timestamp"]),
                    body,
                    self.headers["X-FlashWatch-Signature"],
                )
                if ok:
                    outer.events.append((time.time(), json.loads(body)))
                else:
                    outer.bad_signatures += 1
                self.send_response(200 if ok else 401)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


class Role:
    def __init__(self, name: str, role: str, env: dict[str, str], log_dir: Path) -> None:
        self.name, self.port = name, int(env["FW_API__PORT"])
        self.log = (log_dir / f"{name}.log").open("w")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "flashwatch.cli", "run", role],
            env=env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )

    def wait_ready(self, timeout: float = 90) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, f"{self.name} exited {self.proc.returncode}"
            try:
                if (
                    httpx.get(f"http://127.0.0.1:{self.port}/v1/ready", timeout=1).status_code
                    == 200
                ):
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.3)
        raise AssertionError(f"{self.name} never became ready")

    def term(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(45)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                return -9
        return self.proc.returncode


@pytest.fixture
def private_redis() -> Iterator[RedisServer]:
    server = RedisServer("--appendonly", "yes", "--maxmemory-policy", "noeviction").start()
    yield server
    server.stop()


def wait_for(predicate: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.mark.timeout(600)
def test_distributed_roles_survive_kills_and_drain(
    tmp_path: Path,
    kafka_bootstrap: str,
    pg_server_url: str,
    private_redis: RedisServer,
    rtsp_server,  # type: ignore[no-untyped-def]
) -> None:
    cams = rtsp_server({"/cam1": "test", "/cam2": "test"})
    ckpt = write_full_random_checkpoint(tmp_path / "model")
    receiver = Receiver()
    topic = f"fw.clips.dist{os.getpid()}"
    with fresh_db("postgres", tmp_path, pg_server_url) as db_url:
        assert db_url is not None
        base_env = {k: v for k, v in os.environ.items() if not k.startswith("FW_")}
        reasoner_port = free_port()
        base_env |= {
            "FW_DATA_DIR": str(tmp_path / "data"),
            "FW_DB_URL": db_url,
            "FW_REDIS_URL": private_redis.url,
            "FW_BUS__KIND": "kafka",
            "FW_BUS__CLIPS_TOPIC": topic,
            "FW_BUS__CLIPS_PARTITIONS": "4",
            "FW_KAFKA_BOOTSTRAP": kafka_bootstrap,
            "FW_ENCODER__MODEL_DIR": str(ckpt),
            "FW_INGEST__ALLOW_LOOPBACK": "true",
            "FW_INGEST__PYRAMID_LEVELS": "1",
            "FW_REASONER__URL": f"http://127.0.0.1:{reasoner_port}",
            "FW_REASONER__SERVICE_TOKEN": "reasoner-internal-token-0123",
            "FW_ALERTS__WEBHOOK_ENABLED": "true",
            "FW_ALERTS__WEBHOOK_SECRET": SECRET,
            "FW_ALERTS__WEBHOOK_ALLOW_HTTP": "true",
            "FW_ALERTS__WEBHOOK_ALLOW_PRIVATE": "true",
            "FW_API__BOOTSTRAP_ADMIN_TOKEN": ADMIN,
            "FW_API__METRICS_PUBLIC": "true",
            "OMP_NUM_THREADS": "1",
        }
        logs = tmp_path / "logs"
        logs.mkdir()

        def start(name: str, role: str, **extra: str) -> Role:
            env = base_env | {"FW_API__PORT": str(extra.pop("port", free_port()))} | extra
            return Role(name, role, env, logs)

        roles: dict[str, Role] = {}
        killed: set[str] = set()
        try:
            roles["api"] = start("api", "api")
            roles["api"].wait_ready()  # migrates the empty database first
            roles["reasoner"] = start("reasoner", "reasoner", port=str(reasoner_port))
            for i in range(2):
                roles[f"encoder-{i}"] = start(f"encoder-{i}", "encoder")
                roles[f"ingest-{i}"] = start(
                    f"ingest-{i}",
                    "ingest",
                    FW_INGEST__REPLICA_INDEX=str(i),
                    FW_INGEST__REPLICA_COUNT="2",
                )
            roles["alerts"] = start("alerts", "alerts")
            for role in roles.values():
                role.wait_ready()

            api = f"http://127.0.0.1:{roles['api'].port}"
            auth = {"Authorization": f"Bearer {ADMIN}"}
            cam_ids = []
            for mount in ("/cam1", "/cam2"):
                resp = httpx.post(
                    f"{api}/v1/cameras",
                    headers=auth,
                    timeout=10,
                    json={"name": mount.strip("/"), "url": cams.url(mount)},
                )
                assert resp.status_code == 201, resp.text
                cam_ids.append(resp.json()["id"])
            resp = httpx.post(
                f"{api}/v1/rules",
                headers=auth,
                timeout=10,
                json={
                    "name": "anything",
                    "text": "a person climbs the fence",
                    "all_cameras": True,
                    "window_s": 8,
                    "step_s": 4,
                    "threshold": 0.0,
                    "hysteresis_k": 1,
                    "hysteresis_n": 1,
                    "cooldown_s": 0,
                    "sinks": [{"type": "webhook", "url": receiver.url}],
                },
            )
            assert resp.status_code == 201, resp.text

            def alerted(after: float) -> set[int]:
                return {e["camera_id"] for t, e in receiver.events if t > after}

            wait_for(lambda: alerted(0) == set(cam_ids), 200, "a first alert on both cameras")

            # Faults: SIGKILL one encoder and one ingest replica; the replica comes back.
            roles["encoder-0"].proc.kill()
            killed.add("encoder-0")
            roles["ingest-1"].proc.kill()
            roles["ingest-1"].proc.wait()
            roles["ingest-1"] = start(
                "ingest-1b", "ingest", FW_INGEST__REPLICA_INDEX="1", FW_INGEST__REPLICA_COUNT="2"
            )
            killed_at = time.time()
            wait_for(lambda: alerted(killed_at) == set(cam_ids), 200, "alerts after the kills")

            # Drain: stop ingest first, then let the surviving encoder catch up.
            for name in ("ingest-0", "ingest-1"):
                assert roles[name].term() == 0, (logs / f"{name}.log").read_text()[-3000:]
            published = published_clip_ids(kafka_bootstrap, topic)
            store = RedisStore(private_redis.url, [24.0])

            def stored() -> set[tuple[int, int]]:
                return {
                    (cam, round(c.t[0] * 1000))
                    for cam in cam_ids
                    for c in store.range(cam, 0, 0, float("inf"))
                }

            wait_for(lambda: published <= stored(), 90, "the encoder to drain the topic")
            lost = published - stored()
            client = redis.Redis.from_url(private_redis.url)
            index_sizes = {cam: client.zcard(f"fw:{{{cam}}}:0:idx") for cam in cam_ids}
            per_cam = {cam: sum(1 for c, _ in stored() if c == cam) for cam in cam_ids}
            print(
                f"distributed: published={len(published)} stored={len(stored())} "
                f"lost={len(lost)} alerts={len(receiver.events)} index={index_sizes}"
            )
            assert not lost
            assert index_sizes == per_cam  # one index entry per clip id: nothing duplicated
            assert receiver.bad_signatures == 0
            assert all(n > 0 for n in per_cam.values())
            store.close()
        finally:
            codes = {name: role.term() for name, role in roles.items()}  # leaves no orphan
        assert all(code == 0 for name, code in codes.items() if name not in killed), codes


def published_clip_ids(bootstrap: str, topic: str) -> set[tuple[int, int]]:
    """Every level-0 clip id ingest published (read from the start of the topic)."""
    consumer = KafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=f"audit-{time.time_ns()}",
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        consumer_timeout_ms=3000,
        session_timeout_ms=6000,
        heartbeat_interval_ms=1000,
    )
    ids: set[tuple[int, int]] = set()
    deadline = time.monotonic() + 30
    try:
        while time.monotonic() < deadline:
            batch = [r for r in consumer]
            if not batch and ids:
                break
            for record in batch:
                clip = decode(record.value, Clip)
                if clip.level == 0:
                    ids.add((clip.camera_id, round(clip.t[0] * 1000)))
    finally:
        consumer.close()
    return ids
