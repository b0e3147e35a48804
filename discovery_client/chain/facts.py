"""Which services have a discovery chain worth watching: three watches per process.

Consul's default chain (no ``service-router``, ``service-splitter`` or
``service-resolver`` entry names the service) routes exactly as the plain service, so a
client watches ``/v1/discovery-chain/<service>`` only for the services some entry names.
It learns which ones from one blocking query per entry kind (``/v1/config/<kind>``),
three in all per process whatever the number of services it calls, instead of one more
long poll per service called (which would double a client's long polls when nobody
configured anything).

Measured against Consul 1.22 (a dev agent): a blocking ``/v1/config/<kind>`` wakes
0.3 s after a write of that kind, but a write of another kind does not end its wait (it
returns at the wait's end, 3 s of 3 s), although the index it answers with is the whole
config-entry table's. Hence one watch per kind: each is woken by its own kind (and once,
at once, after another kind's write moved the table's index). Likewise a default chain's
``/v1/discovery-chain/<service>`` blocks through unrelated config writes.
"""

from __future__ import annotations

from consul_discovery.client.errors import ConsulQueryError
from consul_discovery.client.health_query import DISCOVERY_ERRORS, Consistency
from consul_discovery.connection.exchange import Request, Response
from consul_discovery.connection.resource import Poll, Resource

#: The config entry kinds that make a chain other than Consul's default one.
CHAIN_KINDS = ("service-resolver", "service-router", "service-splitter")

Names = frozenset[str]


class EntryNamesWatch(Resource[Names, Names]):
    """The names of one kind's config entries, as a watched resource (no I/O)."""

    def __init__(
        self,
        kind: str,
        address: str,
        *,
        request_timeout: float = 10.0,
        consistency: Consistency = "default",
    ) -> None:
        if kind not in CHAIN_KINDS:
            raise ValueError(f"kind must be one of {CHAIN_KINDS}; got {kind!r}")
        super().__init__(f"config {kind}", f"the {kind} entries", address, DISCOVERY_ERRORS)
        self.kind = kind
        self._request_timeout = request_timeout
        self._consistency: tuple[tuple[str, str], ...] = (
            ((consistency, ""),) if consistency != "default" else ()
        )

    def request(self, poll: Poll) -> Request:
        """The kind's entries at ``poll``'s index, blocking for its wait."""
        return Request(
            f"/v1/config/{self.kind}",
            poll.params() + self._consistency,
            poll.timeout(self._request_timeout),
        )

    def decode(self, response: Response) -> Names:
        """The entries' names."""
        entries = response.json() or []
        if not isinstance(entries, list):
            raise ConsulQueryError(f"Consul at {self.address} answered {self.what} with no list")
        return frozenset(str(e["Name"]) for e in entries if isinstance(e, dict) and e.get("Name"))

    def summary(self, value: Names) -> str:
        """For the outage log line."""
        return f"the {len(value)} {self.kind} name(s) it knew"
