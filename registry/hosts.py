"""What can be advertised as an instance's address: one IP address or one host name.

Consul stores ``Address`` as given and callers (and its own HTTP and TCP checks) connect
to ``<address>:<port>``, so ``http://10.0.0.7`` or ``10.0.0.7:8080`` would be
registered as they are and reached by nothing. An address is an IPv4 or IPv6 address
(no brackets), or a host name: dot-separated labels of letters, digits, hyphens (not
first or last) and underscores (container platforms' service names have them, and
their resolvers answer for them), each 1-63 characters, 253 in all.
"""

from __future__ import annotations

import ipaddress
import re

_LABEL = re.compile(r"[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?")


def address_problem(text: str) -> str | None:
    """Why ``text`` is neither an IP address nor a host name, or None when it is one."""
    if not text:
        return "is empty"
    if "://" in text:
        return f"is a URL: give the host only, without '{text.partition('://')[0]}://'"
    if any(c.isspace() for c in text):
        return "has a space: give one IP address or host name"
    if "/" in text:
        return "has a '/': give the host only, without a path"
    if text.startswith("["):
        return "has brackets: give an IPv6 address without them, and no port"
    return _ip_problem(text) if _looks_like_ip(text) else _hostname_problem(text)


def _looks_like_ip(text: str) -> bool:
    if ":" in text:
        return text.count(":") > 1  # IPv6; one colon is host:port
    return all(label.isdigit() for label in text.split("."))


def _ip_problem(text: str) -> str | None:
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        family = "IPv6" if ":" in text else "IPv4"
        return f"is not a valid {family} address"
    if address.is_unspecified:
        return "is a wildcard bind address, not one consumers can reach"
    return None


def _hostname_problem(text: str) -> str | None:
    host, colon, port = text.partition(":")
    if colon:
        return f"has a port: give the host only, without ':{port}'"
    name = host.removesuffix(".")  # a fully qualified name may end with the root's dot
    if len(name) > 253:
        return f"is {len(name)} characters long; a host name has at most 253"
    bad = sorted({c for c in name if not (c.isascii() and (c.isalnum() or c in "-_."))})
    if bad:
        shown = " ".join(repr(c) for c in bad)
        return f"has {shown}: give an IP address or a host name (letters, digits, '-', '.')"
    for label in name.split("."):
        if not _LABEL.fullmatch(label):
            return f"has the label {label!r}: labels are 1-63 characters, no '-' first or last"
    return None
