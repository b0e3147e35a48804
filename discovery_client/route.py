"""What the core routes on: a transport-neutral view of a request, and where it may go.

Every shell hands the core a ``RequestView`` (method, path with query, headers, source
address) before the call's plan is made; the core turns it into a ``Route``: the Targets
the call may use, in order (the first, then failover targets), the retry policy, the hash
policy and the changes the route makes to the request. A service without a discovery
chain has exactly one Route, made once and reused for every call (a dict read). A service
whose compiled chain Consul serves (``consul_discovery.client.chain``) has one Route per
route x split leg of that chain, precomputed when the chain arrives; a call picks one by
matching its view (path, header and query matches, a weighted draw among split legs).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, MutableMapping
from types import MappingProxyType
from typing import TYPE_CHECKING, NamedTuple, Protocol

from consul_discovery.client.retry import RetryPolicy

if TYPE_CHECKING:
    from consul_discovery.client.state import TargetState

_NO_HEADERS: Mapping[str, str] = MappingProxyType({})


class RequestView:
    """A request as routing sees it, whatever the transport: cheap to make, parsed lazily.

    Routing and hash policies read ``method``, ``path``, ``query``, ``headers`` and
    ``source_ip``. ``raw_path`` is the path and query as sent (``/users/7?full=1``),
    given as a string or as a function that computes it, called on first use only: a
    service without a discovery chain never asks, so the view costs one small object per
    call. ``headers`` must look names up case-insensitively (requests', httpx' and
    werkzeug's do); ``source_ip`` is the address the call came from, when there is one (a
    gateway's client), for a ``SourceIP`` hash policy. ``method`` is upper case as the
    transports give it (``of`` upper-cases).
    """

    __slots__ = ("_path", "_query", "_raw_path", "headers", "method", "source_ip")

    def __init__(
        self,
        method: str,
        raw_path: str | Callable[[], str],
        headers: Mapping[str, str] = _NO_HEADERS,
        source_ip: str | None = None,
    ) -> None:
        self.method = method
        self._raw_path = raw_path
        self._path: str | None = None  # split from raw_path on first use (call's thread)
        self._query = ""  # as _path
        self.headers = headers
        self.source_ip = source_ip

    @staticmethod
    def absolute(path: str) -> str:
        """A call's path as it is sent: ``client.get(name, "x")`` requests ``/x``."""
        return path if path.startswith("/") else "/" + path

    @classmethod
    def of(
        cls,
        method: str,
        raw_path: str,
        headers: Mapping[str, str] | None = None,
        source_ip: str | None = None,
    ) -> RequestView:
        """A view of ``method`` on ``raw_path`` ("/path?query"), the method upper-cased."""
        return cls(method.upper(), raw_path, _NO_HEADERS if headers is None else headers, source_ip)

    @property
    def raw_path(self) -> str:
        """The path and query as sent."""
        raw = self._raw_path
        if not isinstance(raw, str):
            raw = self._raw_path = raw()
        return raw

    def _split(self) -> str:
        path, _, self._query = self.raw_path.partition("?")
        path = self._path = path or "/"
        return path

    @property
    def path(self) -> str:
        """The path, without the query (``/`` when empty)."""
        path = self._path
        return path if path is not None else self._split()

    @property
    def query(self) -> str:
        """The raw query string, without ``?`` (empty when none)."""
        if self._path is None:
            self._split()
        return self._query

    def __repr__(self) -> str:
        """Method and path only: header values may be secrets."""
        return f"RequestView({self.method} {self.raw_path})"


HashPolicy = Callable[[RequestView], "int | None"]


class RequestChanges(Protocol):
    """What a route changes in the request it sends, and in the answer it hands back
    (a chain route's prefix rewrite and header modifiers; ``chain.changes``)."""

    def path(self, raw_path: str) -> str:
        """The path (and query) to send instead of ``raw_path``."""
        ...

    def request_headers(self, headers: MutableMapping[str, str]) -> None:
        """Change the attempt's request headers in place."""
        ...

    def response_headers(self, headers: MutableMapping[str, str]) -> None:
        """Change the answer's headers in place."""
        ...


class Route(NamedTuple):
    """Where one call may go: its Targets' states in order, and how it is made.

    ``states[0]`` is the Target the call is made to; when it has no instance to pick, the
    plan moves on to the next (failover). ``retry`` is the route's policy (None: the
    client's). ``hash_policy`` computes the call's hash key from its request, once per
    call, for consistent-hashing pickers (None: no hashing, no cost). ``changes`` rewrites
    the request and its answer (None: sent as given). ``connect_timeout`` caps each
    attempt's connect timeout (None: the caller's). ``name`` says which route of a chain
    this is, for logs and the CLI ("" for a plain service).
    """

    service: str
    states: tuple[TargetState, ...]
    retry: RetryPolicy | None = None
    hash_policy: HashPolicy | None = None
    changes: RequestChanges | None = None
    connect_timeout: float | None = None
    name: str = ""

    @property
    def primary(self) -> TargetState:
        """The state of the Target the call is made to first."""
        return self.states[0]
