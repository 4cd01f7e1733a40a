"""Shared fixtures: real local servers for integration tests, synthetic media, GPU auto-skip.

Fixtures (all servers bind 127.0.0.1):

* ``redis_url`` (session): "redis://127.0.0.1:6379/15", a real server; the dedicated db index
  (15, or $FW_TEST_REDIS_DB, never 0) is FLUSHDB'd once at session start. Use unique key prefixes.
* ``pg_server_url`` (session): SQLAlchemy URL of the server's ``postgres`` database,
  "postgresql+psycopg://postgres@127.0.0.1:5432/postgres" (or $FW_TEST_PG_URL).
* ``pg_url`` (session): SQLAlchemy URL of a fresh, uniquely named, empty database created for
  this session and dropped (with FORCE) at its end.
* ``kafka_bootstrap`` (session): "127.0.0.1:PORT" of a private in-memory tansu broker (Kafka API)
  started for this session ($FW_TEST_KAFKA_BOOTSTRAP to use another broker). Allow ~6 s for a
  consumer group join; don't assert on end offsets (tansu bug, see environment notes §5).
* ``mqtt_addr`` (session): ("127.0.0.1", 1883) tuple of a Mosquitto broker ($FW_TEST_MQTT).
* ``rtsp_server`` (function): factory ``rtsp_server({"/cam1": clip_path, "/cam2": "test"})``
  -> :class:`tests.services.RtspServer` with ``.url("/cam1")``, ``.port``, ``.proc``; servers are
  stopped at the end of the test. Open with PyAV using
  ``options={"rtsp_transport": "tcp", "timeout": "3000000"}``; the first frame's pts may be None.
* ``h264_clip`` (session): Path of a 30 s, 320x240, 25 fps H.264 MP4 (moving square, keyframe
  every 2 s), made with :func:`tests.media.make_h264`.

Missing servers or binaries: the fixture FAILS with the reason when $CI is set, and SKIPS
otherwise. Servers that the fixtures had to start (Redis/PostgreSQL/Mosquitto when their default
port was down) are stopped at session end.

Tests marked ``gpu`` are skipped when ``torch.cuda.is_available()`` is false.
"""

from __future__ import annotations

import os
import secrets
import sys
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import TypeVar
from urllib.parse import urlsplit, urlunsplit

import pytest

_ROOT = Path(__file__).resolve().parent.parent
if str(_ROOT) not in sys.path:  # --import-mode=importlib does not add it; tests import tests.*
    sys.path.insert(0, str(_ROOT))

from tests import services  # noqa: E402
from tests.media import make_h264  # noqa: E402

T = TypeVar("T")


def _in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def _unavailable(msg: str) -> None:
    if _in_ci():
        pytest.fail(f"[CI] required test service unavailable: {msg}", pytrace=False)
    pytest.skip(f"test service unavailable: {msg}")


def _service(fn: Callable[[], T]) -> T:
    try:
        return fn()
    except services.ServiceUnavailable as exc:
        _unavailable(str(exc))
        raise  # unreachable: _unavailable always raises


# --------------------------------------------------------------------------------------------
# hooks


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    gpu_items = [item for item in items if item.get_closest_marker("gpu") is not None]
    if not gpu_items:
        return
    try:
        import torch

        has_cuda = bool(torch.cuda.is_available())
    except Exception:  # ImportError, or a broken CUDA runtime
        has_cuda = False
    if not has_cuda:
        skip = pytest.mark.skip(reason="needs CUDA (torch.cuda.is_available() is False)")
        for item in gpu_items:
            item.add_marker(skip)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    services.stop_started()


# --------------------------------------------------------------------------------------------
# servers


@pytest.fixture(scope="session")
def redis_url() -> str:
    import redis

    server = _service(services.ensure_redis)
    db = int(os.environ.get("FW_TEST_REDIS_DB", "15"))
    if db == 0:
        pytest.fail("FW_TEST_REDIS_DB=0 refused: the test suite flushes its db", pytrace=False)
    url = urlunsplit(urlsplit(server)._replace(path=f"/{db}", query="", fragment=""))
    client = redis.Redis.from_url(url, socket_timeout=5)
    try:
        client.flushdb()
    except redis.RedisError as exc:
        _unavailable(f"Redis at {url}: {exc}")
    finally:
        client.close()
    return url


@pytest.fixture(scope="session")
def pg_server_url() -> str:
    return _service(services.ensure_postgres)


@pytest.fixture(scope="session")
def pg_url(pg_server_url: str) -> Iterator[str]:
    name = f"fw_test_{os.getpid()}_{secrets.token_hex(4)}"
    try:
        url = services.create_pg_database(pg_server_url, name)
    except Exception as exc:  # psycopg.OperationalError etc.
        _unavailable(f"cannot create database on {pg_server_url}: {exc}")
    yield url
    services.drop_pg_database(pg_server_url, name)


@pytest.fixture(scope="session")
def kafka_bootstrap(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    external = os.environ.get("FW_TEST_KAFKA_BOOTSTRAP")
    if external:
        host, _, port = external.rpartition(":")
        if not services.port_open(host, int(port), timeout=2):
            _unavailable(f"FW_TEST_KAFKA_BOOTSTRAP={external}: nothing listens there")
        yield external
        return
    proc, bootstrap = _service(lambda: services.start_tansu(tmp_path_factory.mktemp("tansu")))
    try:
        yield bootstrap
    finally:
        services.stop(proc, timeout=3)  # in-memory: nothing to flush


@pytest.fixture(scope="session")
def mqtt_addr() -> tuple[str, int]:
    return _service(services.ensure_mqtt)


@pytest.fixture
def rtsp_server(tmp_path: Path) -> Iterator[Callable[..., services.RtspServer]]:
    started: list[services.RtspServer] = []

    def factory(mounts: Mapping[str, str | Path], port: int = 0) -> services.RtspServer:
        log = tmp_path / f"rtsp_server_{len(started)}.log"
        proc = _service(lambda: services.start_rtsp_server(mounts, port=port, log_path=log))
        server = services.RtspServer(proc=proc, port=proc.port)  # type: ignore[attr-defined]
        started.append(server)
        return server

    yield factory
    for server in reversed(started):
        services.stop(server.proc)


# --------------------------------------------------------------------------------------------
# media


@pytest.fixture(scope="session")
def h264_clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("media") / "clip_30s_320x240.mp4"
    return make_h264(path, seconds=30, fps=25, size=(320, 240), gop=50, seed=0)
