"""REST API against a real registry: SQLite file and a real PostgreSQL, same assertions."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from sqlmodel import Session

from flashwatch.db.models import CameraCredential
from tests.apiharness import Api, add_alert, fresh_db, live_server, make_api, settings_for

pytestmark = pytest.mark.integration


@pytest.fixture(params=["sqlite", "postgres"])
def api(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Api]:
    pg = request.getfixturevalue("pg_server_url") if request.param == "postgres" else None
    with fresh_db(request.param, tmp_path, pg) as url:
        harness = make_api(settings_for(tmp_path, url))
        yield harness
        harness.state.engine.dispose()


def test_camera_crud_keeps_credentials_out_of_every_response(api: Api) -> None:
    cam = api.camera(url="rtsp://bob:p%40ss.w0rd@127.0.0.1:8554/cam1", labels={"site": "north"})
    assert cam["url"] == "rtsp://127.0.0.1:8554/cam1"
    assert cam["has_credentials"] is True
    assert "password" not in cam and "username" not in cam
    with Session(api.state.engine) as s:
        cred = s.get(CameraCredential, cam["id"])
        assert cred is not None and (cred.username, cred.password) == ("bob", "p@ss.w0rd")

    listed = api.client.get("/v1/cameras", headers=api.h("viewer")).json()
    assert [c["name"] for c in listed["items"]] == ["gate"]
    assert "p@ss" not in json.dumps(listed) and "p%40ss" not in json.dumps(listed)

    resp = api.client.patch(
        f"/v1/cameras/{cam['id']}",
        json={"enabled": False, "labels": {"site": "south"}},
        headers=api.h("operator"),
    )
    assert resp.status_code == 200
    assert resp.json()["enabled"] is False and resp.json()["labels"] == {"site": "south"}
    status = api.client.get(f"/v1/cameras/{cam['id']}/status", headers=api.h("viewer")).json()
    assert status["state"] == "disabled"

    dup = api.client.post(
        "/v1/cameras", json={"name": "gate", "url": "rtsp://127.0.0.1/x"}, headers=api.h("admin")
    )
    assert dup.status_code == 409 and dup.json()["code"] == "conflict"

    assert (
        api.client.delete(f"/v1/cameras/{cam['id']}", headers=api.h("operator")).status_code == 204
    )
    assert api.client.get(f"/v1/cameras/{cam['id']}", headers=api.h("viewer")).status_code == 404
    with Session(api.state.engine) as s:
        assert s.get(CameraCredential, cam["id"]) is None


def test_password_update_and_clearing(api: Api) -> None:
    cam = api.camera(username="u1", password="first-secret")
    resp = api.client.patch(
        f"/v1/cameras/{cam['id']}", json={"password": "second-secret"}, headers=api.h("operator")
    )
    assert resp.status_code == 200 and "second-secret" not in resp.text
    with Session(api.state.engine) as s:
        cred = s.get(CameraCredential, cam["id"])
        assert cred is not None and (cred.username, cred.password) == ("u1", "second-secret")
    resp = api.client.patch(
        f"/v1/cameras/{cam['id']}",
        json={"username": None, "password": None},
        headers=api.h("operator"),
    )
    assert resp.status_code == 200 and resp.json()["has_credentials"] is False


def test_cursor_pagination_walks_every_camera_once(api: Api) -> None:
    for i in range(7):
        api.camera(name=f"cam{i}")
    seen, cursor, pages = [], None, 0
    while True:
        params = {"limit": 3} | ({"cursor": cursor} if cursor else {})
        page = api.client.get("/v1/cameras", params=params, headers=api.h("viewer")).json()
        seen += [c["name"] for c in page["items"]]
        pages += 1
        cursor = page["next_cursor"]
        if not cursor:
            break
    assert seen == [f"cam{i}" for i in range(7)] and pages == 3
    bad = api.client.get("/v1/cameras", params={"cursor": "garbage!"}, headers=api.h("viewer"))
    assert bad.status_code == 422 and bad.json()["errors"][0]["field"] == "query.cursor"


def test_rule_crud_and_cross_field_validation(api: Api) -> None:
    cam = api.camera()
    rule = api.rule("fence", [cam["id"]], window_s=32, step_s=4, severity="high")
    assert (rule["window_s"], rule["step_s"], rule["hysteresis_k"], rule["hysteresis_n"]) == (
        32,
        4,
        2,
        3,
    )
    bad = api.client.post(
        "/v1/rules",
        json={"name": "r2", "text": "x", "camera_ids": [cam["id"]], "window_s": 8, "step_s": 16},
        headers=api.h("operator"),
    )
    assert bad.status_code == 422 and "step_s 16.0 exceeds window_s 8.0" in bad.json()["message"]
    slow = api.camera(name="slow", sample_interval_s=2.0)
    too_short = api.client.post(
        "/v1/rules",
        json={"name": "r3", "text": "x", "camera_ids": [slow["id"]], "window_s": 4, "step_s": 1},
        headers=api.h("operator"),
    )
    assert too_short.status_code == 422 and "4 sampled frames" in too_short.json()["message"]
    unknown_cam = api.client.post(
        "/v1/rules",
        json={"name": "r4", "text": "x", "camera_ids": [999]},
        headers=api.h("operator"),
    )
    assert unknown_cam.status_code == 422 and "999" in unknown_cam.json()["message"]
    two_selectors = api.client.post(
        "/v1/rules",
        json={"name": "r5", "text": "x", "camera_ids": [cam["id"]], "all_cameras": True},
        headers=api.h("operator"),
    )
    assert two_selectors.status_code == 422

    upd = api.client.patch(
        f"/v1/rules/{rule['id']}", json={"threshold": 0.8}, headers=api.h("operator")
    )
    assert upd.status_code == 200 and upd.json()["threshold"] == 0.8
    bad_upd = api.client.patch(
        f"/v1/rules/{rule['id']}", json={"hysteresis_k": 5}, headers=api.h("operator")
    )
    assert bad_upd.status_code == 422
    got = api.client.get(f"/v1/rules/{rule['id']}", headers=api.h("viewer")).json()
    assert got["hysteresis_k"] == 2 and got["threshold"] == 0.8
    by_cam = api.client.get("/v1/rules", params={"camera_id": cam["id"]}, headers=api.h("viewer"))
    assert [r["name"] for r in by_cam.json()["items"]] == ["fence"]
    assert (
        api.client.delete(f"/v1/rules/{rule['id']}", headers=api.h("operator")).status_code == 204
    )
    assert api.client.get(f"/v1/rules/{rule['id']}", headers=api.h("viewer")).status_code == 404


def test_alert_filters_ack_resolve_and_thumbnail(api: Api) -> None:
    cam_a, cam_b = api.camera(name="a"), api.camera(name="b")
    rule = api.rule("fence", [cam_a["id"], cam_b["id"]])
    for n in range(5):
        add_alert(api, rule["id"], cam_a["id"] if n % 2 == 0 else cam_b["id"], n)
    page = api.client.get(
        "/v1/alerts", params={"camera_id": cam_a["id"]}, headers=api.h("viewer")
    ).json()
    ids = [a["id"] for a in page["items"]]
    assert len(ids) == 3 and ids == sorted(ids, reverse=True)

    first = ids[0]
    ack = api.client.post(f"/v1/alerts/{first}/ack", headers=api.h("operator"))
    assert ack.status_code == 200 and ack.json()["acknowledged_by"] == "test-operator"
    unacked = api.client.get(
        "/v1/alerts", params={"acknowledged": "false"}, headers=api.h("viewer")
    ).json()
    assert first not in [a["id"] for a in unacked["items"]] and len(unacked["items"]) == 4
    resolved = api.client.post(f"/v1/alerts/{ids[1]}/resolve", headers=api.h("operator")).json()
    assert resolved["resolved_at"] and resolved["acknowledged_at"]
    assert api.client.post(f"/v1/alerts/{first}/ack", headers=api.h("viewer")).status_code == 403

    thumb = api.client.get(f"/v1/alerts/{first}/thumbnail", headers=api.h("viewer"))
    assert thumb.status_code == 200 and thumb.headers["content-type"] == "image/jpeg"
    future = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    none = api.client.get("/v1/alerts", params={"since": future}, headers=api.h("viewer"))
    assert none.json()["items"] == []
    naive = api.client.get(
        "/v1/alerts", params={"since": "2026-01-01T00:00:00"}, headers=api.h("viewer")
    )
    assert naive.status_code == 422


def test_deleting_a_camera_removes_its_rules_and_alerts(api: Api) -> None:
    cam_a, cam_b = api.camera(name="a"), api.camera(name="b")
    only_a = api.rule("only-a", [cam_a["id"]])
    both = api.rule("both", [cam_a["id"], cam_b["id"]])
    add_alert(api, only_a["id"], cam_a["id"], 1)
    add_alert(api, both["id"], cam_b["id"], 2)
    assert (
        api.client.delete(f"/v1/cameras/{cam_a['id']}", headers=api.h("admin")).status_code == 204
    )
    rules = api.client.get("/v1/rules", headers=api.h("viewer")).json()["items"]
    assert [(r["name"], r["camera_ids"]) for r in rules] == [("both", [cam_b["id"]])]
    alerts = api.client.get("/v1/alerts", headers=api.h("viewer")).json()["items"]
    assert [a["camera_id"] for a in alerts] == [cam_b["id"]]


def test_token_lifecycle(api: Api) -> None:
    created = api.client.post(
        "/v1/tokens", json={"name": "ci-bot", "role": "viewer"}, headers=api.h("admin")
    )
    assert created.status_code == 201
    body = created.json()
    token = body["token"]
    assert token.startswith("fw_") and body["prefix"] == token[:8]
    listed = api.client.get("/v1/tokens", headers=api.h("admin")).text
    assert token not in listed
    assert (
        api.client.get("/v1/cameras", headers={"Authorization": f"Bearer {token}"}).status_code
        == 200
    )
    assert (
        api.client.post(f"/v1/tokens/{body['id']}/revoke", headers=api.h("admin")).status_code
        == 200
    )
    assert (
        api.client.get("/v1/cameras", headers={"Authorization": f"Bearer {token}"}).status_code
        == 401
    )
    assert api.client.get("/v1/tokens", headers=api.h("operator")).status_code == 403


class StreamReader:
    """Reads `want` alert events from the live SSE stream in a thread."""

    def __init__(self, url: str, headers: dict[str, str], want: int) -> None:
        self.got: list[dict[str, object]] = []
        self.subscribed = threading.Event()
        self._args = (url, headers, want)
        self._thread = threading.Thread(target=self._read)
        self._thread.start()

    def _read(self) -> None:
        url, headers, want = self._args
        with httpx.stream("GET", url, headers=headers, timeout=10) as resp:
            assert resp.status_code == 200
            # The stream fixes where it starts before it answers: from here on, a new
            # alert must arrive; one written before this point may rightly not.
            self.subscribed.set()
            for line in resp.iter_lines():
                if line.startswith("data: "):
                    self.got.append(json.loads(line[6:]))
                    if len(self.got) == want:
                        return

    def ids(self) -> list[int]:
        self._thread.join(10)
        return [int(a["id"]) for a in self.got]  # type: ignore[call-overload]


def test_alert_stream_over_real_http(api: Api) -> None:
    cam = api.camera()
    rule = api.rule("fence", [cam["id"]])
    with live_server(api.state) as base:
        reader = StreamReader(base + "/v1/alerts/stream", api.h("viewer"), want=2)
        assert reader.subscribed.wait(10), "the alert stream never answered"
        first = add_alert(api, rule["id"], cam["id"], 1)
        second = add_alert(api, rule["id"], cam["id"], 2)
        assert reader.ids() == [first.id, second.id]
    assert [a["camera_id"] for a in reader.got] == [cam["id"], cam["id"]]


def test_alert_stream_starts_at_now_and_resumes_from_last_event_id(api: Api) -> None:
    cam = api.camera()
    rule = api.rule("fence", [cam["id"]])
    old = add_alert(api, rule["id"], cam["id"], 1)
    url = "/v1/alerts/stream"
    with live_server(api.state) as base:
        fresh = StreamReader(base + url, api.h("viewer"), want=1)
        assert fresh.subscribed.wait(10), "the alert stream never answered"
        new = add_alert(api, rule["id"], cam["id"], 2)
        assert fresh.ids() == [new.id]  # the alert from before subscribing is not replayed

        # The first event names where the stream starts, so a client dropped before any
        # alert resumes from there (`alerts tail`).
        with httpx.stream("GET", base + url, headers=api.h("viewer"), timeout=10) as resp:
            head = []
            for line in resp.iter_lines():
                if not line:
                    break
                head.append(line)
        assert head == [": connected", f"id: {new.id}"]

        backlog = StreamReader(base + url + "?after_id=0", api.h("viewer"), want=2)
        assert backlog.ids() == [old.id, new.id]
        resumed = StreamReader(
            base + url, {**api.h("viewer"), "Last-Event-ID": str(old.id)}, want=1
        )
        assert resumed.ids() == [new.id]

    bad = api.client.get(url, headers={**api.h("viewer"), "Last-Event-ID": "12; drop"})
    assert bad.status_code == 422
    assert "last-event-id" in bad.text


def test_readiness_and_metrics(api: Api) -> None:
    assert api.client.get("/v1/ready").json() == {"ready": True, "checks": {"db": True}}
    api.state.ready_checks["memory"] = lambda: False
    not_ready = api.client.get("/v1/ready")
    assert not_ready.status_code == 503 and not_ready.json()["checks"]["memory"] is False
    assert api.client.get("/metrics").status_code == 401
    text = api.client.get("/metrics", headers=api.h("viewer")).text
    assert 'fw_http_requests_total{method="GET",route="/v1/ready",status="503"} 1.0' in text
