"""Unit tests for flashwatch.security.tokens: API tokens and webhook signatures."""

from __future__ import annotations

from flashwatch.security import (
    constant_time_equals,
    hash_token,
    new_token,
    sign_webhook,
    verify_webhook_signature,
)

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
