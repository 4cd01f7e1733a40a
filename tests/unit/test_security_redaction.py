"""Unit tests for flashwatch.security.redaction: credentials never leak (S4), redaction."""

from __future__ import annotations

import logging
from urllib.parse import quote, quote_plus, unquote, urlsplit

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flashwatch.security import (
    SECRETS,
    CameraUrl,
    NetworkPolicy,
    RedactingFilter,
    SecretRegistry,
    install_redaction,
    redact,
    redact_url,
    safe_error,
    validate_camera_url,
)

DEFAULT = NetworkPolicy()
ANYWHERE = NetworkPolicy(allowed_networks=("0.0.0.0/0", "::/0"))
FAST = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


pytestmark = pytest.mark.usefixtures("restore_global_secret_registry")


# --------------------------------------------------------------------------- S4: secrecy

_CRED_CHARS = st.characters(
    blacklist_categories=("Cs",),  # surrogates cannot be UTF-8 encoded
    blacklist_characters="*",  # the mask itself is made of '*'
)
_CRED_TEXT = st.one_of(
    st.text(_CRED_CHARS, min_size=4, max_size=20),
    st.text(st.sampled_from("@:/%.?#&=+ aZ9é中"), min_size=4, max_size=20),
    st.text(st.sampled_from("ab%40.:@"), min_size=4, max_size=12),
)
_LABEL = st.text(st.sampled_from("abcdefghijklmnopqrstuvwxyz0123456789-"), min_size=1, max_size=12)
_DNS = st.builds(
    lambda labels, tld: ".".join([*labels, tld]),
    st.lists(_LABEL.filter(lambda s: s[0] != "-" and s[-1] != "-"), min_size=1, max_size=3),
    st.text(st.sampled_from("abcdefghijklmnopqrstuvwxyz"), min_size=2, max_size=6),
)
_HOSTS = st.one_of(
    _DNS.map(lambda h: (h, h)),
    st.ip_addresses(v=4).map(lambda ip: (str(ip), str(ip))),
    st.ip_addresses(v=6).map(lambda ip: (f"[{ip}]", f"[{ip.compressed}]")),
)


class _ListHandler(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


_S4_LOG = logging.getLogger("flashwatch.tests.security.s4")
_S4_LOG.propagate = False
_S4_LOG.setLevel(logging.DEBUG)
_S4_HANDLER = _ListHandler()
_S4_LOG.addHandler(_S4_HANDLER)
install_redaction(_S4_LOG)


def _fail_to_open(url: str) -> None:
    raise RuntimeError(f"av.open failed for {url}: Server returned 401 Unauthorized")


def _logged_text(full_url: str) -> str:
    _S4_HANDLER.records.clear()
    _S4_LOG.info("opening %s", full_url)
    _S4_LOG.warning("camera failed", extra={"camera_url": full_url})
    try:
        _fail_to_open(full_url)
    except RuntimeError:
        _S4_LOG.exception("reader for %r crashed", full_url)
    formatter = logging.Formatter("%(levelname)s %(message)s")
    parts = [formatter.format(r) for r in _S4_HANDLER.records]
    parts += [str(getattr(r, "camera_url", "")) for r in _S4_HANDLER.records]
    return "\n".join(parts)


@FAST
@given(
    user=_CRED_TEXT,
    password=_CRED_TEXT,
    host=_HOSTS,
    mode=st.sampled_from(["userinfo", "args", "query", "query_plus"]),
)
def test_s4_credentials_never_leak(
    user: str, password: str, host: tuple[str, str], mode: str
) -> None:
    written, normalised = host
    base = f"rtsp://{written}:554/path?x=1"
    if mode == "userinfo":
        cam = validate_camera_url(
            f"rtsp://{quote(user, safe='')}:{quote(password, safe='')}@{written}:554/path?x=1",
            ANYWHERE,
        )
    elif mode == "args":
        cam = validate_camera_url(base, ANYWHERE, username=user, password=password)
    else:
        encoded = quote(password, safe="") if mode == "query" else quote_plus(password)
        cam = validate_camera_url(f"{base}&password={encoded}", ANYWHERE, username=user)
    assert (cam.username, cam.password) == (user, password)
    expected_url = f"rtsp://{normalised}:554/path?x=1"
    assert cam.url == expected_url
    expected_repr = f"CameraUrl(url={expected_url!r}, username='***', password='***')"
    assert repr(cam) == str(cam) == expected_repr

    forms = {password, quote(password, safe=""), quote(password), quote_plus(password)}
    for form in forms:
        if form not in expected_repr:  # the password may coincide with public text
            assert form not in cam.url and form not in repr(cam) and form not in str(cam)

    full = cam.with_credentials()
    split = urlsplit(full)
    assert split.username is not None and split.password is not None
    assert (unquote(split.username), unquote(split.password)) == (user, password)
    assert full.endswith(f"@{normalised}:554/path?x=1")

    outputs = {
        "redact": redact(f"ffmpeg: '{full}': 401 Unauthorized (url={full})"),
        "redact_url": redact_url(full),
        "logs": _logged_text(full),
        "safe_error": safe_error(RuntimeError(f"cannot open {full}")),
        "safe_error_raw_password": safe_error(ValueError(f"bad password {password!r}")),
    }
    for name, text in outputs.items():
        for form in forms:
            if name != "redact_url":  # redact_url only parses; the registry covers the rest
                assert form not in text, name


def test_raw_at_and_colon_in_password_in_userinfo() -> None:
    cam = validate_camera_url("rtsp://admin:p@ss:w.rd@cam.example.com/live", DEFAULT)
    assert (cam.username, cam.password, cam.url) == (
        "admin",
        "p@ss:w.rd",
        "rtsp://cam.example.com/live",
    )
    assert cam.with_credentials() == "rtsp://admin:p%40ss%3Aw.rd@cam.example.com/live"
    cam = validate_camera_url("rtsp://ad%40min:pa%2540ss@cam.example.com/", DEFAULT)
    assert (cam.username, cam.password) == ("ad@min", "pa%40ss")


def test_explicit_credentials_override_url_and_query_secrets_are_removed() -> None:
    cam = validate_camera_url(
        "rtsp://u:urlpass1@cam.example.com/live?channel=1&Token=tok123456&subtype=0&X-Api-Key=kkkk9",
        DEFAULT,
        username="op",
        password="argpass1",
    )
    assert cam.url == "rtsp://cam.example.com/live?channel=1&subtype=0"
    assert (cam.username, cam.password) == ("op", "argpass1")
    for secret in ["urlpass1", "tok123456", "kkkk9", "argpass1"]:
        assert secret not in redact(f"leaked {secret} here")
    cam = validate_camera_url("rtsp://cam.example.com/live?user=a&PWD=qwerty12", DEFAULT)
    assert (cam.url, cam.password) == ("rtsp://cam.example.com/live?user=a", "qwerty12")


def test_repr_of_camera_without_password() -> None:
    cam = CameraUrl(url="rtsp://cam.example.com/", username="admin")
    assert repr(cam) == "CameraUrl(url='rtsp://cam.example.com/', username='***', password=None)"
    assert cam.with_credentials() == "rtsp://admin@cam.example.com/"
    assert CameraUrl(url="rtsp://h.example/").with_credentials() == "rtsp://h.example/"
    CameraUrl(url="rtsp://h.example/", password="DbLoaded-77")  # e.g. read back from the DB
    assert redact("auth failed with DbLoaded-77") == "auth failed with ***"


# --------------------------------------------------------------------------- redaction


def test_redact_url_uses_url_structure() -> None:
    assert redact_url("rtsp://admin:pw@cam.example.com:554/a?ch=1&token=abc#sig=x") == (
        "rtsp://***@cam.example.com:554/a?ch=1&token=***#sig=***"
    )
    assert redact_url("rtsp://cam.example.com/a") == "rtsp://cam.example.com/a"
    # A raw '/' or '?' in a password makes the authority end early: hide up to the last '@'.
    assert redact_url("rtsp://admin:pa/ss@cam.example.com/a") == "rtsp://***@cam.example.com/a"
    assert redact_url("rtsp://admin:pa?ss@cam.example.com/a") == "rtsp://***@cam.example.com/a"
    assert "ss" not in redact_url("rtsp://admin:x@[::1")


def test_redact_free_text() -> None:
    text = (
        'open("rtsp://root:toor@10.0.0.1/x") failed; [url=rtsps://a:b@[::1]:322/y?key=k1] '
        "concat:rtsp://u:v@h.example/a|rtsp://w:z@h2.example/b"
    )
    out = redact(text)
    for secret in ["toor", "root", "a:b", "k1", "u:v", "w:z"]:
        assert secret not in out
    assert "10.0.0.1/x" in out and "h2.example/b" in out
    assert redact("no urls here") == "no urls here"


def test_secret_registry_forms_and_short_values() -> None:
    registry = SecretRegistry()
    registry.register("p@ss w/rd+1")
    registry.register("abc")  # too short: ignored to avoid shredding logs
    text = "p@ss w/rd+1 | p%40ss%20w%2Frd%2B1 | p%40ss%20w/rd%2B1 | p%40ss+w%2Frd%2B1 | abc"
    assert registry.scrub(text) == "*** | *** | *** | *** | abc"
    registry.register("p@ss w/rd+1")
    registry.forget("p@ss w/rd+1")
    assert registry.scrub("p@ss w/rd+1") == "***"  # still registered once
    registry.forget("p@ss w/rd+1")
    assert registry.scrub("p@ss w/rd+1") == "p@ss w/rd+1"


def test_global_registry_register_and_forget() -> None:
    SECRETS.register("Forgettable-42")
    assert redact("x Forgettable-42 y") == "x *** y"
    SECRETS.forget("Forgettable-42")
    assert redact("x Forgettable-42 y") == "x Forgettable-42 y"


def test_redacting_filter_message_exception_stack_and_extras() -> None:
    handler = _ListHandler()
    logger = logging.getLogger("flashwatch.tests.security.filter")
    logger.propagate = False
    logger.addHandler(handler)
    try:
        install_redaction(logger)
        install_redaction(logger)  # idempotent
        assert sum(isinstance(f, RedactingFilter) for f in logger.filters) == 1
        assert sum(isinstance(f, RedactingFilter) for f in handler.filters) == 1
        url = "rtsp://admin:Hunter2Secret@cam.example.com/live"
        try:
            raise ConnectionError(f"cannot reach {url}")
        except ConnectionError:
            logger.error("open %s", url, exc_info=True, stack_info=True, extra={"src": url})
        logger.error("bad format %d", "not a number")
        record = handler.records[0]
        text = logging.Formatter().format(record)
        assert "Hunter2Secret" not in text and "admin" not in text
        assert "rtsp://***@cam.example.com/live" in text and "ConnectionError" in text
        assert record.exc_info is None and record.args is None
        assert "Hunter2Secret" not in str(record.stack_info) + str(record.src)
        assert "bad format" in handler.records[1].getMessage()
    finally:
        logger.removeHandler(handler)


def test_install_redaction_covers_records_propagated_from_child_loggers() -> None:
    root = logging.RootLogger(logging.DEBUG)
    manager = logging.Manager(root)
    handler = _ListHandler()
    root.addHandler(handler)
    install_redaction(root)
    manager.getLogger("flashwatch.ingest.reader").warning("x rtsp://u:ChildSecret9@h.example/")
    assert handler.records and "ChildSecret9" not in handler.records[0].getMessage()


def test_safe_error_is_redacted_and_bounded() -> None:
    msg = safe_error(OSError("rtsp://admin:OsErrSecret1@cam.example.com/" + "x" * 1000))
    assert msg.startswith("OSError: rtsp://***@cam.example.com/")
    assert len(msg) == 500 and "OsErrSecret1" not in msg
