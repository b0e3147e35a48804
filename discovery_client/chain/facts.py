"""Which services have a discovery chain worth watching, and the agent's zone: one watch.

Consul's default chain (no ``service-router``, ``service-splitter`` or
``service-resolver`` entry names the service) routes exactly as the plain service, so a
client watches ``/v1/discovery-chain/<service>`` only for the services some entry names.
It learns which ones from **one** blocking query per process, whatever the number of
services it calls: ``/v1/config/service-resolver`` blocks on Consul's whole config-entry
table (``ConfigEntry.List`` watches the table's index: any entry written or deleted, of
any kind, ends the wait), and each answer that moved is followed by two plain reads,
``/v1/config/service-router`` and ``/v1/config/service-splitter``. The names of all
three kinds are the services with a chain. A write that lands between the three reads
is not lost: the next poll's index is below the table's, so it answers at once.

The first poll also reads the agent's ``locality`` (``/v1/agent/self``,
``DebugConfig.Locality``): the zone the client prefers (``consul_discovery.client.
locality``). A token without ``agent:read`` gets no zone (not an error).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from consul_discovery.client.errors import ConsulQueryError
from consul_discovery.client.health_query import DISCOVERY_ERRORS, Consistency
from consul_discovery.connection.exchange import Exchange, Request, Response
from consul_discovery.connection.refusals import answer_error
from consul_discovery.connection.resource import Answer, Poll, Resource

log = logging.getLogger(__name__)

#: The config entry kinds that make a chain other than Consul's default one.
CHAIN_KINDS = ("service-resolver", "service-router", "service-splitter")


@dataclass(frozen=True, slots=True)
class RoutingFacts:
    """What one poll learned: the services some chain entry names, and the agent's zone
    (None: not known; "" : the agent has no locality or may not be asked)."""

    chained: frozenset[str]
    zone: str | None = None


class RoutingFactsWatch(Resource[RoutingFacts, RoutingFacts]):
    """The services with chain entries (and the agent's zone) as a watched resource."""

    def __init__(
        self,
        address: str,
        *,
        request_timeout: float = 10.0,
        consistency: Consistency = "default",
        read_zone: bool = True,
    ) -> None:
        super().__init__(
            "config entries", "the service-router/-splitter/-resolver entries",
            address, DISCOVERY_ERRORS,
        )  # fmt: skip
        self._request_timeout = request_timeout
        self._consistency: tuple[tuple[str, str], ...] = (
            ((consistency, ""),) if consistency != "default" else ()
        )
        # The agent's zone once read (None: still to read); written by the driver only.
        self._zone: str | None = None if read_zone else ""

    def exchange(self, poll: Poll) -> Exchange[Answer[RoutingFacts]]:
        """The resolvers (blocking on the whole config-entry table), then the routers and
        splitters (plain reads), then, once, the agent's locality."""
        first, *rest = CHAIN_KINDS
        params = poll.params() + self._consistency
        response = yield Request(f"/v1/config/{first}", params, poll.timeout(self._request_timeout))
        names = set(self._names(response, first))
        for kind in rest:
            answer = yield Request(f"/v1/config/{kind}", self._consistency, self._request_timeout)
            names.update(self._names(answer, kind))
        if self._zone is None:
            agent = yield Request("/v1/agent/self", (), self._request_timeout)
            self._zone = _zone_of(agent)
        return Answer(response.index, RoutingFacts(frozenset(names), self._zone))

    def _names(self, response: Response, kind: str) -> list[str]:
        error = answer_error(response, f"the {kind} entries", self.address, self.errors)
        if error is not None:
            raise error
        entries = response.json() or []
        if not isinstance(entries, list):
            raise ConsulQueryError(f"Consul at {self.address} answered {kind} with no list")
        return [str(e["Name"]) for e in entries if isinstance(e, dict) and e.get("Name")]

    def summary(self, value: RoutingFacts) -> str:
        """For the outage log line."""
        return f"the {len(value.chained)} service(s) with chain entries it knew"


def _zone_of(response: Response) -> str:
    """The zone in ``/v1/agent/self``'s answer ("" when none, or when it may not be read)."""
    if response.status != 200:
        log.debug("no zone from the agent (%d): set DISCOVERY_ZONE to give one", response.status)
        return ""
    try:
        locality = (response.json().get("DebugConfig") or {}).get("Locality") or {}
        return str(locality.get("Zone") or "")
    except (AttributeError, ValueError):
        return ""
