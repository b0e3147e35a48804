"""The discovery chain as a watched resource: the request to make and what its answer means.

Sans-IO, for the blocking-query watch engine (``consul_discovery.client.watch``): the
engine asks ``request(index, wait)`` what to send, sends it with its own transport
(threaded or asyncio), and hands the status, headers and body to ``interpret``, which
returns the next index and the chain's router, or raises the discovery client's error
for a refusal (403: ``ConsulPermissionError`` naming the permission; other 4xx:
``ConsulQueryError``; 5xx: ``ConsulUnavailableError``, so the engine keeps the last
good router and backs off). ``/v1/discovery-chain/<service>`` takes ``index`` and
``wait`` like every blocking endpoint and answers for any service name, with Consul's
default chain when no config entry names it.

An answer that cannot be read as a chain is not an error for calls: ``interpret``
returns a plain router whose ``problems`` say why (the service is called without its
chain), so a Consul upgrade that changes the format never fails a call.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from consul_discovery.client.chain.decide import ChainRouter, Random, compile_chain, plain_router
from consul_discovery.client.chain.model import Chain
from consul_discovery.client.chain.parse import ChainFormatError, parse_chain
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
    params: Mapping[str, str]
    method: str = "GET"


@dataclass(frozen=True, slots=True)
class ChainAnswer:
    """What one answer says: Consul's index, the chain (None if unreadable), its router."""

    index: int | None
    chain: Chain | None
    router: ChainRouter


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

    def request(self, index: int, wait: float) -> ChainRequest:
        """The request for index ``index`` (0: a plain read) blocking at most ``wait`` s."""
        params: dict[str, str] = {}
        if index > 0:
            params["index"] = str(index)
            params["wait"] = f"{max(1, round(wait * 1000))}ms"
        if self.datacenter:
            params["compile-dc"] = self.datacenter
        return ChainRequest(self.path, params)

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
        index = _index(headers)
        try:
            data: Any = json.loads(text)
            chain = parse_chain(data)
        except (ValueError, ChainFormatError) as exc:
            problem = f"the discovery chain of {self.service!r} is unreadable: {exc}"
            return ChainAnswer(index, None, plain_router(self.service, problem))
        return ChainAnswer(index, chain, compile_chain(chain, random=self.random))


def _index(headers: Mapping[str, str]) -> int | None:
    for name, value in headers.items():
        if name.lower() == INDEX_HEADER.lower():
            try:
                return int(value)
            except (TypeError, ValueError):
                return None
    return None
