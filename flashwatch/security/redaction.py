"""Secret redaction: what looks like a secret, the registry of secret values, and scrubbing
text, URLs and log records (DESIGN.md §7: secrets never reach responses, logs, metrics or
exception text).

URLs are parsed with `urllib.parse` (no regexes); then every registered secret value, raw and
percent-encoded, is replaced wherever it appears in the text.
"""

from __future__ import annotations

import logging
import threading
from urllib.parse import quote, quote_plus, unquote, urlsplit, urlunsplit

MASK = "***"

_SECRET_SUBSTRINGS = (
    "password", "passwd", "pwd", "token", "secret", "auth", "signature", "credential",
    "apikey", "api_key", "accesskey", "access_key", "privatekey", "private_key", "passphrase",
)  # fmt: skip
_SECRET_WORDS = frozenset({"pass", "key", "sig", "pw"})


def is_secret_name(name: str) -> bool:
    """True for query parameter names that look like they carry a secret."""
    low = unquote(name).lower()
    words = low.replace("-", "_").replace(".", "_").split("_")
    return any(s in low for s in _SECRET_SUBSTRINGS) or any(w in _SECRET_WORDS for w in words)


class SecretRegistry:
    """Secret values to scrub from any text. Thread-safe.

    Values shorter than 4 characters are ignored: scrubbing "1" or "ab" from every log line
    would shred logs while hiding almost nothing. Such passwords are still kept out of URLs.
    """

    MIN_LENGTH = 4

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._values: dict[str, int] = {}
        self._forms: tuple[str, ...] = ()

    def register(self, value: str) -> None:
        if not isinstance(value, str) or len(value) < self.MIN_LENGTH:
            return
        with self._lock:
            self._values[value] = self._values.get(value, 0) + 1
            self._rebuild()

    def forget(self, value: str) -> None:
        with self._lock:
            count = self._values.pop(value, 0)
            if count > 1:
                self._values[value] = count - 1
            self._rebuild()

    def clear(self) -> None:
        with self._lock:
            self._values.clear()
            self._rebuild()

    def _rebuild(self) -> None:
        forms = {
            f
            for v in self._values
            for f in (v, quote(v, safe=""), quote(v), quote_plus(v), repr(v)[1:-1])
        }
        self._forms = tuple(sorted(forms, key=len, reverse=True))  # longest first

    def scrub(self, text: str) -> str:
        for form in self._forms:  # a tuple snapshot: safe without the lock
            if form in text:
                text = text.replace(form, MASK)
        return text


SECRETS = SecretRegistry()


def _mask_query(query: str) -> str:
    pairs = (p.partition("=") for p in query.split("&"))
    return "&".join(f"{n}={MASK}" if s and is_secret_name(n) else n + s + v for n, s, v in pairs)


def redact_url(url: str) -> str:
    """Replace a URL's userinfo with `***@` and secret query values with `***`."""
    scheme, sep, rest = url.partition("://")
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError on a non-numeric port
    except ValueError:
        parts = None
    if parts is None or ("@" in rest and "@" not in parts.netloc):
        # A raw '/', '?' or '#' in a password ends the authority early (and may leave a
        # "port" that is not a number): hide everything up to the last '@'.
        if "@" in rest:
            return f"{scheme}{sep}{MASK}@{_mask_query(rest.rpartition('@')[2])}"
        return f"{scheme}{sep}{MASK}" if sep else MASK
    netloc = parts.netloc
    if "@" in netloc:
        netloc = f"{MASK}@{netloc.rpartition('@')[2]}"
    query, fragment = _mask_query(parts.query), _mask_query(parts.fragment)
    return urlunsplit((parts.scheme, netloc, parts.path, query, fragment))


_DELIMITERS = frozenset(" \t\r\n\f\v'\"`()[]{}<>,;")
_SCHEME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789+-.")


def _redact_token(token: str) -> str:
    starts: list[int] = []
    pos = token.find("://")
    while pos >= 0:
        start = pos
        while start > 0 and token[start - 1] in _SCHEME_CHARS:
            start -= 1
        starts.append(start)
        pos = token.find("://", pos + 3)
    out = [token[: starts[0]]]
    for start, stop in zip(starts, [*starts[1:], len(token)], strict=True):
        out.append(redact_url(token[start:stop]))
    return "".join(out)


def redact(text: str) -> str:
    """Redact every URL-like token in free text, then every registered secret value."""
    if "://" in text:
        pieces: list[str] = []
        begin, in_ipv6 = 0, False
        for i, ch in enumerate([*text, " "]):
            if in_ipv6 and not ch.isspace():  # inside "://[...]" or "@[...]": one token
                in_ipv6 = ch != "]"
                continue
            in_ipv6 = ch == "[" and "://" in text[begin:i] and text[begin:i].endswith(("@", "/"))
            if ch in _DELIMITERS and not in_ipv6:
                token = text[begin:i]
                pieces.append(_redact_token(token) if "://" in token else token)
                pieces.append(text[i : i + 1])
                begin = i + 1
        text = "".join(pieces)
    return SECRETS.scrub(text)


_STANDARD_ATTRS = frozenset(logging.makeLogRecord({}).__dict__) | {"message", "asctime"}


class RedactingFilter(logging.Filter):
    """Redact a record's message, exception text, stack and string extras, in place, once."""

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "_fw_redacted", False):
            return True
        try:
            message = record.getMessage()
        except Exception:  # bad format args: keep what we can, redacted
            message = f"{record.msg!s} {record.args!r}"
        record.msg, record.args = redact(message), None
        if record.exc_info and record.exc_info[0] is not None:
            # Pre-format and drop exc_info so no handler re-formats the raw traceback.
            record.exc_text = logging.Formatter().formatException(record.exc_info)
            record.exc_info = None
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
        for key, value in list(record.__dict__.items()):
            if key not in _STANDARD_ATTRS and isinstance(value, str):
                setattr(record, key, redact(value))
        setattr(record, "_fw_redacted", True)  # noqa: B010 - not a LogRecord attribute
        return True


def install_redaction(logger: logging.Logger | None = None) -> RedactingFilter:
    """Add a RedactingFilter to `logger` (default: root) and to each of its handlers. Idempotent.

    A logger's filters only see records logged on that logger, not records propagated from
    child loggers; handler filters see every record the handler emits, so the handlers are
    what matter. Handlers added later need `handler.addFilter(...)` (or call this again).
    """
    target = logger if logger is not None else logging.getLogger()
    existing = [f for f in target.filters if isinstance(f, RedactingFilter)]
    filt = existing[0] if existing else RedactingFilter()
    if not existing:
        target.addFilter(filt)
    for handler in target.handlers:
        if not any(isinstance(f, RedactingFilter) for f in handler.filters):
            handler.addFilter(filt)
    return filt


def safe_error(exc: BaseException) -> str:
    """A redacted one-line description of `exc`, at most 500 characters (camera last_error)."""
    try:
        text = str(exc)
    except Exception:
        text = "<unprintable>"
    return f"{type(exc).__name__}: {redact(text)}"[:500]
