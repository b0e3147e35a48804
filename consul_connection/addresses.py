"""Host and port spelling: the one place that knows IPv6 literals need brackets."""

from __future__ import annotations

import urllib.parse


def bracket_host(host: str) -> str:
    """``host`` as it must appear before ``:port`` in a URL (IPv6 literals bracketed)."""
    if ":" in host and not host.startswith("["):
        return f"[{host}]"
    return host


def host_port(host: str, port: int) -> str:
    """``host:port``, with an IPv6 literal bracketed (``[::1]:8500``)."""
    return f"{bracket_host(host)}:{port}"


def http_url(host: str, port: int, scheme: str = "http") -> str:
    """``scheme://host:port`` (IPv6 literals bracketed)."""
    return f"{scheme}://{host_port(host, port)}"


def parse_address(address: str, *, default_scheme: str = "http") -> tuple[str, str, int]:
    """``(scheme, host, port)`` from ``host:port``, ``http(s)://host[:port]`` or ``[v6]:port``.

    A missing port is 443 for https and 8500 (the agent's HTTP port) otherwise; a missing
    scheme is ``default_scheme``.
    Raises ValueError naming what is wrong.
    """
    text = address.strip()
    if not text:
        raise ValueError("empty Consul address")
    if "//" not in text:
        text = "//" + text
    parsed = urllib.parse.urlsplit(text)
    scheme = (parsed.scheme or default_scheme).lower()
    if scheme not in ("http", "https"):
        raise ValueError(f"invalid Consul address {address!r}: scheme must be http or https")
    try:
        port = parsed.port
    except ValueError as exc:
        raise ValueError(f"invalid Consul address {address!r}: {exc}") from exc
    if not parsed.hostname:
        raise ValueError(f"invalid Consul address {address!r}: no host")
    if parsed.path not in ("", "/") or parsed.query or parsed.username:
        raise ValueError(f"invalid Consul address {address!r}: expected host:port")
    return scheme, parsed.hostname, port or (443 if scheme == "https" else 8500)
