"""The discovery chain as a watched resource: the request to make and what its answer means.

Sans-IO, for the blocking-query watch engine: the engine asks ``request(index, wait)``
what to send (the path, and ``index``/``wait`` as for every blocking endpoint), sends it
with its own transport (threaded or asyncio), and reads a 200's body with ``read`` (the
chain and its router); ``same`` says whether a new answer changes anything. On its own
(before the engine's shared error mapping takes it over) ``interpret`` also maps a
refusal to the discovery client's errors (403: ``ConsulPermissionError`` naming the
permission; other 4xx: ``ConsulQueryError``; 5xx: ``ConsulUnavailableError``, so a
watch keeps the last good router and backs off). The endpoint answers for any service
name, with Consul's default chain when no config entry names it.

An answer that cannot be read as a chain is not an error for calls: ``interpret``
returns a plain router whose ``problems`` say why (the service is called without its
chain), so a Consul upgrade that changes the format never fails a call.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import quote

from consul_discovery.client.chain.decide import ChainRouter, Random, compile_chain, plain_router
from consul_discovery.client.chain.model import Chain
from consul_discovery.client.chain.parse import parse_chain
from consul_discovery.client.chain.reading import ChainFormatError
from consul_discovery.client.errors import (
    ConsulPermissionError,
    ConsulQueryError,
    ConsulUnavailableError,
)
from consul_discovery.connection import acl_denial

INDEX_HEADER = "X-Consul-Index"


@dataclass(frozen=True, slots=True)
class ChainRequest:
    """One GET to make: a path under the agent's base URL and its query parameters."""

    path: str
    params: tuple[tuple[str, str], ...] = ()
    method: str = "GET"


@dataclass(frozen=True, slots=True)
class ChainAnswer:
    """What one answer says: Consul's index, the chain (None if unreadable), its router."""

    index: int | None
    chain: Chain | None
    router: ChainRouter

    def same(self, other: ChainAnswer) -> bool:
        """True when ``other`` routes exactly as this one (same chain, same problems)."""
        return self.chain == other.chain and self.router.problems == other.router.problems


@dataclass(frozen=True, slots=True)
class DiscoveryChainQuery:
    """The watched resource ``/v1/discovery-chain/<service>`` (no I/O).

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

    def request(self, index: int, wait: float) -> ChainRequest:
        """The request for index ``index`` (0: a plain read) blocking at most ``wait`` s."""
        blocking: tuple[tuple[str, str], ...] = ()
        if index > 0:
            blocking = (("index", str(index)), ("wait", f"{max(1, round(wait * 1000))}ms"))
        return ChainRequest(self.path, blocking + self.params)

    def read(self, index: int | None, body: bytes | str) -> ChainAnswer:
        """A 200's body as a ChainAnswer; an unreadable one gives a plain router saying why."""
        try:
            chain = parse_chain(json.loads(body))
        except (ValueError, ChainFormatError) as exc:
            problem = f"the discovery chain of {self.service!r} is unreadable: {exc}"
            return ChainAnswer(index, None, plain_router(self.service, problem))
        return ChainAnswer(index, chain, compile_chain(chain, random=self.random))

    def interpret(self, status: int, headers: Mapping[str, str], body: bytes | str) -> ChainAnswer:
        """The answer's index and router; raises the client's error for a refusal."""
        text = body.decode("utf-8", "replace") if isinstance(body, bytes) else body
        call = f"read the discovery chain of {self.service!r}"
        if status == 403:
            raise ConsulPermissionError(str(acl_denial(text, call)))
        if status >= 500:
            raise ConsulUnavailableError(f"Consul could not {call}: {status} {text.strip()[:200]}")
        if status != 200:
            raise ConsulQueryError(f"Consul refused to {call}: {status} {text.strip()[:200]}")
        return self.read(_index(headers), text)


def _index(headers: Mapping[str, str]) -> int | None:
    for name, value in headers.items():
        if name.lower() == INDEX_HEADER.lower():
            try:
                return int(value)
            except (TypeError, ValueError):
                return None
    return None
