"""Camera and webhook URL policy: which schemes and destination addresses a URL may name.

DESIGN.md §7: camera URLs are `rtsp`/`rtsps` only and may not point at loopback, link-local,
private or cloud-metadata addresses unless the config allows it; credentials live apart from
the URL (`CameraUrl`) and never reach responses, logs, exception text or `repr`. Validation
never touches the network: IP literals are checked here, and ingest calls `check_address`
again on every address DNS returns at connect time, which also defeats DNS rebinding.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import TYPE_CHECKING
from urllib.parse import quote, unquote, unquote_plus

from flashwatch.security.redaction import MASK, SECRETS, is_secret_name

if TYPE_CHECKING:
    from flashwatch.config import IngestConfig

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

MAX_URL_LENGTH = 2048


# AWS/GCP/Azure/OpenStack, AWS ECS task, AWS IPv6, Alibaba, Azure WireServer.
_METADATA_ADDRESSES = frozenset(
    ipaddress.ip_address(a)
    for a in ("169.254.169.254", "169.254.170.2", "fd00:ec2::254",
              "100.100.100.200", "168.63.129.16")
)  # fmt: skip
# Names checked as the address they stand for; any other DNS name is checked at connect time.
_SPECIAL_NAMES: dict[str, IPAddress] = {
    **dict.fromkeys(
        ("metadata.google.internal", "metadata", "instance-data", "instance-data.ec2.internal"),
        ipaddress.IPv4Address("169.254.169.254"),
    ),
    **dict.fromkeys(
        ("localhost", "localhost.localdomain", "ip6-localhost", "ip6-loopback"),
        ipaddress.IPv4Address("127.0.0.1"),
    ),
}
_PRIVATE = tuple(
    ipaddress.ip_network(n)
    for n in (
        *("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10", "198.18.0.0/15"),
        *("fc00::/7", "fec0::/10"),  # unique local; deprecated site-local
    )
)
_THIS_NETWORK = ipaddress.ip_network("0.0.0.0/8")
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
# Schemes named in refusals; anything else is refused without echoing what was typed.
_KNOWN_SCHEMES = frozenset(
    ("rtsp", "rtsps", "http", "https", "file", "concat", "subfile", "data", "pipe", "crypto",
     "tcp", "udp", "tls", "rtmp", "rtmps", "rtp", "srt", "ftp", "sftp", "hls", "gopher", "ws",
     "wss", "unix", "fd", "async", "cache", "httpproxy", "mmsh", "mmst", "smb", "ipfs", "ipns")
)  # fmt: skip
_LDH = frozenset("abcdefghijklmnopqrstuvwxyz0123456789-")
_HEX = frozenset("0123456789abcdefABCDEF")


class UrlPolicyError(ValueError):
    """A URL refused by policy. The message names the problem, never the URL's secrets."""


@dataclass(frozen=True)
class PolicyHints:
    """Config keys named in refusal messages, so the operator knows what to change."""

    loopback: str = "ingest.allow_loopback"
    private: str = "ingest.allow_private"
    link_local: str = "ingest.allow_link_local"
    networks: str = "ingest.camera_networks"
    file: str = "ingest.allow_file_sources"


# For NetworkPolicy(..., hints=WEBHOOK_HINTS) built from AlertsConfig (no network list there).
_WEBHOOK_ALLOW = "alerts.webhook_allow_private"
WEBHOOK_HINTS = PolicyHints(_WEBHOOK_ALLOW, _WEBHOOK_ALLOW, _WEBHOOK_ALLOW, networks="", file="")


@dataclass(frozen=True)
class NetworkPolicy:
    """Which destination addresses a URL may name. Deny by default.

    Cloud-metadata addresses and names are refused even with `allow_link_local` or
    `allow_private`; only listing them in `allowed_networks` lets them through.
    """

    allow_loopback: bool = False
    allow_private: bool = False
    allow_link_local: bool = False
    allowed_networks: tuple[str, ...] = ()
    allow_file: bool = False
    hints: PolicyHints = field(default_factory=PolicyHints, compare=False)
    _networks: tuple[IPNetwork, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        nets = tuple(str(n) for n in self.allowed_networks)  # accept a list from config
        object.__setattr__(self, "allowed_networks", nets)
        object.__setattr__(
            self, "_networks", tuple(ipaddress.ip_network(n, strict=False) for n in nets)
        )

    def explicitly_allows(self, ip: IPAddress) -> bool:
        return any(ip.version == n.version and ip in n for n in self._networks)


def _policy_address(ip: IPAddress) -> tuple[IPAddress, IPAddress]:
    """(ip without IPv6 zone, the address it really reaches): IPv4-mapped, -compatible,
    6to4 and NAT64 (64:ff9b::/96) addresses reach the IPv4 address inside them."""
    if not isinstance(ip, ipaddress.IPv6Address):
        return ip, ip
    plain = ipaddress.IPv6Address(int(ip))  # drops the zone id
    inner = plain.ipv4_mapped if plain.ipv4_mapped is not None else plain.sixtofour
    if inner is None and (plain in _NAT64 or 1 < int(plain) <= 0xFFFFFFFF):  # not :: or ::1
        inner = ipaddress.IPv4Address(int(plain) & 0xFFFFFFFF)
    return plain, plain if inner is None else inner


def _parse_ipv4_loose(host: str) -> ipaddress.IPv4Address | None:
    """Parse every IPv4 form inet_aton accepts; None when the last label is not numeric.

    A name whose last label is numeric is never a DNS name (as in the WHATWG URL standard),
    so one that does not parse is refused rather than passed to the resolver.
    """
    parts = host.split(".")
    last = parts[-1]
    if len(parts) > 4 and (last.isdigit() or last[:2] in ("0x", "0X")):
        raise UrlPolicyError("host looks like an IPv4 address but has too many parts")
    if not (last.isascii() and last.isdigit()) and not (
        last[:2] in ("0x", "0X") and all(c in _HEX for c in last[2:])
    ):
        return None
    values: list[int] = []
    for part in parts:
        if part[:2] in ("0x", "0X") and all(c in _HEX for c in part[2:]):
            values.append(int(part[2:] or "0", 16))
        elif part.isascii() and part.isdigit():
            if part.startswith("0") and len(part) > 1 and not set(part) <= set("01234567"):
                raise UrlPolicyError("host looks like an IPv4 address but is not a valid one")
            values.append(int(part, 8) if part.startswith("0") else int(part))
        else:
            raise UrlPolicyError("host looks like an IPv4 address but is not a valid one")
    last_bits = 8 * (5 - len(values))
    if any(v > 255 for v in values[:-1]) or values[-1] >= 1 << last_bits:
        raise UrlPolicyError("host looks like an IPv4 address but is out of range")
    number = values[-1]
    for i, v in enumerate(values[:-1]):
        number |= v << (24 - 8 * i)
    return ipaddress.IPv4Address(number)


def _parse_host(host: str) -> tuple[str, IPAddress | None]:
    """Return (the host as written in a normalised URL, its IP if it is a literal)."""
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif "[" in host or "]" in host:
        raise UrlPolicyError("host has unbalanced brackets")
    if ":" in host:
        addr, _, zone = host.partition("%")
        zone = zone[2:] if zone.startswith("25") else zone
        if "%" in host and not (
            zone and all(c.isascii() and (c.isalnum() or c in "-_.") for c in zone)
        ):
            raise UrlPolicyError("host has an invalid IPv6 zone id")
        try:
            ip6 = ipaddress.IPv6Address(addr)
        except ValueError:
            raise UrlPolicyError("host is not a valid IPv6 address") from None
        return f"[{ip6.compressed}{'%25' + zone if zone else ''}]", ip6
    name = host[:-1] if host.endswith(".") else host
    if not name or len(name) > 253:
        raise UrlPolicyError("host name is empty or longer than 253 characters")
    labels = name.lower().split(".")
    if any(not label for label in labels):
        raise UrlPolicyError("host name has an empty label")
    ip4 = _parse_ipv4_loose(name)
    if ip4 is not None:
        return str(ip4), ip4
    for label in labels:
        if len(label) > 63 or not set(label) <= _LDH or label[0] == "-" or label[-1] == "-":
            raise UrlPolicyError("host name may only hold letters, digits, '-' and dots")
    return ".".join(labels), None


def camera_policy(cfg: IngestConfig) -> NetworkPolicy:
    """The camera address policy of an `IngestConfig` (the API and ingest must agree)."""
    return NetworkPolicy(
        allow_loopback=cfg.allow_loopback,
        allow_private=cfg.allow_private,
        allow_link_local=cfg.allow_link_local,
        allowed_networks=tuple(cfg.camera_networks),
        allow_file=cfg.allow_file_sources,
    )


def normalise_host(host: str) -> IPAddress | None:
    """The address a host literal reaches (embedded IPv4 unwrapped), or None for a DNS name."""
    ip = _parse_host(host)[1]
    return None if ip is None else _policy_address(ip)[1]


def _refusal(ip: IPAddress, policy: NetworkPolicy) -> str | None:
    h = policy.hints
    or_list = f" or add its network to {h.networks}" if h.networks else ""
    if ip in _METADATA_ADDRESSES:
        where = f"unless listed in {h.networks}" if h.networks else "always"
        return f"is a cloud metadata address; it is refused {where}"
    if ip.is_unspecified or ip in _THIS_NETWORK:
        return "is an unspecified address"
    if ip.is_multicast or ip == ipaddress.IPv4Address("255.255.255.255"):
        return "is a multicast or broadcast address"
    private = any(ip.version == n.version and ip in n for n in _PRIVATE)
    for hit, allowed, kind, setting in (
        (ip.is_loopback, policy.allow_loopback, "loopback", h.loopback),
        (ip.is_link_local, policy.allow_link_local, "link-local", h.link_local),
        (private, policy.allow_private, "private", h.private),
    ):
        if hit:
            return (
                None if allowed else f"is a {kind} address; set {setting}=true{or_list} to allow it"
            )
    if ip.is_reserved or not ip.is_global:
        return "is a reserved or special-purpose address" + (
            f"; add its network to {h.networks}" if h.networks else ""
        )
    return None


def check_address(ip: IPAddress, policy: NetworkPolicy, *, subject: str = "address") -> None:
    """Raise UrlPolicyError unless `policy` lets a connection reach `ip`.

    Ingest calls this on every address DNS returns, right before connecting.
    """
    plain, target = _policy_address(ip)
    if policy.explicitly_allows(plain) or policy.explicitly_allows(target):
        return
    problem = _refusal(target, policy)
    if problem is not None:
        raise UrlPolicyError(f"{subject} {target} {problem}")


def _check_host(host: str, policy: NetworkPolicy, what: str) -> str:
    """Validate a URL's host against the policy; return it normalised for the URL."""
    try:
        text, ip = _parse_host(host)
    except UrlPolicyError as exc:
        raise UrlPolicyError(f"{what} {exc}") from None
    if ip is not None:
        check_address(ip, policy, subject=f"{what} host")
        return text
    stands_for = _SPECIAL_NAMES.get("localhost" if text.endswith(".localhost") else text)
    if stands_for is not None:
        try:
            check_address(stands_for, policy, subject=f"{what} host")
        except UrlPolicyError as exc:  # name the host as written
            raise UrlPolicyError(str(exc).replace(f" {stands_for} ", f" {text} ", 1)) from None
    return text


@dataclass(frozen=True)
class _Parts:
    scheme: str
    userinfo: str | None
    host: str
    port: int | None
    path: str
    query: str | None
    fragment: str | None


def _split(url: str, what: str, allowed: tuple[str, ...], hints: PolicyHints) -> _Parts:
    """Split a URL the way FFmpeg and urllib do: authority ends at the first '/', '?' or '#',
    userinfo ends at the last '@' in it. Messages never repeat the URL's text."""
    if not isinstance(url, str):
        raise UrlPolicyError(f"{what} must be a string")
    if len(url) > MAX_URL_LENGTH:
        raise UrlPolicyError(f"{what} is {len(url)} characters long; the limit is {MAX_URL_LENGTH}")
    if any(c <= " " or c == "\x7f" or c == "\\" for c in url):
        raise UrlPolicyError(f"{what} must not contain spaces, control characters or backslashes")
    scheme, sep, rest = url.partition(":")
    scheme = scheme.lower()
    if scheme not in allowed:
        shown = f" {scheme!r}" if sep and scheme in _KNOWN_SCHEMES else ""
        extra = f" (set {hints.file}=true to read local files)" if scheme == "file" else ""
        raise UrlPolicyError(
            f"{what} scheme{shown} is not allowed; use {' or '.join(allowed)}{extra}"
        )
    if not rest.startswith("//"):
        raise UrlPolicyError(f"{what} must start with {scheme}://")
    rest = rest[2:]
    end = min((i for i in (rest.find(c) for c in "/?#") if i >= 0), default=len(rest))
    authority, tail = rest[:end], rest[end:]
    tail, hash_sign, fragment = tail.partition("#")
    path, question, query = tail.partition("?")
    userinfo, at, hostport = authority.rpartition("@")
    port_text: str | None = None
    if hostport.startswith("["):
        close = hostport.find("]") + 1
        host, after = hostport[:close], hostport[close:]
        if not close or (after and not after.startswith(":")):
            raise UrlPolicyError(f"{what} has a malformed bracketed IPv6 host")
        port_text = after[1:] if after else None
    else:
        host, colon, port_text_raw = hostport.partition(":")
        if ":" in port_text_raw:
            raise UrlPolicyError(f"{what} IPv6 hosts must be written in brackets")
        port_text = port_text_raw if colon else None
    port = None
    if port_text is not None:
        if not (port_text.isascii() and port_text.isdigit() and 0 < int(port_text) < 65536):
            raise UrlPolicyError(f"{what} port must be a number from 1 to 65535")
        port = int(port_text)
    return _Parts(scheme, userinfo if at else None, host, port, path,
                  query if question else None, fragment if hash_sign else None)  # fmt: skip


@dataclass(frozen=True)
class CameraUrl:
    """A validated camera URL with its credentials held apart.

    `url` has no userinfo and no secret query parameters; `repr`/`str` never show the
    username or password.
    Creating one registers the password for redaction, so a camera loaded from the database
    in another process is covered too.
    """

    url: str
    username: str | None = field(default=None, repr=False)
    password: str | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if self.password:
            SECRETS.register(self.password)

    def __repr__(self) -> str:
        # The username is a credential too (half of a guessable pair): masked like the password.
        user = MASK if self.username is not None else None
        shown = MASK if self.password is not None else None
        return f"CameraUrl(url={self.url!r}, username={user!r}, password={shown!r})"

    __str__ = __repr__

    def with_credentials(self) -> str:
        """The full URL with percent-encoded credentials; only for handing to PyAV/FFmpeg."""
        if self.username is None and self.password is None:
            return self.url
        scheme, _, rest = self.url.partition("://")
        userinfo = quote(self.username or "", safe="")
        if self.password is not None:
            userinfo += ":" + quote(self.password, safe="")
        return f"{scheme}://{userinfo}@{rest}"


def _decode_credential(text: str) -> str | None:
    try:
        value = unquote(text, errors="strict")
    except UnicodeDecodeError:
        raise UrlPolicyError("camera URL credentials are not valid percent-encoded UTF-8") from None
    return value or None


def validate_camera_url(
    url: str,
    policy: NetworkPolicy,
    *,
    username: str | None = None,
    password: str | None = None,
) -> CameraUrl:
    """Validate a camera URL for registration (no DNS lookup, no connection).

    Userinfo and secret-looking query parameters move into `username`/`password` (explicit
    arguments win); every secret found in the URL is registered for redaction.
    """
    what = "camera URL"
    allowed = ("rtsp", "rtsps", "file") if policy.allow_file else ("rtsp", "rtsps")
    parts = _split(url, what, allowed, policy.hints)
    if parts.scheme == "file":
        if parts.userinfo is not None or parts.host or parts.port or parts.query is not None:
            raise UrlPolicyError("file URLs must be file:///absolute/path with nothing else")
        if (
            parts.fragment is not None
            or not parts.path.startswith("/")
            or ".." in parts.path.split("/")
        ):
            raise UrlPolicyError("file URLs must name an absolute local path without '..'")
        return CameraUrl(url=f"file://{parts.path}")
    if parts.fragment is not None:
        raise UrlPolicyError(f"{what} must not contain a fragment ('#'); percent-encode it")
    if not parts.host:
        raise UrlPolicyError(f"{what} has no host")
    host = _check_host(parts.host, policy, what)
    user_in_url: str | None = None
    pass_in_url: str | None = None
    if parts.userinfo is not None:
        raw_user, colon, raw_pass = parts.userinfo.partition(":")
        user_in_url = _decode_credential(raw_user)
        pass_in_url = _decode_credential(raw_pass) if colon else None
    kept: list[str] = []
    removed: list[str] = []
    for pair in (parts.query or "").split("&"):
        name, _, value = pair.partition("=")
        if is_secret_name(name):
            removed.append(unquote_plus(value))
        elif pair:
            kept.append(pair)
    for secret in (pass_in_url, *removed):
        if secret:
            SECRETS.register(secret)
    if password is None:
        password = pass_in_url if pass_in_url is not None else next((v for v in removed if v), None)
    if username is None:
        username = user_in_url
    netloc = host if parts.port is None else f"{host}:{parts.port}"
    query = "?" + "&".join(kept) if kept else ""
    return CameraUrl(url=f"{parts.scheme}://{netloc}{parts.path}{query}", username=username or None,
                     password=password or None)  # fmt: skip


def validate_webhook_url(url: str, policy: NetworkPolicy, *, allow_http: bool = False) -> str:
    """Validate a webhook target; return it with the scheme and host normalised."""
    what = "webhook URL"
    parts = _split(url, what, ("https", "http") if allow_http else ("https",), policy.hints)
    if parts.userinfo is not None:
        raise UrlPolicyError(f"{what} must not contain credentials; requests are HMAC-signed")
    if parts.fragment is not None:
        raise UrlPolicyError(f"{what} must not contain a fragment ('#')")
    if not parts.host:
        raise UrlPolicyError(f"{what} has no host")
    host = _check_host(parts.host, policy, what)
    netloc = host if parts.port is None else f"{host}:{parts.port}"
    query = "" if parts.query is None else "?" + parts.query
    return f"{parts.scheme}://{netloc}{parts.path}{query}"
