"""A service's Connect identity as values: its leaf certificate and the CA roots.

``Leaf`` and ``CaRoots`` are frozen values built from the agent's JSON
(``/v1/agent/connect/ca/leaf/<service>``, ``/v1/agent/connect/ca/roots``); a renewal or
a rotation is a new value, never a change to an old one. The private key lives in a
``PrivateKeyPem``, whose repr, str and pickling never show it: only ``reveal()`` does,
and only the module that loads it into an ``ssl.SSLContext`` calls that.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, NoReturn

from consul_discovery.mesh.errors import MeshQueryError, PeerIdentityError
from consul_discovery.mesh.spiffe import SpiffeId


class PrivateKeyPem:
    """A PEM private key that never shows itself in a repr, a str, a log or a pickle."""

    __slots__ = ("_pem",)

    def __init__(self, pem: str) -> None:
        if "PRIVATE KEY" not in pem:
            raise MeshQueryError("the agent's leaf answer has no PEM private key")
        self._pem = pem

    def reveal(self) -> str:
        """The PEM text (for loading into an SSLContext; never log it)."""
        return self._pem

    def __repr__(self) -> str:
        return "PrivateKeyPem(<redacted>)"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, PrivateKeyPem) and other._pem == self._pem

    def __hash__(self) -> int:
        return hash(self._pem)

    def __reduce__(self) -> NoReturn:
        raise TypeError("a private key is not pickled")


def _time(value: Any, what: str) -> datetime:
    try:
        return datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        raise MeshQueryError(f"the agent's {what} {value!r} is not a timestamp") from None


@dataclass(frozen=True, slots=True)
class Leaf:
    """The service's current leaf certificate (with the chain Consul sends) and its key."""

    service: str
    spiffe_id: SpiffeId
    serial: str
    cert_pem: str = field(repr=False)
    private_key: PrivateKeyPem = field(repr=False)
    valid_after: datetime
    valid_before: datetime
    modify_index: int = 0

    @classmethod
    def from_json(cls, body: Mapping[str, Any]) -> Leaf:
        """Build from the agent's leaf answer (a MeshQueryError if it is malformed)."""
        try:
            uri = str(body["ServiceURI"])
            cert = str(body["CertPEM"])
            key = PrivateKeyPem(str(body["PrivateKeyPEM"]))
            leaf = cls(
                service=str(body["Service"]),
                spiffe_id=SpiffeId.parse(uri),
                serial=str(body["SerialNumber"]),
                cert_pem=cert,
                private_key=key,
                valid_after=_time(body["ValidAfter"], "ValidAfter"),
                valid_before=_time(body["ValidBefore"], "ValidBefore"),
                modify_index=int(body.get("ModifyIndex") or 0),
            )
        except (KeyError, TypeError, ValueError, PeerIdentityError) as exc:
            raise MeshQueryError(
                f"the agent's leaf certificate answer is malformed: {exc}"
            ) from None
        if "BEGIN CERTIFICATE" not in cert:
            raise MeshQueryError("the agent's leaf answer has no PEM certificate")
        return leaf


@dataclass(frozen=True, slots=True)
class CaRoot:
    """One CA root Consul trusts (the active one signs new leaves)."""

    id: str
    root_pem: str = field(repr=False)
    intermediate_pems: tuple[str, ...] = field(default=(), repr=False)
    active: bool = False


@dataclass(frozen=True, slots=True)
class CaRoots:
    """Every CA root of the trust domain; during a rotation, the old and the new."""

    trust_domain: str
    active_root_id: str
    roots: tuple[CaRoot, ...]

    @classmethod
    def from_json(cls, body: Mapping[str, Any]) -> CaRoots:
        """Build from the agent's roots answer (a MeshQueryError if it is malformed)."""
        try:
            roots = tuple(
                CaRoot(
                    id=str(root["ID"]),
                    root_pem=str(root["RootCert"]),
                    intermediate_pems=tuple(str(c) for c in root.get("IntermediateCerts") or ()),
                    active=bool(root.get("Active")),
                )
                for root in body.get("Roots") or ()
            )
            value = cls(str(body["TrustDomain"]), str(body["ActiveRootID"]), roots)
        except (KeyError, TypeError, AttributeError) as exc:
            raise MeshQueryError(f"the agent's CA roots answer is malformed: {exc}") from None
        if not roots:
            raise MeshQueryError("the agent returned no CA roots (is Connect enabled?)")
        return value

    @property
    def bundle_pem(self) -> str:
        """Every root certificate, concatenated: the trust store of a mesh TLS context."""
        return "\n".join(root.root_pem.strip() for root in self.roots) + "\n"
