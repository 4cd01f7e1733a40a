"""Security helpers, one concern per module (DESIGN.md §7):

- `urls`: camera/webhook URL policy (schemes, destination addresses, credentials held apart);
- `redaction`: secret values and scrubbing them from text, URLs and log records;
- `tokens`: API tokens and webhook signatures.

The public names are re-exported here, so callers import from `flashwatch.security`.
"""

from flashwatch.security.redaction import (
    MASK,
    SECRETS,
    RedactingFilter,
    SecretRegistry,
    install_redaction,
    is_secret_name,
    redact,
    redact_url,
    safe_error,
)
from flashwatch.security.tokens import (
    constant_time_equals,
    hash_token,
    new_token,
    sign_webhook,
    verify_webhook_signature,
)
from flashwatch.security.urls import (
    MAX_URL_LENGTH,
    WEBHOOK_HINTS,
    CameraUrl,
    IPAddress,
    IPNetwork,
    NetworkPolicy,
    PolicyHints,
    UrlPolicyError,
    camera_policy,
    check_address,
    normalise_host,
    validate_camera_url,
    validate_webhook_url,
)

__all__ = [
    "MASK",
    "MAX_URL_LENGTH",
    "SECRETS",
    "WEBHOOK_HINTS",
    "CameraUrl",
    "IPAddress",
    "IPNetwork",
    "NetworkPolicy",
    "PolicyHints",
    "RedactingFilter",
    "SecretRegistry",
    "UrlPolicyError",
    "camera_policy",
    "check_address",
    "constant_time_equals",
    "hash_token",
    "install_redaction",
    "is_secret_name",
    "new_token",
    "normalise_host",
    "redact",
    "redact_url",
    "safe_error",
    "sign_webhook",
    "validate_camera_url",
    "validate_webhook_url",
    "verify_webhook_signature",
]
