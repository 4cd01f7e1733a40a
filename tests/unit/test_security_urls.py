"""Unit tests for flashwatch.security.urls: the camera/webhook URL policy (S5)."""

from __future__ import annotations

import ipaddress
import socket
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flashwatch.security import (
    MAX_URL_LENGTH,
    NetworkPolicy,
    UrlPolicyError,
    check_address,
    normalise_host,
    redact,
    redact_url,
    validate_camera_url,
    validate_webhook_url,
)

DEFAULT = NetworkPolicy()
ANYWHERE = NetworkPolicy(allowed_networks=("0.0.0.0/0", "::/0"))
FAST = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


pytestmark = pytest.mark.usefixtures("restore_global_secret_registry")


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
