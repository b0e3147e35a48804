"""Which services have a discovery chain worth watching: one watch per process.

Consul's default chain (no ``service-router``, ``service-splitter`` or
``service-resolver`` entry names the service) routes exactly as the plain service, so a
client watches ``/v1/discovery-chain/<service>`` only for the services some entry names.
It learns which ones from one watch per process, whatever the number of services it
calls, instead of one more long poll per service called (which would double a client's
long polls, and on an HTTP/1.1 agent its connections, when nobody configured anything).

The watch blocks on ``/v1/config/service-resolver`` and, after each answer, reads the
routers and splitters plainly. Measured against Consul 1.22 (a dev agent): a blocking
``/v1/config/<kind>`` wakes 0.3 s after a write of that kind, but a write of another
kind does not end its wait (it returns at the wait's end, with the whole config-entry
table's index, which has moved). So a new resolver is seen at once and a first router
or splitter of a service within the watch's wait (``NAMES_WAIT``, 10 s; three requests
per 10 s per process when idle): one connection (HTTP/1.1) or stream (HTTP/2) per
process. Once a service has a chain, its own chain watch follows every change at once.
"""

from __future__ import annotations

from consul_discovery.client.errors import ConsulQueryError
from consul_discovery.client.health_query import DISCOVERY_ERRORS, Consistency
from consul_discovery.connection.exchange import Exchange, Request, Response
from consul_discovery.connection.refusals import answer_error
from consul_discovery.connection.resource import Answer, Poll, Resource

#: The config entry kinds that make a chain other than Consul's default one.
CHAIN_KINDS = ("service-resolver", "service-router", "service-splitter")

Names = frozenset[str]

#: The longest a first router or splitter of a service goes unseen (seconds).
NAMES_WAIT = 10.0


class ChainNamesWatch(Resource[Names, Names]):
    """The services some resolver, router or splitter entry names (no I/O)."""

    def __init__(
        self,
        address: str,
        *,
        request_timeout: float = 10.0,
        consistency: Consistency = "default",
    ) -> None:
        super().__init__(
            "config entries", "the service-resolver/-router/-splitter entries",
            address, DISCOVERY_ERRORS,
        )  # fmt: skip
        self._request_timeout = request_timeout
        self._consistency: tuple[tuple[str, str], ...] = (
            ((consistency, ""),) if consistency != "default" else ()
        )

    def exchange(self, poll: Poll) -> Exchange[Answer[Names]]:
        """The resolvers (blocking), then the routers and splitters (plain reads)."""
        first, *rest = CHAIN_KINDS
        params = poll.params() + self._consistency
        response = yield Request(f"/v1/config/{first}", params, poll.timeout(self._request_timeout))
        names = set(self._names(response, first))
        for kind in rest:
            answer = yield Request(f"/v1/config/{kind}", self._consistency, self._request_timeout)
            names.update(self._names(answer, kind))
        return Answer(response.index, frozenset(names))

    def _names(self, response: Response, kind: str) -> Names:
        error = answer_error(response, f"the {kind} entries", self.address, self.errors)
        if error is not None:
            raise error
        entries = response.json() or []
        if not isinstance(entries, list):
            raise ConsulQueryError(f"Consul at {self.address} answered {kind} with no list")
        return frozenset(str(e["Name"]) for e in entries if isinstance(e, dict) and e.get("Name"))

    def summary(self, value: Names) -> str:
        """For the outage log line."""
        return f"the {len(value)} service(s) with chain entries it knew"
