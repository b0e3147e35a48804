"""What Consul accepts as service meta, checked before anything is sent to the agent.

The agent refuses a registration whose meta breaks any of these rules with a 400
("Invalid Service Meta: ..."), and a refused registration is never retried, so a bad
``SERVICE_META`` would leave the instance serving, unregistered, for good. The rules
are Consul's own (``agent/structs/structs.go``: ``validateMetaPair``, the
``metaMaxKeyPairs``, ``metaKeyMaxLength`` and ``metaValueMaxLength`` constants, and
``MetaKeyReservedPrefix``; the same in Consul 1.22):

* at most 64 pairs;
* a key is 1-128 ASCII letters, digits, ``-`` or ``_``, and does not start with
  ``consul-`` (reserved for Consul's own keys);
* a value is at most 512 bytes (UTF-8, as Go counts a string's length); any
  characters.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

MAX_PAIRS = 64
MAX_KEY_LENGTH = 128
MAX_VALUE_BYTES = 512
RESERVED_PREFIX = "consul-"
_KEY = re.compile(r"[A-Za-z0-9_-]+")


def meta_problem(meta: Mapping[str, str]) -> str | None:
    """Why Consul would refuse ``meta`` as a service's meta, or None when it would not."""
    if len(meta) > MAX_PAIRS:
        return f"{len(meta)} pairs; Consul allows at most {MAX_PAIRS}"
    for key, value in meta.items():
        problem = key_problem(key) or _value_problem(key, value)
        if problem is not None:
            return problem
    return None


def key_problem(key: str) -> str | None:
    """Why Consul would refuse ``key`` as a meta key, or None when it would not."""
    shown = _shorten(key)
    if not key:
        return "a key is empty"
    if not _KEY.fullmatch(key):
        bad = sorted({c for c in key if not (c.isascii() and (c.isalnum() or c in "-_"))})
        chars = " ".join(repr(c) for c in bad)
        return (
            f"key {shown} has {chars}: Consul allows only ASCII letters, digits, "
            "'-' and '_' in meta keys"
        )
    if len(key) > MAX_KEY_LENGTH:
        return f"key {shown} is {len(key)} characters long; Consul allows at most {MAX_KEY_LENGTH}"
    if key.startswith(RESERVED_PREFIX):
        return f"key {shown} starts with {RESERVED_PREFIX!r}, which Consul reserves for itself"
    return None


def _value_problem(key: str, value: str) -> str | None:
    size = len(value.encode("utf-8"))
    if size > MAX_VALUE_BYTES:
        return (
            f"the value of {_shorten(key)} is {size} bytes long; "
            f"Consul allows at most {MAX_VALUE_BYTES}"
        )
    return None


def _shorten(key: str) -> str:
    return repr(key) if len(key) <= 40 else repr(key[:40]) + "..."
