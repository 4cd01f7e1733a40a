"""Unit tests for flashwatch.security: URL policy (S5), credential secrecy (S4), signing."""

from __future__ import annotations

import ipaddress
import logging
import socket
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote, quote_plus, unquote, urlsplit

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flashwatch.security import (
    MAX_URL_LENGTH,
    SECRETS,
    CameraUrl,
    NetworkPolicy,
    RedactingFilter,
    SecretRegistry,
    UrlPolicyError,
    check_address,
    constant_time_equals,
    hash_token,
    install_redaction,
    new_token,
    normalise_host,
    redact,
    redact_url,
    safe_error,
    sign_webhook,
    validate_camera_url,
    validate_webhook_url,
    verify_webhook_signature,
)

DEFAULT = NetworkPolicy()
ANYWHERE = NetworkPolicy(allowed_networks=("0.0.0.0/0", "::/0"))
FAST = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@pytest.fixture(autouse=True, scope="module")
def _restore_global_secret_registry() -> Iterator[None]:
    """The properties below register hundreds of random secrets in the process-wide registry;
    drop them afterwards so they cannot mask text in other test modules."""
    saved = dict(SECRETS._values)
    yield
    SECRETS.clear()
    for value, count in saved.items():
        for _ in range(count):
            SECRETS.register(value)


# --------------------------------------------------------------------------- S5: URL policy

S5_REFUSED = [
    "file:///etc/passwd",
    "FILE:///etc/passwd",
    "http://cam.example.com/live",
    "https://cam.example.com/live",
    "concat:rtsp://cam.example.com/a|rtsp://cam.example.com/b",
    "subfile:,,start,0,end,0,,:rtsp://cam.example.com/a",
    "data:text/plain,hello",
    "pipe:0",
    "crypto:rtsp://cam.example.com/a",
    "tcp://cam.example.com:554",
    "udp://cam.example.com:554",
    "rtsp+tcp://cam.example.com/a",
    "rtsp:cam.example.com/a",
    " rtsp://cam.example.com/a",
    "rtsp://127.0.0.1/live",
    "rtsp://127.0.0.1:8554/live",
    "rtsp://2130706433/live",
    "rtsp://0x7f000001/live",
    "rtsp://0177.0.0.1/live",
    "rtsp://0x7f.0x0.0x0.0x1/live",
    "rtsp://127.1/live",
    "rtsp://127.0.1/live",
    "rtsp://127.0.0.1./live",
    "rtsp://[::1]/live",
    "rtsp://[::ffff:127.0.0.1]/live",
    "rtsp://[::ffff:7f00:1]/live",
    "rtsp://[64:ff9b::7f00:1]/live",
    "rtsp://[2002:7f00:1::]/live",
    "rtsp://169.254.169.254/latest/meta-data",
    "rtsp://2852039166/latest/meta-data",
    "rtsp://0xa9fea9fe/latest/meta-data",
    "rtsp://[::ffff:169.254.169.254]/",
    "rtsp://[fd00:ec2::254]/",
    "rtsp://100.100.100.200/",
    "rtsp://metadata.google.internal/",
    "rtsp://localhost/live",
    "rtsp://LOCALHOST./live",
    "rtsp://cam.localhost/live",
    "rtsp://10.0.0.5/live",
    "rtsp://192.168.1.10/live",
    "rtsp://172.16.0.1/live",
    "rtsp://100.64.0.1/live",
    "rtsp://[fc00::1]/live",
    "rtsp://[fe80::1%25eth0]/live",
    "rtsp://0.0.0.0/live",
    "rtsp://[::]/live",
    "rtsp://224.0.0.1/live",
    "rtsp://255.255.255.255/live",
    "rtsp://240.0.0.1/live",
    "rtsp://cam_1.example.com/live",
    "rtsp://cam..example.com/live",
    "rtsp://1.2.3.4.5/live",
    "rtsp://09.1.1.1/live",
    "rtsp://256.1.1.1/live",
    "rtsp:///live",
    "rtsp://cam.example.com:0/live",
    "rtsp://cam.example.com:65536/live",
    "rtsp://::1/live",
    "rtsp://cam.example.com/live#frag",
    "rtsp://cam.example.com\\@evil.example.com/live",
]


@pytest.mark.parametrize("url", S5_REFUSED)
def test_s5_refused_by_default(url: str) -> None:
    with pytest.raises(UrlPolicyError) as info:
        validate_camera_url(url, DEFAULT)
    assert isinstance(info.value, ValueError)  # the API maps ValueError to 422


@pytest.mark.parametrize(
    "url",
    [
        "rtsp://127.0.0.1/live",
        "rtsp://2130706433/live",
        "rtsp://0x7f000001/live",
        "rtsp://0177.0.0.1/live",
        "rtsp://127.1/live",
        "rtsp://[::1]/live",
        "rtsp://[::ffff:127.0.0.1]/live",
        "rtsp://localhost:8554/live",
    ],
)
def test_loopback_allowed_when_configured(url: str) -> None:
    cam = validate_camera_url(url, NetworkPolicy(allow_loopback=True))
    assert cam.url.startswith("rtsp://")


def test_loopback_forms_normalise_to_canonical_url() -> None:
    policy = NetworkPolicy(allow_loopback=True)
    assert validate_camera_url("rtsp://0x7f.1:8554/a", policy).url == "rtsp://127.0.0.1:8554/a"
    assert validate_camera_url("RTSP://Cam.Example.COM./a", DEFAULT).url == (
        "rtsp://cam.example.com/a"
    )


def test_private_allowed_by_network_or_flag() -> None:
    nets = NetworkPolicy(allowed_networks=("10.0.0.0/8",))
    assert validate_camera_url("rtsp://10.0.0.5/live", nets).url == "rtsp://10.0.0.5/live"
    with pytest.raises(UrlPolicyError):
        validate_camera_url("rtsp://192.168.1.5/live", nets)
    assert validate_camera_url("rtsp://192.168.1.5/x", NetworkPolicy(allow_private=True)).url
    list_policy = NetworkPolicy(allowed_networks=["10.0.0.0/8"])  # type: ignore[arg-type]
    assert list_policy.allowed_networks == ("10.0.0.0/8",)
    assert hash(list_policy) == hash(nets)


@pytest.mark.parametrize(
    "url",
    [
        "rtsp://169.254.169.254/",
        "rtsp://2852039166/",
        "rtsp://metadata/",
        "rtsp://[fd00:ec2::254]/",
    ],
)
def test_metadata_refused_even_with_link_local_and_private(url: str) -> None:
    policy = NetworkPolicy(allow_link_local=True, allow_private=True, allow_loopback=True)
    with pytest.raises(UrlPolicyError, match="metadata"):
        validate_camera_url(url, policy)


def test_metadata_allowed_only_when_listed() -> None:
    policy = NetworkPolicy(allowed_networks=("169.254.169.254/32",))
    assert validate_camera_url("rtsp://169.254.169.254/", policy).url == "rtsp://169.254.169.254/"
    link_local = NetworkPolicy(allow_link_local=True)
    assert validate_camera_url("rtsp://169.254.10.1/", link_local).url == "rtsp://169.254.10.1/"


def test_messages_name_the_problem() -> None:
    def message(url: str, policy: NetworkPolicy = DEFAULT) -> str:
        with pytest.raises(UrlPolicyError) as info:
            validate_camera_url(url, policy)
        return str(info.value)

    assert message("http://x.example/") == (
        "camera URL scheme 'http' is not allowed; use rtsp or rtsps"
    )
    assert message("rtsp://127.0.0.1/") == (
        "camera URL host 127.0.0.1 is a loopback address; set ingest.allow_loopback=true "
        "or add its network to ingest.camera_networks to allow it"
    )
    assert "2048" in message("rtsp://cam.example.com/" + "a" * MAX_URL_LENGTH)
    assert "metadata" in message("rtsp://2852039166/")
    assert "private" in message("rtsp://10.0.0.5/")
    assert "65535" in message("rtsp://cam.example.com:70000/")
    assert "file" in message("file:///tmp/a.mp4")


def test_messages_never_contain_credentials() -> None:
    secret = "Zq9Sec-ret"
    for url in [
        f"rtsp://admin:{secret}@127.0.0.1/live",
        f"rtsp://admin:{secret}@2130706433/live",
        f"rtsp://admin:{secret}/x@cam.example.com/live",  # raw '/' splits the authority
        f"rtsp://admin:{secret}#x@cam.example.com/live",
        f"{secret}://cam.example.com/",
        f"{secret}:rtsp://cam.example.com/",
        f"rtsp://cam.example.com/live?token={secret}#frag",
        f"rtsp://admin:{secret}@cam_1.example.com/",
        f"http://admin:{secret}@cam.example.com/",
        f"rtsp://admin:{secret}@cam.example.com/{'a' * 3000}",
    ]:
        with pytest.raises(UrlPolicyError) as info:
            validate_camera_url(url, DEFAULT)
        assert secret not in str(info.value)
        assert secret.lower() not in str(info.value).lower()


def test_file_urls_only_when_allowed_and_absolute() -> None:
    policy = NetworkPolicy(allow_file=True)
    assert validate_camera_url("file:///data/demo.mp4", policy).url == "file:///data/demo.mp4"
    refused = [
        *("file://host/data/a.mp4", "file://relative.mp4", "file:///data/../etc/x"),
        *("file://u:p@/data/a.mp4", "file:///data/a.mp4?x=1", "concat:file:///a.mp4"),
    ]
    for url in refused:
        with pytest.raises(UrlPolicyError):
            validate_camera_url(url, policy)


def test_validation_makes_no_dns_lookup_or_connection(monkeypatch: pytest.MonkeyPatch) -> None:
    def forbidden(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("network access during validation")

    for name in ("getaddrinfo", "gethostbyname", "gethostbyname_ex", "create_connection"):
        monkeypatch.setattr(socket, name, forbidden)
    monkeypatch.setattr(socket.socket, "connect", forbidden)
    for url in S5_REFUSED:
        with pytest.raises(UrlPolicyError):
            validate_camera_url(url, DEFAULT)
    assert validate_camera_url("rtsp://cam.example.com/live", DEFAULT).url


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        ("2130706433", "127.0.0.1"),
        ("0x7f000001", "127.0.0.1"),
        ("0177.0.0.1", "127.0.0.1"),
        ("0x7f.0x0.0x0.0x1", "127.0.0.1"),
        ("127.1", "127.0.0.1"),
        ("127.0.1", "127.0.0.1"),
        ("0x7f.1", "127.0.0.1"),
        ("127.0.0.1.", "127.0.0.1"),
        ("[::1]", "::1"),
        ("::1", "::1"),
        ("[fe80::1%25eth0]", "fe80::1"),
        ("fe80::1%eth0", "fe80::1"),
        ("[::ffff:127.0.0.1]", "127.0.0.1"),
        ("[::ffff:7f00:1]", "127.0.0.1"),
        ("[::7f00:1]", "127.0.0.1"),
        ("[2002:a00:5::1]", "10.0.0.5"),
        ("[64:ff9b::a9fe:a9fe]", "169.254.169.254"),
        ("[2001:4860::8888]", "2001:4860::8888"),
        ("cam.example.com", None),
        ("Cam-01.Example.com.", None),
        ("localhost", None),
    ],
)
def test_normalise_host(host: str, expected: str | None) -> None:
    result = normalise_host(host)
    assert (None if result is None else str(result)) == expected


@pytest.mark.parametrize(
    "host", ["", ".", "a..b", "a b", "cam_1", "-cam.example", "x" * 254, "é.example", "1.2.3.4.5",
             "08.0.0.1", "0x1g.0.0.1", "256.0.0.1", "1.16777216", "[::1", "[zz::1]", "[fe80::1%]"]
)  # fmt: skip
def test_normalise_host_rejects_invalid(host: str) -> None:
    with pytest.raises(UrlPolicyError):
        normalise_host(host)


@FAST
@given(st.ip_addresses(v=4), st.data())
def test_every_ipv4_spelling_normalises_to_the_same_address(
    ip: ipaddress.IPv4Address, data: st.DataObject
) -> None:
    value, octets = int(ip), ip.packed
    spellings = [
        str(value),
        hex(value),
        ".".join(hex(o) for o in octets),
        ".".join("0" + oct(o)[2:] for o in octets),
        f"{octets[0]}.{value & 0xFFFFFF}",
        f"{octets[0]}.{octets[1]}.{value & 0xFFFF}",
        f"{ip}.",
        f"[::ffff:{ip}]",
    ]
    spelling = data.draw(st.sampled_from(spellings))
    assert normalise_host(spelling) == ip


_URL_PIECES = st.sampled_from(
    [*"rtsp:/@[]%.?#&=+-_09afxé \\", "25", "0x", "::", "::ffff:", "%40", "%zz", "%c3", "rtsp://"]
)


@FAST
@given(
    st.one_of(
        st.text(max_size=60),
        st.lists(_URL_PIECES, max_size=30).map("".join),
        st.lists(_URL_PIECES, max_size=25).map(lambda pieces: "rtsp://" + "".join(pieces)),
    )
)
def test_arbitrary_input_is_refused_cleanly_or_round_trips(url: str) -> None:
    """Junk only ever raises UrlPolicyError; what passes re-validates to the same camera."""
    redact(url)
    redact_url(url)
    try:
        cam = validate_camera_url(url, ANYWHERE)
    except UrlPolicyError:
        return
    assert validate_camera_url(cam.with_credentials(), ANYWHERE) == cam
    assert validate_camera_url(cam.url, ANYWHERE).url == cam.url


def test_check_address_for_resolved_addresses() -> None:
    """Ingest re-checks what DNS returned, right before connecting (DNS rebinding)."""
    for text in ["127.0.0.1", "::ffff:127.0.0.1", "169.254.169.254", "10.1.2.3", "fe80::1%eth0"]:
        with pytest.raises(UrlPolicyError):
            check_address(ipaddress.ip_address(text), DEFAULT)
    check_address(ipaddress.ip_address("8.8.8.8"), DEFAULT)
    check_address(ipaddress.ip_address("::ffff:127.0.0.1"), NetworkPolicy(allow_loopback=True))


def test_webhook_urls() -> None:
    assert validate_webhook_url("HTTPS://Hooks.Example.com/a?b=c", DEFAULT) == (
        "https://hooks.example.com/a?b=c"
    )
    assert validate_webhook_url("http://hooks.example.com/", DEFAULT, allow_http=True)
    for url in ["http://hooks.example.com/", "https://u:p@hooks.example.com/",
                "https://hooks.example.com/#x", "https://127.0.0.1/", "https://2852039166/",
                "https://10.0.0.1/", "ftp://hooks.example.com/",
                "https://hooks.example.com/" + "a" * MAX_URL_LENGTH]:  # fmt: skip
        with pytest.raises(UrlPolicyError):
            validate_webhook_url(url, DEFAULT)


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


# --------------------------------------------------------------------------- tokens, signing


def test_tokens() -> None:
    token = new_token()
    assert token.startswith("fw_") and len(token) >= 3 + 43
    assert new_token(prefix="x_") != new_token(prefix="x_")
    assert hash_token(token) == hash_token(token) and len(hash_token(token)) == 64
    assert hash_token(token) != hash_token(token + "x")
    assert constant_time_equals("abc", "abc") and constant_time_equals(b"abc", "abc")
    assert not constant_time_equals("abc", "abd") and not constant_time_equals("é", "e")


def test_webhook_signature() -> None:
    secret, ts, body = b"k" * 32, 1_760_000_000, b'{"alert": 1}'
    sig = sign_webhook(secret, ts, body)
    assert len(sig) == 64
    assert verify_webhook_signature(secret, ts, body, sig, now=ts + 10)
    assert verify_webhook_signature(secret, ts, body, sig.upper(), tolerance_s=None)
    assert not verify_webhook_signature(secret, ts, body + b" ", sig, now=ts)
    assert not verify_webhook_signature(secret, ts + 1, body, sig, now=ts)
    assert not verify_webhook_signature(b"other", ts, body, sig, now=ts)
    assert not verify_webhook_signature(secret, ts, body, sig, now=ts + 301)  # replay
