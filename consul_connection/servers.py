"""Several Consul addresses: which one to ask, in what order, and when to wait (no I/O).

Agentless set-ups talk to the servers directly, so a client holds a list of addresses
(``parse_servers``: ``"https://10.0.0.1:8501, https://10.0.0.2:8501"``, each item
spelled as CONSUL_HTTP_ADDR is). ``ServerList`` decides which one to use, after the
rules of Consul's own clients:

- **Spread.** Each client shuffles the list once (random source injected), so a fleet
  spreads over the servers instead of every client starting on the first one (Consul's
  client agents shuffle their server list: ``agent/router/manager.go``).
- **Stick.** A client keeps its server while that server answers: its connections stay
  warm and its blocking indexes stay meaningful.
- **Fail over in order.** A server that failed goes to the back of the list and the next
  one is used at once (``cycleServer``); within a round, every server is tried once
  before any is tried twice (consul-server-connection-manager's least recently
  attempted order). Only when every server failed in a row does the client wait,
  with the shared jittered backoff (``consul_connection.backoff``), before another round.
- **Rebalance.** After ``rebalance_after`` seconds on one server, the client shuffles
  again (Consul's clients rebalance periodically), so that after a failure the
  survivors do not keep every client forever once the failed server is back.

Every switch bumps ``generation``. A blocking index is a position in one server's view
of the Raft log, and a watch must not carry it blindly to another server: see
``consul_connection.server_reads`` for what the first answer after a switch may be
trusted with. Thread-safety: a ``ServerList`` is owned by one driver (a thread or an
event loop); others read ``current`` and ``generation`` only.
"""

from __future__ import annotations

import random
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from consul_discovery.connection.addresses import SCHEME_PORTS, host_port, split_address
from consul_discovery.connection.backoff import JitterBackoff

_SEPARATORS = re.compile(r"[,\s]+")


@dataclass(frozen=True, slots=True)
class ServerAddress:
    """One Consul HTTP(S) API address."""

    scheme: str
    host: str
    port: int

    @property
    def address(self) -> str:
        """``host:port`` (an IPv6 literal bracketed)."""
        return host_port(self.host, self.port)

    @property
    def base_url(self) -> str:
        """``scheme://host:port``."""
        return f"{self.scheme}://{self.address}"

    def __str__(self) -> str:
        return self.base_url


def _named(setting: str, message: str) -> str:
    return f"{setting}: {message}" if setting else message


def parse_servers(
    text: str | Sequence[str],
    *,
    default_scheme: str = "http",
    setting: str = "addresses",
    force_https: bool = False,
) -> tuple[ServerAddress, ...]:
    """Addresses from a comma- or space-separated list (or a sequence of items).

    Each item is spelled as CONSUL_HTTP_ADDR is (``parse_address``); ``force_https``
    (CONSUL_HTTP_SSL=true) makes every item https, an item without a port then meaning
    443, as the CLI reads one address. Raises ValueError naming ``setting`` and the bad
    item for an empty list, a bad item, a duplicate, or a mix of http and https (one
    TLS configuration serves every address of a list).
    """
    items = _SEPARATORS.split(text.strip()) if isinstance(text, str) else list(text)
    items = [item.strip() for item in items if item and item.strip()]
    if not items:
        raise ValueError(_named(setting, "no Consul address given"))
    servers: list[ServerAddress] = []
    for item in items:
        try:
            scheme, host, port = split_address(item, default_scheme=default_scheme)
        except ValueError as exc:
            raise ValueError(_named(setting, str(exc))) from exc
        if force_https:
            scheme = "https"  # the CLI: "never revert to http if TLS was explicitly requested"
        server = ServerAddress(scheme, host, SCHEME_PORTS[scheme] if port is None else port)
        if server in servers:
            raise ValueError(_named(setting, f"{server} is listed twice"))
        servers.append(server)
    schemes = {s.scheme for s in servers}
    if len(schemes) > 1:
        raise ValueError(_named(setting, f"mixes http and https addresses ({', '.join(items)})"))
    return tuple(servers)


def parse_consul_addr(
    raw: str | Sequence[str], *, force_https: bool = False, default_scheme: str = "http"
) -> tuple[ServerAddress, ...]:
    """CONSUL_HTTP_ADDR's meaning: one address exactly as the CLI reads it, or several
    when ``raw`` holds a comma (or is a sequence), each item read the same way.

    ``force_https`` is CONSUL_HTTP_SSL=true. Raises ValueError naming the bad item.
    """
    if not isinstance(raw, str) or "," in raw:
        items = raw.split(",") if isinstance(raw, str) else list(raw)
        return parse_servers(
            items, default_scheme=default_scheme, setting="", force_https=force_https
        )
    scheme, host, port = split_address(raw, default_scheme=default_scheme)
    if force_https:
        scheme = "https"  # the CLI: "never revert to http if TLS was explicitly requested"
    return (ServerAddress(scheme, host, SCHEME_PORTS[scheme] if port is None else port),)


@dataclass(frozen=True, slots=True)
class Failover:
    """What to do after a failure: ask ``server`` after ``delay`` seconds.

    ``switched`` is True when ``server`` is not the one that failed (its answers then
    start a new ``generation``); ``round_failed`` when every server has now failed in
    a row, so ``delay`` is a backoff rather than 0.
    """

    server: ServerAddress
    delay: float
    switched: bool
    round_failed: bool


class ServerList:
    """The client's order of Consul servers: spread, stick, fail over, back off, rebalance.

    ``rng`` spreads (one shuffle now, one per rebalance) and jitters the backoff;
    ``clock`` is monotonic seconds. ``backoff`` is the wait after a whole round failed
    (default: 0.25 s doubling to 5 s, equal jitter, like the watches').
    """

    def __init__(
        self,
        servers: Sequence[ServerAddress],
        *,
        rng: random.Random | None = None,
        clock: Callable[[], float] = time.monotonic,
        backoff: JitterBackoff | None = None,
        rebalance_after: float | None = 300.0,
    ) -> None:
        if not servers:
            raise ValueError("ServerList needs at least one Consul address")
        if len(set(servers)) != len(servers):
            raise ValueError("ServerList: an address is listed twice")
        if rebalance_after is not None and rebalance_after <= 0:
            raise ValueError(f"rebalance_after must be > 0 or None, not {rebalance_after!r}")
        self._rng = rng or random.Random()
        self._clock = clock
        self._backoff = backoff or JitterBackoff(0.25, 5.0, rng=self._rng)
        self._rebalance_after = rebalance_after
        self._order = list(servers)  # driver only: the current server first
        self._rng.shuffle(self._order)
        self._failed_in_row = 0  # driver only: consecutive failures, across servers
        self._rounds_failed = 0  # driver only: whole rounds failed in a row
        self._since = clock()  # driver only: when the current server was chosen
        self.generation = 0  # driver only (others read): bumped on every switch

    @property
    def current(self) -> ServerAddress:
        """The server to ask now."""
        return self._order[0]

    @property
    def order(self) -> tuple[ServerAddress, ...]:
        """Every server, in the order they would be tried (the current one first)."""
        return tuple(self._order)

    def succeeded(self, server: ServerAddress) -> None:
        """``server`` answered: the failure streak ends (a stale answer counts too)."""
        if server == self.current:
            self._failed_in_row = 0
            self._rounds_failed = 0

    def failed(self, server: ServerAddress) -> Failover:
        """``server`` did not answer (connection refused, timeout, 5xx, 429).

        A failure reported for a server that is no longer current (a request that was in
        flight during a switch) changes nothing: the current server is kept.
        """
        if server != self.current:
            return Failover(self.current, 0.0, switched=False, round_failed=False)
        self._failed_in_row += 1
        round_failed = self._failed_in_row >= len(self._order)
        delay = 0.0
        if round_failed:
            self._failed_in_row = 0
            self._rounds_failed += 1
            delay = self._backoff.delay(self._rounds_failed)
        switched = len(self._order) > 1
        if switched:
            self._order.append(self._order.pop(0))
            self._switch()
        return Failover(self.current, delay, switched=switched, round_failed=round_failed)

    def maybe_rebalance(self) -> bool:
        """Shuffle again if the current server has served ``rebalance_after`` seconds.

        Call it between requests, never during one. True if the current server changed
        (its next answers start a new generation).
        """
        if self._rebalance_after is None or len(self._order) < 2:
            return False
        if self._clock() - self._since < self._rebalance_after:
            return False
        before = self.current
        self._rng.shuffle(self._order)
        self._since = self._clock()
        if self.current == before:
            return False
        self.generation += 1
        return True

    def _switch(self) -> None:
        self._since = self._clock()
        self.generation += 1

    def __repr__(self) -> str:
        order = ", ".join(str(s) for s in self._order)
        return f"ServerList([{order}], generation={self.generation})"
