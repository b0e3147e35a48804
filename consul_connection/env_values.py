"""Reading one Consul setting from the environment, with the error that names it.

The small readers ``ConsulConnection.from_env`` is built from: a boolean, a file or
directory that must exist, a token file, a duration, and CONSUL_HTTP_ADDR's one or
several addresses. Each raises ``ConsulConfigError`` naming the variable.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence

from consul_discovery.connection.servers import ServerAddress, parse_consul_addr

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


class ConsulConfigError(ValueError):
    """A Consul connection setting is invalid; ``setting`` names it."""

    def __init__(self, setting: str, message: str) -> None:
        self.setting = setting
        self.problem = message
        super().__init__(f"{setting}: {message}")


def read_addresses(
    raw: str | Sequence[str], ssl: bool, setting: str, *, default_scheme: str = "http"
) -> tuple[ServerAddress, ...]:
    """CONSUL_HTTP_ADDR's one address, or several (``servers.parse_consul_addr``)."""
    try:
        return parse_consul_addr(raw, force_https=ssl, default_scheme=default_scheme)
    except ValueError as exc:
        raise ConsulConfigError(setting, str(exc)) from exc


_DURATION = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ms|s|m|h)?")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}


def env_duration(env: Mapping[str, str], name: str) -> float | None:
    """Seconds from ``10s``, ``500ms``, ``2m``, ``1h`` or a plain number (None: unset)."""
    raw = env.get(name, "").strip()
    if not raw:
        return None
    match = _DURATION.fullmatch(raw)
    if match is None:
        raise ConsulConfigError(
            name, f"{raw!r} is not a duration (seconds, or a number with ms, s, m or h)"
        )
    return float(match[1]) * _UNITS[match[2]]


def env_flag(env: Mapping[str, str], name: str, default: bool) -> bool:
    """A boolean variable (true/false, 1/0, yes/no, on/off); ``default`` when unset."""
    raw = env.get(name, "").strip().lower()
    if not raw:
        return default
    if raw in _TRUE:
        return True
    if raw in _FALSE:
        return False
    raise ConsulConfigError(name, f"{env[name]!r} is not a boolean (true or false)")


def env_path(env: Mapping[str, str], name: str, *, directory: bool) -> str | None:
    """A readable file (or an existing directory) the variable names; None when unset."""
    value = env.get(name) or None
    if value is None:
        return None
    if directory and not os.path.isdir(value):
        raise ConsulConfigError(name, f"{value} is not a directory")
    if not directory and not (os.path.isfile(value) and os.access(value, os.R_OK)):
        raise ConsulConfigError(name, f"{value} is not a readable file")
    return value


def read_token(path: str, setting: str) -> str | None:
    """The token in the file at ``path`` (None: empty); ``setting`` names the source."""
    try:
        with open(path, encoding="utf-8") as handle:
            token = handle.read().strip()
    except OSError as exc:
        raise ConsulConfigError(setting, f"cannot read {path}: {exc.strerror}") from exc
    return token or None
