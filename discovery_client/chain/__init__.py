"""Traffic management from Consul's own config: the compiled discovery chain (no I/O).

Consul compiles a service's ``service-router``, ``service-splitter``,
``service-resolver`` and ``service-defaults`` entries into one discovery chain
(``/v1/discovery-chain/<service>``). This package reads it (``parse_chain``), compiles
it once per version into a ``ChainRouter`` (``compile_chain``) and decides per request
(``ChainRouter.decide(RequestView)`` -> ``Decision``) which targets to call in order
(resolver target, then failover targets: subsets by filter, other datacenters), with
what path, timeouts, retries, header changes and load-balancer policy and hash key.
``ChainWatch`` is the chain as a watched resource of the shared blocking-query engine;
``ChainReporter`` says once that a chain is not honoured and the plain service is used.

A service without config entries has Consul's default chain: its router is ``plain``
and a caller keeps its plain-service fast path (no per-call cost).
"""

from consul_discovery.client.chain.decide import ChainRouter, Decision, compile_chain, plain_router
from consul_discovery.client.chain.hash_key import request_hash
from consul_discovery.client.chain.model import (
    Chain,
    ChainRetry,
    ChainTarget,
    HashPolicy,
    HeaderModifiers,
    LoadBalancer,
    RingHashConfig,
)
from consul_discovery.client.chain.parse import parse_chain
from consul_discovery.client.chain.query import ChainAnswer, ChainWatch, DiscoveryChainQuery
from consul_discovery.client.chain.reading import ChainFormatError, parse_duration
from consul_discovery.client.chain.report import ChainReporter
from consul_discovery.client.route import RequestView

__all__ = [
    "Chain",
    "ChainAnswer",
    "ChainFormatError",
    "ChainReporter",
    "ChainRetry",
    "ChainRouter",
    "ChainTarget",
    "ChainWatch",
    "Decision",
    "DiscoveryChainQuery",
    "HashPolicy",
    "HeaderModifiers",
    "LoadBalancer",
    "RequestView",
    "RingHashConfig",
    "compile_chain",
    "parse_chain",
    "parse_duration",
    "plain_router",
    "request_hash",
]
