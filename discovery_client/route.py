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


class RequestView:
    """A request as routing sees it, whatever the transport: cheap to make, parsed lazily.

    Routing and hash policies read ``method``, ``path``, ``query``, ``headers`` and
    ``source_ip`` (the attributes of the discovery chain's own request view, so either
    serves). ``raw_path`` is the path and query as sent (``/users/7?full=1``), given as
    a string or as a function that computes it, called on first use only: a service
    without a discovery chain never asks, so the view costs one small object per call.
    ``headers`` must look names up case-insensitively (requests' and httpx' do);
    ``source_ip`` is the address the call came from, when there is one (a gateway's
    client).
    """

    __slots__ = ("_raw_path", "headers", "method", "source_ip")

    def __init__(
        self,
        method: str,
        raw_path: str | Callable[[], str],
        headers: Mapping[str, str],
        source_ip: str | None = None,
    ) -> None:
        self.method = method
        self._raw_path = raw_path
        self.headers = headers
        self.source_ip = source_ip

    @property
    def raw_path(self) -> str:
        """The path and query as sent."""
        raw = self._raw_path
        if not isinstance(raw, str):
            raw = self._raw_path = raw()
        return raw

    @property
    def path(self) -> str:
        """The path, without the query (``/`` when empty)."""
        return self.raw_path.partition("?")[0] or "/"

    @property
    def query(self) -> str:
        """The raw query string, without ``?`` (empty when none)."""
        return self.raw_path.partition("?")[2]

    def __repr__(self) -> str:
        """Method and path only: header values may be secrets."""
        return f"RequestView({self.method} {self.raw_path})"


HashPolicy = Callable[[RequestView], "int | None"]


class Route(NamedTuple):
    """Where one call may go: its Targets' states in order, retry policy, hash policy.

    ``states[0]`` is the Target the call is made to; when it has no instance to pick, the
    plan moves on to the next (failover). ``retry`` is the route's policy (the client's
    unless the route says otherwise; None: the client's).
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
