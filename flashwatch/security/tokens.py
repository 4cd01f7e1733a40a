"""API tokens and webhook signatures: random tokens stored as hashes, constant-time
comparison, HMAC-SHA256 signing with replay protection."""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time


def hash_token(token: str) -> str:
    """SHA-256 hex of an API token. Tokens are 32 random bytes, so a fast hash is enough:
    there is nothing to brute-force that a slow KDF would protect."""
    return hashlib.sha256(token.encode()).hexdigest()


def new_token(prefix: str = "fw_") -> str:
    """A new API token: prefix + 32 random bytes, URL-safe base64."""
    return prefix + secrets.token_urlsafe(32)


def constant_time_equals(a: str | bytes, b: str | bytes) -> bool:
    a_bytes = a.encode() if isinstance(a, str) else a
    b_bytes = b.encode() if isinstance(b, str) else b
    return hmac.compare_digest(a_bytes, b_bytes)


def sign_webhook(secret: bytes, timestamp: int, body: bytes) -> str:
    """Hex HMAC-SHA256 over `b"{timestamp}." + body` (sent with the timestamp as headers)."""
    return hmac.new(secret, f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()


def verify_webhook_signature(
    secret: bytes,
    timestamp: int,
    body: bytes,
    signature: str,
    *,
    tolerance_s: float | None = 300.0,
    now: float | None = None,
) -> bool:
    """Check a webhook signature, and that the timestamp is within `tolerance_s` of now
    (replay protection; None skips that check)."""
    if tolerance_s is not None:
        current = time.time() if now is None else now
        if abs(current - timestamp) > tolerance_s:
            return False
    return constant_time_equals(sign_webhook(secret, timestamp, body), signature.strip().lower())
