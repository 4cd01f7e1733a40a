"""Acceptance S4: camera credentials never appear in responses, logs, metrics or errors.

Hypothesis generates usernames and passwords with dots, `%40`, `@`, `:` and unicode, and
URLs with IPv6 hosts and `?password=` parameters. A forced PyAV open failure on the
credentialed URL is logged through the service's logging setup to prove the redaction
holds for library error text too.
"""

from __future__ import annotations

import io
import logging
from pathlib import Path
from urllib.parse import quote

import av
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flashwatch.logging_setup import setup_logging
from flashwatch.security import NetworkPolicy, validate_camera_url
from tests.apiharness import Api, make_api, settings_for
from tests.services import free_port

pytestmark = pytest.mark.acceptance

SPICY = st.sampled_from([*"@:/%.?#&=+ ;", "%40", "%3A", "é", "密", "\u00a0"])
secrets_st = (
    st.lists(
        st.one_of(
            SPICY,
            st.text(
                alphabet=st.characters(codec="utf-8", exclude_categories=["Cs", "Cc"]),
                min_size=1,
                max_size=4,
            ),
        ),
        min_size=3,
        max_size=10,
    )
    .map("".join)
    .filter(lambda s: 6 <= len(s) <= 200 and s.strip() == s and not s.isalnum())
)
hosts_st = st.sampled_from(["127.0.0.1", "[::1]", "localhost", "[::ffff:127.0.0.1]"])
forms_st = st.sampled_from(["userinfo", "fields", "query"])


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Api:
    return make_api(settings_for(tmp_path_factory.mktemp("s4"), None))


@pytest.fixture(scope="module")
def log_buffer() -> io.StringIO:
    buf = io.StringIO()
    root = logging.getLogger()
    handler = logging.StreamHandler(buf)
    root.addHandler(handler)
    setup_logging("INFO")  # installs the redacting filter on every root handler
    return buf


def leaked(secret: str, text: str) -> bool:
    forms = {secret, quote(secret, safe=""), quote(secret), quote(secret, safe="@:")}
    return any(f in text for f in forms if len(f) >= 4)


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(user=secrets_st, password=secrets_st, host=hosts_st, form=forms_st)
def test_s4_credentials_never_leak(
    api: Api, log_buffer: io.StringIO, user: str, password: str, host: str, form: str
) -> None:
    port = free_port()  # nothing listens: PyAV fails fast with connection refused
    if form == "userinfo":
        body = {"url": f"rtsp://{quote(user, safe='')}:{quote(password, safe='')}@{host}:{port}/s"}
    elif form == "fields":
        body = {"url": f"rtsp://{host}:{port}/s", "username": user, "password": password}
    else:
        body = {"url": f"rtsp://{host}:{port}/s?channel=1&password={quote(password, safe='')}"}
    body["name"] = f"cam-{abs(hash((user, password, host, form))) % 10**12}"
    created = api.client.post("/v1/cameras", json=body, headers=api.h("admin"))
    assert created.status_code == 201, created.text
    cam_id = created.json()["id"]
    texts = [created.text]
    for path in (f"/v1/cameras/{cam_id}", f"/v1/cameras/{cam_id}/status", "/v1/cameras"):
        texts.append(api.client.get(path, headers=api.h("viewer")).text)
    # A rejected update with the secret in it must not echo it back either.
    bad = api.client.patch(
        f"/v1/cameras/{cam_id}",
        json={"password": password, "url": f"http://{quote(user, safe='')}:x@{host}/"},
        headers=api.h("admin"),
    )
    assert bad.status_code == 422
    texts.append(bad.text)

    parsed = validate_camera_url(
        body["url"], _policy(), username=body.get("username"), password=body.get("password")
    )
    texts += [repr(parsed), str(parsed)]
    log = logging.getLogger("flashwatch.ingest.test")
    try:
        av.open(
            parsed.with_credentials(),
            options={"rtsp_transport": "tcp", "timeout": "500000"},
            timeout=2,
        )
    except av.FFmpegError as exc:
        log.exception("camera %s failed to open %s", cam_id, parsed.with_credentials())
        log.warning("open error: %s", exc)
    texts.append(log_buffer.getvalue())
    texts.append(api.client.get("/metrics", headers=api.h("viewer")).text)
    api.client.delete(f"/v1/cameras/{cam_id}", headers=api.h("admin"))

    for text in texts:
        assert not leaked(password, text), text[:500]
        if form != "query":
            assert not leaked(user, text), text[:500]


def _policy() -> NetworkPolicy:
    return NetworkPolicy(allow_loopback=True)


def test_log_buffer_is_really_captured(log_buffer: io.StringIO, tmp_path: Path) -> None:
    """Guard against a vacuous S4: the captured log must contain ordinary messages."""
    logging.getLogger("flashwatch.check").warning("visible marker 12345")
    assert "visible marker 12345" in log_buffer.getvalue()
