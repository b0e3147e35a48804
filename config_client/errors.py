"""The config client's errors: one small tree under ``ConfigError``."""

from __future__ import annotations


class ConfigError(Exception):
    """Base of every config client error."""


class ConfigValueError(ConfigError, ValueError):
    """A setting's value is malformed or invalid; ``key`` names it (a setting or a KV key)."""

    def __init__(self, key: str, problem: str) -> None:
        self.key = key
        self.problem = problem
        super().__init__(f"{key}: {problem}")


class MissingSettingError(ConfigError, KeyError):
    """A setting was asked for with no default and is not configured; ``declared`` is
    False when the schema does not declare it either (a typo?)."""

    def __init__(self, key: str, *, declared: bool = True) -> None:
        self.key = key
        self.declared = declared
        super().__init__(key)

    def __str__(self) -> str:
        if not self.declared:
            return (
                f"setting {self.key!r} is not configured and not declared in the schema "
                "(is the name right?), and no default was given"
            )
        return f"setting {self.key!r} is not configured and has no default"


class ConsulKVError(ConfigError):
    """Consul's KV store could not be read or written (unreachable, 5xx, refused)."""


class KVAccessDenied(ConsulKVError):
    """Consul answered 403: the ACL token may not read or write that key or prefix."""


class CasConflictError(ConsulKVError):
    """A check-and-set write lost: someone changed ``keys`` since we read them."""

    def __init__(self, keys: list[str], detail: str) -> None:
        self.keys = keys
        super().__init__(f"check-and-set conflict on {', '.join(keys) or 'a key'}: {detail}")
