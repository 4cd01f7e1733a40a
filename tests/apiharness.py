"""A FlashWatch API on a real registry (SQLite file or PostgreSQL) for tests.

`Api` bundles the app state, an HTTP client (in-process ASGI or a real uvicorn server)
and one token per role.
"""

from __future__ import annotations

import secrets
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
from fastapi.testclient import TestClient
from sqlmodel import Session

from flashwatch import registry
from flashwatch.api import create_app
from flashwatch.api.deps import AppState
from flashwatch.api.serving import ApiServer
from flashwatch.config import Settings, load_settings
from flashwatch.db.models import Alert
from flashwatch.runtime import build_state
from tests import services

ROLES = ("viewer", "operator", "admin")


@dataclass
class Api:
    state: AppState
    client: TestClient
    tokens: dict[str, str]

    def h(self, role: str = "admin") -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[role]}"}

    def camera(self, name: str = "gate", **fields: Any) -> dict[str, Any]:
        body = {"name": name, "url": "rtsp://127.0.0.1:8554/cam1"} | fields
        resp = self.client.post("/v1/cameras", json=body, headers=self.h("operator"))
        assert resp.status_code == 201, resp.text
        return dict(resp.json())

    def rule(self, name: str, camera_ids: list[int], **fields: Any) -> dict[str, Any]:
        body = {"name": name, "text": "a person climbs the fence", "camera_ids": camera_ids}
        resp = self.client.post("/v1/rules", json=body | fields, headers=self.h("operator"))
        assert resp.status_code == 201, resp.text
        return dict(resp.json())


def settings_for(data_dir: Path, db_url: str | None, **overrides: Any) -> Settings:
    base: dict[str, Any] = {
        "data_dir": data_dir,
        "ingest": {"allow_loopback": True},
        "api": {"sse_poll_s": 0.1},
    }
    if db_url:
        base["db"] = {"url": db_url}
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            base[key] = base[key] | value
        else:
            base[key] = value
    return load_settings(**base)


def make_api(settings: Settings) -> Api:
    state = build_state(settings)
    tokens = {}
    with Session(state.engine) as session:
        for role in ROLES:
            _, tokens[role] = registry.create_token(session, f"test-{role}", role)
    return Api(state=state, client=TestClient(create_app(state)), tokens=tokens)


@contextmanager
def fresh_db(kind: str, tmp_path: Path, pg_server_url: str | None) -> Iterator[str | None]:
    """None (SQLite under tmp_path) or the URL of a new, empty PostgreSQL database."""
    if kind == "sqlite":
        yield None
        return
    assert pg_server_url is not None
    name = f"fw_api_{secrets.token_hex(5)}"
    url = services.create_pg_database(pg_server_url, name)
    try:
        yield url
    finally:
        services.drop_pg_database(pg_server_url, name)


@contextmanager
def serve_app(
    app: Any, port: int | None = None, closing: threading.Event | None = None
) -> Iterator[str]:
    """Serve any ASGI app over real HTTP on loopback (`port`, or a free one) in the server
    `flashwatch serve` uses; yields the base URL once its /v1/health answers."""
    port = port or services.free_port()
    server = ApiServer(app, host="127.0.0.1", port=port, closing=closing)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            if httpx.get(base + "/v1/health", timeout=0.5).status_code == 200:
                break
        except httpx.HTTPError:
            time.sleep(0.05)
    try:
        yield base
    finally:
        server.should_exit = True
        thread.join(10)


@contextmanager
def live_server(state: AppState, port: int | None = None) -> Iterator[str]:
    """The FlashWatch API of `state` over real HTTP."""
    with serve_app(create_app(state), port, state.closing) as base:
        yield base


def add_alert(api: Api, rule_id: int, camera_id: int, n: int, **fields: object) -> Alert:
    """Writes alert number `n` of a rule on a camera straight to the registry, as the
    alerts role does."""
    now = datetime.now(UTC)
    alert = Alert(
        dedup_key=f"{rule_id}:{camera_id}:{n}",
        rule_id=rule_id,
        camera_id=camera_id,
        window_start=now - timedelta(seconds=64),
        window_end=now,
        score=0.9,
        reason="a person is on the fence",
        evidence=[now.timestamp() - 10],
        thumbnail=b"\xff\xd8jpeg",
        **fields,  # type: ignore[arg-type]
    )
    with Session(api.state.engine, expire_on_commit=False) as s:
        s.add(alert)
        s.commit()
    return alert
