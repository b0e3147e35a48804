"""What the core routes on: a transport-neutral view of a request, and where it may go.

Every shell hands the core a ``RequestView`` (method, path with query, headers) before the
call's plan is made; the core turns it into a ``Route``: the Targets the call may use, in
order (the first, then failover targets), and the retry policy for it. Today a service
has exactly one Route, made once and reused for every call (no per-call cost). Routing
by Consul's compiled discovery chain will choose a Route per request from the view
(path, header and query matches, splits, subsets, failover to other datacenters, per-route
timeouts and retries) and its hash key for consistent hashing; a service without a chain
keeps the one precomputed Route.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import NamedTuple

from consul_discovery.client.retry import RetryPolicy
from consul_discovery.client.state import TargetState


class RequestView(NamedTuple):
    """A request as routing sees it, whatever the transport: cheap to make, parsed lazily.

    ``raw_path`` is the path and query as sent (``/users/7?full=1``);
    ``headers`` must look names up case-insensitively (requests' and httpx' do).
    """

    method: str
    raw_path: str
    headers: Mapping[str, str]

    @property
    def path(self) -> str:
        """The path, without the query."""
        return self.raw_path.partition("?")[0] or "/"

    @property
    def query(self) -> str:
        """The raw query string (empty when none)."""
        return self.raw_path.partition("?")[2]


HashPolicy = Callable[[RequestView], "int | None"]


class Route(NamedTuple):
    """Where one call may go: its Targets' states in order, retry policy, hash policy.

    ``states[0]`` is the Target the call is made to; when it has no instance to pick, the
    plan moves on to the next (failover). ``retry`` None means the client's policy.
    ``hash_policy`` computes the call's hash key from its request, once per call, for
    consistent-hashing pickers (None: no hashing, no cost).
    """

    service: str
    states: tuple[TargetState, ...]
    retry: RetryPolicy | None = None
    hash_policy: HashPolicy | None = None

    @property
    def primary(self) -> TargetState:
        """The state of the Target the call is made to first."""
        return self.states[0]
