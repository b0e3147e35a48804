"""Host and port spelling: the one place that knows IPv6 literals need brackets, and
what a ``CONSUL_HTTP_ADDR`` means.

The meaning is the ``consul`` CLI's (its Go ``api`` package), checked against the real
binary in ``tests/consul_connection/test_cli_addresses.py``:

- ``host:port``, ``[v6]:port``, ``http://host:port``, ``https://host:port``;
- no scheme: ``http`` (or ``https`` with ``CONSUL_HTTP_SSL=true``);
- **no port: the scheme's port, 80 or 443, not the agent's 8500** (the CLI builds the
  URL ``http://localhost/v1/...`` from ``CONSUL_HTTP_ADDR=localhost``);
- any other scheme is an error (the CLI: "Unknown protocol scheme"); ``unix://`` sockets,
  which the CLI supports, are refused here with a message saying so.

Where the CLI would fail only when it connects (a space or other character no host name
can carry, a user name, a path), the address is refused at parse time, naming what is
wrong.
"""

from __future__ import annotations

import ipaddress
import re
import urllib.parse

#: The port a scheme means when an address names none (the CLI's, from the URL).
SCHEME_PORTS = {"http": 80, "https": 443}

# Letters, digits, hyphens and underscores in dot-separated labels (underscores: some
# container and internal host names carry them, and the Go resolver accepts them).
_HOST_NAME = re.compile(r"[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?")
# Everything up to an address's last '@' (after its scheme): a user name and password.
_USER_INFO = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*://)?.*@", re.DOTALL)


def shown_address(address: str) -> str:
    """``address`` as an error may quote it: a user name and password left out."""
    return _USER_INFO.sub(r"\1<user info not shown>@", address)


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


def split_address(address: str, *, default_scheme: str = "http") -> tuple[str, str, int | None]:
    """``(scheme, host, port or None)``: ``parse_address`` before the default port.

    Raises ValueError naming what is wrong.
    """
    text = address.strip()
    if not text:
        raise ValueError("empty Consul address")
    address = shown_address(address)  # only quoted from here on: never a password
    scheme, sep, rest = text.partition("://")
    if not sep:
        scheme, rest = default_scheme, text
    scheme = scheme.lower()
    if scheme == "unix":
        raise ValueError(
            f"invalid Consul address {address!r}: unix sockets are not supported here "
            "(the consul CLI takes them); give the agent's host:port"
        )
    if scheme not in SCHEME_PORTS:
        raise ValueError(
            f"invalid Consul address {address!r}: unknown scheme {scheme!r} (http or https)"
        )
    try:
        parsed = urllib.parse.urlsplit("//" + rest)
    except ValueError:  # urllib's "Invalid IPv6 URL" names neither the value nor the fix
        raise ValueError(
            f"invalid Consul address {address!r}: an unbalanced '[' or ']' "
            "(an IPv6 address is written [addr]:port)"
        ) from None
    if parsed.path not in ("", "/") or parsed.query or parsed.fragment:
        raise ValueError(f"invalid Consul address {address!r}: expected host:port, no path")
    if "@" in parsed.netloc:
        raise ValueError(f"invalid Consul address {address!r}: no user name or password here")
    try:
        port = parsed.port
    except ValueError:
        raise ValueError(
            f"invalid Consul address {address!r}: the port must be a number 1-65535"
        ) from None
    if port == 0:
        raise ValueError(f"invalid Consul address {address!r}: the port must be 1-65535")
    host = parsed.hostname or ""
    _check_host(address, host, bracketed=parsed.netloc.startswith("["))
    return scheme, host, port


def parse_address(address: str, *, default_scheme: str = "http") -> tuple[str, str, int]:
    """``(scheme, host, port)`` from ``host:port``, ``http(s)://host[:port]`` or ``[v6]:port``.

    As the consul CLI reads ``CONSUL_HTTP_ADDR``: a missing scheme is ``default_scheme``;
    a missing port is the scheme's (80 for http, 443 for https), not 8500.
    Raises ValueError naming what is wrong.
    """
    scheme, host, port = split_address(address, default_scheme=default_scheme)
    return scheme, host, SCHEME_PORTS[scheme] if port is None else port


def _check_host(address: str, host: str, *, bracketed: bool) -> None:
    if not host:
        raise ValueError(f"invalid Consul address {address!r}: no host")
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        ip = None
    if bracketed:
        if ip is None or ip.version != 6:
            raise ValueError(f"invalid Consul address {address!r}: [{host}] is not an IPv6 address")
        return
    if ip is not None:
        return
    labels = host.removesuffix(".").split(".")
    for label in labels:
        if not _HOST_NAME.fullmatch(label):
            bad = sorted({c for c in label if not (c.isascii() and (c.isalnum() or c in "-_"))})
            what = (
                f"the character(s) {' '.join(repr(c) for c in bad)}"
                if bad
                else "an empty or over-long label, or a leading or trailing hyphen"
            )
            raise ValueError(
                f"invalid Consul address {address!r}: the host {host!r} has {what}, "
                "which no host name can carry"
            )
