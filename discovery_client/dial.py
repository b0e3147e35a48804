"""Where and how to connect to one endpoint: the one decision all three shells read.

A ``Dial`` is made once per instance when a Balancer adopts a new set (never per call):
scheme, host, port, the base URL the requests shell joins the path to, the ``Host``
header value the httpx shells send, and the TLS context to connect with. A plain target's
endpoints are plain HTTP (``ssl_context`` None). A Connect target's are dialled over
mTLS (``consul_discovery.client.connect``): ``https``, with the caller's leaf and the
mesh's CA roots as the SSL context and a SPIFFE URI check of the server instead of a
hostname check; the Balancer re-dials (``Balancer.redial``) when the caller's identity
changes, and the shells' per-instance pools are keyed by the context too, so a rotation
opens new connections. Until the identity is in force a Connect Dial is ``https``
without a context (``tls`` set): the shells refuse to send it (``connect.unsendable``),
as they refuse a plain target's Dial of a Connect-native instance (``refusal``). Shells
never build an instance's address themselves.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass, field
from typing import Any

from consul_discovery.client.instance import Instance
from consul_discovery.connection.addresses import bracket_host

_DEFAULT_PORTS = {"http": 80, "https": 443}


@dataclass(frozen=True, slots=True)
class Dial:
    """How to reach one instance: ``scheme://host:port``, with TLS when ``ssl_context``."""

    scheme: str
    host: str
    port: int
    base_url: str  # scheme://host:port (an IPv6 literal bracketed), no trailing slash
    authority: str  # the Host header: host[:port] (default port left out)
    url_port: int | None  # the port as a URL spells it: None for the scheme's default
    ssl_context: ssl.SSLContext | None = None
    # Why a plain call may not use this endpoint (a Connect-native instance serves mTLS
    # only): such a Dial is ``https`` without a context, which the shells refuse.
    refusal: str | None = None
    # The httpx shells' ``Host`` entry, encoded once (never per call).
    host_entry: tuple[bytes, bytes, bytes] = field(init=False, compare=False, repr=False)
    # The shells' memo of what they derive from this Dial per call shape (the httpx
    # shells: an instance URL per path); any thread (dict operations are atomic).
    memo: dict[Any, Any] = field(init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "host_entry", (b"Host", b"host", self.authority.encode("ascii")))
        object.__setattr__(self, "memo", {})

    @classmethod
    def of(
        cls, instance: Instance, ssl_context: ssl.SSLContext | None = None, *, tls: bool = False
    ) -> Dial:
        """The Dial of ``instance``: plain HTTP, or HTTPS with ``ssl_context`` (``tls``:
        HTTPS even before a context exists, for a Connect target). A Connect-native
        instance for a plain target is a refusal: the server would drop a plain request
        (after its TLS handshake fails), which only says "connection aborted"."""
        refusal = None
        if instance.connect_native and not tls and ssl_context is None:
            tls = True
            refusal = (
                f"{instance.service} instance {instance.id} is Connect-native (serves mTLS "
                f"only): call {instance.service!r} with ServiceConfig(connect=True)"
            )
        scheme = "https" if tls or ssl_context is not None else "http"
        host = bracket_host(instance.address)
        port = instance.port
        default = port == _DEFAULT_PORTS[scheme]
        authority = host if default else f"{host}:{port}"
        return cls(scheme, instance.address, port, f"{scheme}://{host}:{port}", authority,
                   None if default else port, ssl_context, refusal)  # fmt: skip

    def __repr__(self) -> str:
        """The base URL (and whether TLS), never the context's contents."""
        return f"Dial({self.base_url}{', tls' if self.ssl_context is not None else ''})"
