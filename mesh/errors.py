"""The mesh package's errors: one small tree, every message naming what is wrong.

``MeshError`` is the root. Consul's refusals and outages while fetching the identity or
the intentions are ``MeshPermissionError`` (names the ACL permission the token lacks),
``MeshQueryError`` (another 4xx) and ``MeshUnavailableError`` (unreachable, 5xx;
``MeshRateLimitedError`` for a 429). A peer
whose certificate carries no usable SPIFFE ID is ``PeerIdentityError``; a server that
presents another service's identity fails the TLS handshake with
``ServerIdentityMismatch``, an ``ssl.SSLCertVerificationError``, so that requests, urllib3
and httpx treat it as the certificate failure it is. No message carries a token, a
private key or a certificate body.
"""

from __future__ import annotations

import ssl

from consul_discovery.connection.throttle import RateLimited


class MeshError(Exception):
    """Root of every error the mesh package raises."""


class MeshConfigError(MeshError, ValueError):
    """A mesh setting is invalid; ``setting`` names it."""

    def __init__(self, setting: str, problem: str) -> None:
        self.setting = setting
        self.problem = problem
        super().__init__(f"{setting}: {problem}")


class MeshQueryError(MeshError):
    """Consul answered a mesh call with a refusal (a 4xx other than an ACL denial)."""


class MeshPermissionError(MeshQueryError):
    """Consul's ACLs refused a mesh call; ``permission`` is the one the token lacks."""

    def __init__(self, message: str, permission: str | None = None) -> None:
        self.permission = permission
        super().__init__(message)


class MeshUnavailableError(MeshError):
    """The agent could not be reached or failed (connection error, timeout, 5xx)."""


class MeshRateLimitedError(MeshUnavailableError, RateLimited):
    """The agent answered 429 (it protects itself): back off, what is in force stays."""


class IdentityNotReady(MeshError):
    """No leaf certificate and CA roots yet (the first fetch has not succeeded)."""


class PeerIdentityError(MeshError):
    """A peer certificate carries no SPIFFE service ID we can use."""


class ServerIdentityMismatch(ssl.SSLCertVerificationError):
    """The server's certificate chains to our roots but names another service.

    Raised from the TLS handshake of a mesh client connection (so the connection is
    closed before a byte of the request is sent).
    """

    def __init__(self, expected: str, got: str | None) -> None:
        self.expected = expected
        self.got = got
        shown = got if got is not None else "no SPIFFE service ID"
        super().__init__(1, f"mesh server identity mismatch: expected {expected}, got {shown}")
