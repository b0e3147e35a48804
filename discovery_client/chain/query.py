"""The discovery chain as a watched resource of the shared blocking-query engine.

``DiscoveryChainQuery`` is what to ask (``/v1/discovery-chain/<service>``, compiled for
a datacenter) and what a 200's body means (``read``: the chain and its router);
``ChainWatch`` is that query as a ``consul_connection.resource.Resource``, so a chain is
watched by the same rules as a service's health (index, pacing, backoff, a cached first
error, stale-on-error) on the same loop and transport, and its refusals are mapped by
the one shared mapping (``consul_connection.refusals``). The endpoint answers for any
service name, with Consul's default chain when no config entry names it.

An answer that cannot be read as a chain is not an error for calls: ``read`` returns a
plain router whose ``problems`` say why (the service is called without its chain), so a
Consul upgrade that changes the format never fails a call.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from urllib.parse import quote

from consul_discovery.client.chain.decide import ChainRouter, Random, compile_chain, plain_router
from consul_discovery.client.chain.model import Chain
from consul_discovery.client.chain.parse import parse_chain
from consul_discovery.client.chain.reading import ChainFormatError
from consul_discovery.client.health_query import DISCOVERY_ERRORS
from consul_discovery.connection.exchange import Request, Response
from consul_discovery.connection.resource import Poll, Resource


@dataclass(frozen=True, slots=True)
class ChainAnswer:
    """What one answer says: Consul's index, the chain (None if unreadable), its router,
    and the body it was read from (what a gunicorn master relays to its workers)."""

    index: int | None
    chain: Chain | None
    router: ChainRouter
    body: str = ""

    def same(self, other: ChainAnswer) -> bool:
        """True when ``other`` routes exactly as this one (same chain, same problems)."""
        return self.chain == other.chain and self.router.problems == other.router.problems


@dataclass(frozen=True, slots=True)
class DiscoveryChainQuery:
    """The endpoint ``/v1/discovery-chain/<service>`` and what its answers mean (no I/O).

    ``datacenter`` asks the chain as compiled for that datacenter (``compile-dc``;
    None: the agent's own). ``random`` is the source of split draws handed to every
    router built from an answer.
    """

    service: str
    random: Random
    datacenter: str | None = None

    def __post_init__(self) -> None:
        if not self.service:
            raise ValueError("DiscoveryChainQuery needs a service name")

    @property
    def path(self) -> str:
        """The endpoint's path (the service name escaped)."""
        return f"/v1/discovery-chain/{quote(self.service, safe='')}"

    @property
    def params(self) -> tuple[tuple[str, str], ...]:
        """The query parameters besides the blocking ones (``compile-dc``)."""
        return (("compile-dc", self.datacenter),) if self.datacenter else ()

    def read(self, index: int | None, body: bytes | str) -> ChainAnswer:
        """A 200's body as a ChainAnswer; an unreadable one gives a plain router saying why."""
        text = body.decode("utf-8", "replace") if isinstance(body, bytes) else body
        try:
            chain = parse_chain(json.loads(text))
        except (ValueError, ChainFormatError) as exc:
            problem = f"the discovery chain of {self.service!r} is unreadable: {exc}"
            return ChainAnswer(index, None, plain_router(self.service, problem), text)
        return ChainAnswer(index, chain, compile_chain(chain, random=self.random), text)


class ChainWatch(Resource[ChainAnswer, ChainAnswer]):
    """One service's compiled chain as a watched resource (no I/O).

    A refusal raises the discovery client's errors (403: ``ConsulPermissionError``
    naming the permission; 5xx and no answer: ``ConsulUnavailableError``, so the watch
    keeps the last good chain and backs off); only a change of the chain or of its
    problems is a change.
    """

    def __init__(
        self, query: DiscoveryChainQuery, address: str, request_timeout: float = 10.0
    ) -> None:
        what = f"the discovery chain of {query.service!r}"
        super().__init__(f"chain {query.service}", what, address, DISCOVERY_ERRORS)
        self.query = query
        self._request_timeout = request_timeout

    def request(self, poll: Poll) -> Request:
        """The chain at ``poll``'s index (0: a plain read), blocking for its wait."""
        return Request(
            self.query.path,
            poll.params() + self.query.params,
            poll.timeout(self._request_timeout),
        )

    def decode(self, response: Response) -> ChainAnswer:
        """The answer's chain and router."""
        return self.query.read(response.index, response.body)

    def same(self, old: ChainAnswer, new: ChainAnswer) -> bool:
        """Same chain, same problems."""
        return old.same(new)

    def summary(self, value: ChainAnswer) -> str:
        """For the outage log line."""
        return "its last discovery chain"
