"""The CLI against a real API over HTTP: auth enforced, tables and --json, exit codes."""

from __future__ import annotations

import json
import os
import queue
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO

import pytest

from flashwatch.api.serving import SHUTDOWN_GRACE_S
from flashwatch.db.engine import head_revision
from tests import services
from tests.apiharness import Api, add_alert, live_server, make_api, settings_for

pytestmark = pytest.mark.integration


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[Api, str]]:
    api = make_api(settings_for(tmp_path, None))
    with live_server(api.state) as base:
        yield api, base
    api.state.engine.dispose()


def fw(
    base: str, token: str | None, *args: str, stdin: str = ""
) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FW_", "FLASHWATCH_"))}
    env["FLASHWATCH_URL"] = base
    if token:
        env["FLASHWATCH_TOKEN"] = token
    return subprocess.run(
        [sys.executable, "-m", "flashwatch.cli", *args],
        input=stdin,
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )


def test_camera_and_rule_lifecycle_through_the_cli(served: tuple[Api, str]) -> None:
    api, base = served
    op = api.tokens["operator"]
    added = fw(
        base,
        op,
        "camera",
        "add",
        "gate",
        "rtsp://127.0.0.1:8554/cam1",
        "--username",
        "bob",
        "--password-stdin",
        "--label",
        "site=north",
        "--json",
        stdin="pa:ss@word\n",
    )
    assert added.returncode == 0, added.stderr
    cam = json.loads(added.stdout)
    assert cam["has_credentials"] is True and "pa:ss" not in added.stdout

    listed = fw(base, op, "camera", "list")
    assert listed.returncode == 0
    header, row = listed.stdout.splitlines()[:2]
    assert header.split()[:3] == ["ID", "NAME", "URL"] and row.split()[1] == "gate"

    rule = fw(
        base,
        op,
        "rule",
        "add",
        "fence",
        "a person climbs the fence",
        "--camera",
        str(cam["id"]),
        "--window",
        "32",
        "--step",
        "4",
        "--backfill",
        "2h",
        "--json",
    )
    assert rule.returncode == 0, rule.stderr
    assert json.loads(rule.stdout)["window_s"] == 32
    assert json.loads(rule.stdout)["backfill_s"] == 7200
    rules = json.loads(fw(base, op, "rule", "list", "--json").stdout)
    assert [r["name"] for r in rules] == ["fence"]

    asked = fw(base, op, "ask", "who is at the gate?", "--camera", str(cam["id"]), "--since", "2h")
    assert asked.returncode == 4 and "no reasoner" in asked.stderr

    assert fw(base, op, "rule", "rm", str(json.loads(rule.stdout)["id"])).returncode == 0
    assert fw(base, op, "camera", "rm", str(cam["id"])).returncode == 0
    assert json.loads(fw(base, op, "camera", "list", "--json").stdout) == []


def test_cli_enforces_auth_and_reports_errors(served: tuple[Api, str]) -> None:
    api, base = served
    no_token = fw(base, None, "camera", "list")
    assert no_token.returncode == 1 and "401" in no_token.stderr
    viewer = fw(base, api.tokens["viewer"], "camera", "add", "x", "rtsp://127.0.0.1/x")
    assert viewer.returncode == 1 and "403" in viewer.stderr
    bad = fw(base, api.tokens["admin"], "camera", "add", "x", "http://127.0.0.1/x")
    assert bad.returncode == 1 and "scheme 'http' is not allowed" in bad.stderr
    down = fw("http://127.0.0.1:9", api.tokens["admin"], "camera", "list")
    assert down.returncode == 4 and "cannot reach" in down.stderr


def test_token_create_and_db_upgrade_act_on_the_local_registry(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FW_")}
    env["FW_DATA_DIR"] = str(tmp_path)
    run = [sys.executable, "-m", "flashwatch.cli"]
    up = subprocess.run(
        [*run, "db", "upgrade"], env=env, capture_output=True, text=True, check=False
    )
    assert up.returncode == 0 and f"revision {head_revision()}" in up.stdout
    made = subprocess.run(
        [*run, "token", "create", "ops-bot", "--role", "operator", "--json"],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert made.returncode == 0, made.stderr
    token = json.loads(made.stdout)["token"]
    api = make_api(settings_for(tmp_path, None))
    assert (
        api.client.get("/v1/cameras", headers={"Authorization": f"Bearer {token}"}).status_code
        == 200
    )
    assert (
        api.client.get("/v1/tokens", headers={"Authorization": f"Bearer {token}"}).status_code
        == 403
    )
    bad_role = subprocess.run(
        [*run, "token", "create", "x", "--role", "root"],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert bad_role.returncode == 2


class LineQueue:
    """The lines a subprocess writes to one pipe, read in a thread, waited for with a
    deadline (a blocking readline would hang the test if the line never comes)."""

    def __init__(self, pipe: IO[str]) -> None:
        self.lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._pump, args=(pipe,), daemon=True).start()

    def _pump(self, pipe: IO[str]) -> None:
        for line in pipe:
            self.lines.put(line.rstrip("\n"))

    def wait_for(self, text: str, timeout: float = 30.0) -> list[str]:
        """Lines up to and including the first that contains `text`."""
        seen: list[str] = []
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = self.lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                break
            seen.append(line)
            if text in line:
                return seen
        raise AssertionError(f"no line with {text!r} within {timeout} s; got {seen}")


def test_alerts_tail_resumes_across_an_api_restart_and_misses_nothing(tmp_path: Path) -> None:
    """`alerts tail` outlives an API restart: the stopped server ends the stream at once
    (it used to wait for it forever), the CLI reconnects with the last id it saw, and every
    alert is printed once, the one written while no API ran included."""
    api = make_api(settings_for(tmp_path, None))
    cam = api.camera()
    rule = api.rule("fence", [cam["id"]])
    port = services.free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FW_", "FLASHWATCH_"))}
    env |= {"FLASHWATCH_URL": f"http://127.0.0.1:{port}", "FLASHWATCH_TOKEN": api.tokens["viewer"]}
    proc = subprocess.Popen(
        [sys.executable, "-m", "flashwatch.cli", "alerts", "tail", "--count", "3"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    assert proc.stdout is not None and proc.stderr is not None
    out, err = LineQueue(proc.stdout), LineQueue(proc.stderr)
    try:
        with live_server(api.state, port):
            err.wait_for("following alerts at")
            first = add_alert(api, rule["id"], cam["id"], 1)
            assert json.loads(out.wait_for("{")[0])["id"] == first.id
            stopping = time.monotonic()
        assert time.monotonic() - stopping < SHUTDOWN_GRACE_S  # the stream ended, not cut
        second = add_alert(api, rule["id"], cam["id"], 2)  # no API is running
        assert f"resuming after alert {first.id}" in err.wait_for("reconnecting")[-1]
        with live_server(api.state, port):
            err.wait_for("reconnected to")
            third = add_alert(api, rule["id"], cam["id"], 3)
            rest = [json.loads(out.wait_for("{")[0])["id"] for _ in range(2)]
            assert proc.wait(timeout=30) == 0
        assert rest == [second.id, third.id]
        assert out.lines.empty()  # nothing twice
    finally:
        proc.kill()
        proc.wait()
        api.state.engine.dispose()


def test_alerts_tail_stops_on_a_refused_token_or_an_unreachable_api(
    served: tuple[Api, str],
) -> None:
    """Errors that a retry cannot fix end `alerts tail` at once with a clear message."""
    _, base = served
    bad = fw(base, "fw_not-a-real-token", "alerts", "tail")
    assert bad.returncode == 1 and "error 401" in bad.stderr
    closed = f"http://127.0.0.1:{services.free_port()}"
    gone = fw(closed, None, "alerts", "tail")
    assert gone.returncode == 4 and f"cannot reach the API at {closed}" in gone.stderr


def test_an_api_that_accepts_but_never_answers_is_reported_as_a_timeout() -> None:
    """A hung API (the socket accepts, nothing answers) is told apart from one that is down:
    the message says how long the CLI waited, not that it could not connect."""
    from flashwatch.cli.client import CliError, call

    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        base = f"http://127.0.0.1:{listener.getsockname()[1]}"
        with pytest.raises(CliError) as err:
            call("GET", "/v1/cameras", url=base, token="fw_x", timeout=0.5)
    assert err.value.code == 4
    assert str(err.value) == f"no answer from the API at {base} within 0.5 s (ReadTimeout)"
