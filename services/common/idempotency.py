"""The ``Idempotency-Key`` request header: its one rule, its OpenAPI schema, its check.

order-service (optional key: one order per key) and inventory-service (required key:
one reservation per key) accept the same keys: 1-255 printable ASCII characters. A key
that breaks the rule answers 400 ``invalid_idempotency_key`` naming the header.
"""

from __future__ import annotations

from typing import Any

from services.common.errors import ApiError

IDEMPOTENCY_HEADER = "Idempotency-Key"
#: Answer header set to "true" when a repeated key returned the first result.
REPLAYED_HEADER = "Idempotent-Replayed"
MAX_KEY_LENGTH = 255
#: The header's JSON Schema, as the OpenAPI documents show it.
KEY_SCHEMA: dict[str, Any] = {
    "type": "string",
    "minLength": 1,
    "maxLength": MAX_KEY_LENGTH,
    "pattern": "^[\\x20-\\x7e]+$",
}


def is_valid_key(key: str) -> bool:
    """Whether ``key`` is 1-255 printable ASCII characters."""
    return 1 <= len(key) <= MAX_KEY_LENGTH and all(32 <= ord(c) < 127 for c in key)


def _invalid(need: str) -> ApiError:
    return ApiError(
        400,
        "invalid_idempotency_key",
        f"{IDEMPOTENCY_HEADER} {need} 1-{MAX_KEY_LENGTH} printable ASCII characters",
        field=IDEMPOTENCY_HEADER,
    )


def optional_key(key: str | None) -> str | None:
    """``key`` (None when absent) if it keeps the rule, else a 400 ApiError."""
    if key is not None and not is_valid_key(key):
        raise _invalid("must be")
    return key


def required_key(key: str | None) -> str:
    """``key`` if present and keeping the rule, else a 400 ApiError."""
    if key is None:
        raise _invalid("is required:")
    if not is_valid_key(key):
        raise _invalid("must be")
    return key
