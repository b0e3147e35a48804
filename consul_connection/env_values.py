"""Reading one Consul setting from the environment, with the error that names it.

The small readers ``ConsulConnection.from_env`` is built from: a boolean, a file or
directory that must exist, a token file, a duration, and CONSUL_HTTP_ADDR's one or
several addresses. Each raises ``ConsulConfigError`` naming the variable.

An ACL token travels in the ``X-Consul-Token`` header, so ``check_token`` refuses one
with a character a header cannot carry (a line break would inject a header; requests
refuses it with an error quoting the value): printable ASCII only, no whitespace. The
error names the setting and never shows the token. A token file is trimmed of
surrounding whitespace first, as the consul CLI does (Go's ``strings.TrimSpace``);
``CONSUL_HTTP_TOKEN`` is taken as it is, as by the CLI (which then fails every request).
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


#: What Go's ``strings.TrimSpace`` trims (``unicode.IsSpace``): the consul CLI's token file.
_GO_SPACE = (
    " \t\n\v\f\r\x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009\u200a"
    "\u2028\u2029\u202f\u205f\u3000"
)


def read_token(path: str, setting: str) -> str:
    """The token in the file at ``path``, trimmed as by the consul CLI; ``setting`` names
    the source in a ``ConsulConfigError`` for a file that cannot be read, holds no token
    (the CLI would quietly use CONSUL_HTTP_TOKEN or anonymous instead) or a bad one."""
    try:
        with open(path, encoding="utf-8") as handle:
            token = handle.read().strip(_GO_SPACE)
    except OSError as exc:
        raise ConsulConfigError(setting, f"cannot read {path}: {exc.strerror}") from exc
    except UnicodeDecodeError:
        raise ConsulConfigError(setting, f"{path} is not UTF-8 text") from None
    if not token:
        raise ConsulConfigError(setting, f"{path} holds no token (it is empty or only whitespace)")
    check_token(token, setting)
    return token


def check_token(token: str | None, setting: str) -> str | None:
    """``token`` (None when empty or None) if a header can carry it, else
    ``ConsulConfigError`` naming ``setting`` and the kind of character, not the value."""
    if not token:
        return None
    problem = token_problem(token)
    if problem is not None:
        raise ConsulConfigError(setting, f"the ACL token {problem} (the value is not shown)")
    return token


def token_problem(token: str) -> str | None:
    """Why ``token`` cannot travel in an HTTP header (None: it can), without its value."""
    if _sendable(token):
        return None
    where = "at its start or end" if _sendable(token.strip()) else "in it"
    if "\r" in token or "\n" in token:
        return f"has a line break (CR or LF) {where}, which an HTTP header cannot carry"
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in token):
        return f"has a control character {where}, which an HTTP header cannot carry"
    if any(c.isspace() for c in token):
        return f"has whitespace {where} (Consul's tokens have none)"
    return f"has a non-ASCII character {where}, which an HTTP header cannot carry reliably"


def _sendable(token: str) -> bool:
    """True for visible ASCII only (0x21-0x7E): every UUID, the common case."""
    return token.isascii() and token.isprintable() and " " not in token
