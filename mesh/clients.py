"""Calling a mesh service with requests: an adapter that presents the leaf and checks the server.

The transport-neutral pieces are ``rotation.ClientTLS.context_for(service)`` (an
``ssl.SSLContext`` with our leaf, the roots and the SPIFFE check of the server, usable
as ``httpx.Client(verify=context)`` / ``httpx.AsyncClient(verify=context)`` and by urllib3)
and ``ClientTLS.generation`` (grows with every new leaf or roots: drop pooled
connections then). ``MeshAdapter`` is both for one target service of a requests
``Session``:

    session.mount("https://", MeshAdapter(identity.client_tls, "web"))
    session.get("https://127.0.0.1:21000/hello")

Its pools reuse keep-alive connections; when the generation changes, it builds a new
pool manager for new requests and closes the old one's idle connections (requests in
flight finish on theirs). Trust comes from the mesh context alone: requests' ``verify``
(the system CA bundle) is never loaded into it.
"""

from __future__ import annotations

import threading
from typing import Any

import requests
from requests.adapters import HTTPAdapter

from consul_discovery.mesh.rotation import ClientTLS


class MeshAdapter(HTTPAdapter):
    """A requests adapter for one mesh service: our leaf out, the server's SPIFFE ID checked."""

    def __init__(
        self, client_tls: ClientTLS, service: str, *, datacenter: str | None = None, **kwargs: Any
    ) -> None:
        self.client_tls = client_tls
        self.service = service
        self.datacenter = datacenter
        self._rotate_lock = threading.Lock()  # one rebuild at a time; no I/O under it
        self._generation = 0  # written under _rotate_lock; read by senders
        super().__init__(**kwargs)

    def init_poolmanager(
        self, connections: int, maxsize: int, block: bool = False, **pool_kwargs: Any
    ) -> None:
        """A pool manager whose connections use the current mesh context."""
        self._generation = self.client_tls.generation
        context = self.client_tls.context_for(self.service, datacenter=self.datacenter)
        pool_kwargs.update(ssl_context=context, assert_hostname=False)
        super().init_poolmanager(connections, maxsize, block, **pool_kwargs)

    def send(
        self, request: requests.PreparedRequest, *args: Any, **kwargs: Any
    ) -> requests.Response:
        """Send on the current generation's pools (rebuilt after a rotation)."""
        if self.client_tls.generation != self._generation:
            self._rotate()
        return super().send(request, *args, **kwargs)

    def cert_verify(self, conn: Any, url: str, verify: Any, cert: Any) -> None:
        """Trust only the mesh roots already in the context (never a CA bundle)."""
        conn.cert_reqs = "CERT_REQUIRED"
        conn.ca_certs = None
        conn.ca_cert_dir = None

    def _rotate(self) -> None:
        with self._rotate_lock:
            if self.client_tls.generation == self._generation:
                return
            old = self.poolmanager
            self.init_poolmanager(
                self._pool_connections, self._pool_maxsize, block=self._pool_block
            )
        old.clear()


def self_probe_session(service: str, identity: Any, timeout: float = 10.0) -> requests.Session:
    """A Session that calls ``service``'s own instances over mesh TLS as ``service`` itself.

    For the gunicorn master's TTL self-probe of ``/health`` (the authorizer lets a
    service's own identity read its health path). ``identity`` is a started
    ``ServiceIdentity`` of ``service`` (e.g. ``shared.lease_identity(service).identity``:
    under gunicorn the workers then reuse it); the session keeps it alive.
    """
    identity.wait_ready(timeout)
    session = requests.Session()
    session.trust_env = False
    session.mount("https://", MeshAdapter(identity.client_tls, service))
    session.mesh_identity = identity  # type: ignore[attr-defined]  # keeps the watches alive
    return session
