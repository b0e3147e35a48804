"""consul_discovery.mesh: a service mesh without sidecars, on Consul Connect.

What it owns (README.md in this folder has the details):

- a service's Connect **identity**: its leaf certificate and the CA roots from its own
  agent, kept fresh with blocking queries (``ServiceIdentity``);
- **mTLS contexts** that rotate under live servers and clients (``ServerTLS``,
  ``ClientTLS``), keys never on disk but for one call in a private 0600 file;
- **SPIFFE ID** checks (``SpiffeId``): a server must name the target service;
- **intention decisions** (``Authorizer``): L4 through the agent's authorize endpoint,
  cached and invalidated by a blocking query, L7 evaluated in-process;
- the server adapters: gunicorn (``consul_discovery.mesh.gunicorn_conf``), uvicorn
  (``consul_discovery.mesh.uvicorn``), WSGI/ASGI middleware, and a requests adapter
  for callers (``MeshAdapter``).

The registry and the discovery client use it; it imports neither's internals.
"""

from consul_discovery.mesh.authorizer import Authorizer, Decision
from consul_discovery.mesh.clients import MeshAdapter
from consul_discovery.mesh.errors import (
    IdentityNotReady,
    MeshConfigError,
    MeshError,
    MeshPermissionError,
    MeshQueryError,
    MeshUnavailableError,
    PeerIdentityError,
    ServerIdentityMismatch,
)
from consul_discovery.mesh.guard import PEER_KEY, Guard
from consul_discovery.mesh.identity import CaRoots, Leaf
from consul_discovery.mesh.l7 import RequestView
from consul_discovery.mesh.rotation import ClientTLS, ServerTLS
from consul_discovery.mesh.runtime import MeshService
from consul_discovery.mesh.service_identity import ServiceIdentity
from consul_discovery.mesh.spiffe import SpiffeId

__all__ = [
    "PEER_KEY",
    "Authorizer",
    "CaRoots",
    "ClientTLS",
    "Decision",
    "Guard",
    "IdentityNotReady",
    "Leaf",
    "MeshAdapter",
    "MeshConfigError",
    "MeshError",
    "MeshPermissionError",
    "MeshQueryError",
    "MeshService",
    "MeshUnavailableError",
    "PeerIdentityError",
    "RequestView",
    "ServerIdentityMismatch",
    "ServerTLS",
    "ServiceIdentity",
    "SpiffeId",
]
