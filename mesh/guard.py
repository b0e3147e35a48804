"""``Guard``: the one request-path check that the WSGI and ASGI adapters share.

Given the caller's identity (read once per connection from its verified certificate)
and a view of the request, it returns the ``Decision`` and, for a denial, records it
(metric, one log line per caller) and builds the 403. A connection whose certificate
names no Connect service gets the 403 too (its TLS handshake already proved the chain).
"""

from __future__ import annotations

from consul_discovery.mesh.authorizer import Authorizer, Decision
from consul_discovery.mesh.denials import Denials, forbidden_body
from consul_discovery.mesh.errors import PeerIdentityError
from consul_discovery.mesh.l7 import RequestView
from consul_discovery.mesh.spiffe import SpiffeId

#: Extension key (ASGI scope["extensions"], WSGI environ) holding the caller's SpiffeId.
PEER_KEY = "consul_discovery.mesh.peer"

Peer = SpiffeId | PeerIdentityError

FORBIDDEN_HEADERS = [("Content-Type", "application/json")]


class Guard:
    """Authorizes requests for one destination and turns denials into 403s."""

    def __init__(self, authorizer: Authorizer, denials: Denials | None = None) -> None:
        self.authorizer = authorizer
        self.denials = denials or Denials(authorizer.destination)

    @property
    def destination(self) -> str:
        """The service this guard protects."""
        return self.authorizer.destination

    def cached(self, peer: Peer, request: RequestView) -> Decision | None:
        """The decision without I/O (None: ``check`` must ask the agent, off the event loop)."""
        if isinstance(peer, PeerIdentityError):
            return self._refused(peer)
        decision = self.authorizer.cached(peer, request)
        if decision is not None and not decision.allowed:
            self._record(decision)
        return decision

    def check(self, peer: Peer, request: RequestView) -> Decision:
        """The decision for one request (one agent call for a caller never seen)."""
        if isinstance(peer, PeerIdentityError):
            return self._refused(peer)
        decision = self.authorizer.decide(peer, request)
        if not decision.allowed:
            self._record(decision)
        return decision

    def forbidden(self, decision: Decision) -> bytes:
        """The 403 body for a denial."""
        return forbidden_body(decision, self.destination)

    def _refused(self, error: PeerIdentityError) -> Decision:
        decision = Decision(False, f"no Connect service identity: {error}", "identity", "")
        self._record(decision)
        return decision

    def _record(self, decision: Decision) -> None:
        intentions = self.authorizer.intentions
        self.denials.record(decision, intentions.index if intentions else 0)
