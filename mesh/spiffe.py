"""SPIFFE service IDs as Consul writes them, and reading one from a peer certificate.

A Connect leaf certificate carries exactly one URI SAN naming the service:

    spiffe://<trust-domain>/ns/<namespace>/dc/<datacenter>/svc/<service>
    spiffe://<trust-domain>/ap/<partition>/ns/<namespace>/dc/<datacenter>/svc/<service>

(the second form is Consul Enterprise's, with admin partitions). Consul's own client
(``connect/tls.go``, ``verifyServerCertMatchesURI``) compares the first URI SAN of the
leaf with the expected one case-insensitively and ignores the trust domain, relying on
the chain to the CA roots for that; ``SpiffeId.same_service`` is that rule.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from consul_discovery.mesh.errors import PeerIdentityError

DEFAULT_NAMESPACE = "default"
DEFAULT_PARTITION = "default"

_PATH = re.compile(
    r"^(?:/ap/(?P<partition>[^/]+))?/ns/(?P<namespace>[^/]+)/dc/(?P<datacenter>[^/]+)"
    r"/svc/(?P<service>[^/]+)$"
)


@dataclass(frozen=True, slots=True)
class SpiffeId:
    """One Connect service identity (the URI SAN of its leaf certificate)."""

    trust_domain: str
    namespace: str
    datacenter: str
    service: str
    partition: str | None = None  # None: the CE form without /ap/

    @classmethod
    def parse(cls, uri: str) -> SpiffeId:
        """Read ``spiffe://td/[ap/<p>/]ns/<ns>/dc/<dc>/svc/<name>`` (else PeerIdentityError)."""
        if not isinstance(uri, str) or not uri.lower().startswith("spiffe://"):
            raise PeerIdentityError(f"{uri!r} is not a SPIFFE URI")
        rest = uri[len("spiffe://") :]
        host, slash, path = rest.partition("/")
        match = _PATH.match(slash + path) if host else None
        if match is None:
            raise PeerIdentityError(f"{uri!r} is not a Consul service identity")
        return cls(
            trust_domain=host,
            namespace=match["namespace"],
            datacenter=match["datacenter"],
            service=match["service"],
            partition=match["partition"],
        )

    @classmethod
    def for_service(
        cls, trust_domain: str, datacenter: str, service: str, namespace: str = DEFAULT_NAMESPACE
    ) -> SpiffeId:
        """The ID Consul gives ``service`` in ``datacenter`` under ``trust_domain``."""
        return cls(trust_domain, namespace, datacenter, service)

    @property
    def uri(self) -> str:
        """The URI as it appears in the certificate."""
        ap = f"/ap/{self.partition}" if self.partition else ""
        return (
            f"spiffe://{self.trust_domain}{ap}/ns/{self.namespace}"
            f"/dc/{self.datacenter}/svc/{self.service}"
        )

    def same_service(self, other: SpiffeId) -> bool:
        """Consul's client rule: equal but for the trust domain (case-insensitive)."""
        return (
            self.namespace.lower() == other.namespace.lower()
            and self.datacenter.lower() == other.datacenter.lower()
            and self.service.lower() == other.service.lower()
            and (self.partition or DEFAULT_PARTITION).lower()
            == (other.partition or DEFAULT_PARTITION).lower()
        )

    def __str__(self) -> str:
        return self.uri


def uri_sans(peercert: Mapping[str, Any] | None) -> list[str]:
    """The URI SANs of a certificate as ``ssl.SSLSocket.getpeercert()`` returns it."""
    if not peercert:
        return []
    return [value for kind, value in peercert.get("subjectAltName", ()) if kind == "URI"]


def peer_spiffe_id(peercert: Mapping[str, Any] | None) -> SpiffeId:
    """The service identity in a verified peer certificate (its first URI SAN)."""
    uris = uri_sans(peercert)
    if not uris:
        raise PeerIdentityError("the peer certificate has no URI SAN (not a Connect identity)")
    return SpiffeId.parse(uris[0])
