"""One KV prefix's recursive blocking-query watch, on the shared watch rules.

The rules are not restated here: index, pacing, backoff, a cached first error, outage
logging and the "suspect answer after an outage or an index reset" hook are
``consul_connection.watch.WatchState``'s, the thread driver
``consul_connection.watch_drivers``', the error mapping ``consul_connection.refusals``'
(through ``kv.check_answer``). ``PrefixResource`` says only what is particular to KV:

- A 404 is an empty prefix, not an error; only different content is reported.
- The query names the layer without its trailing ``/`` (``config/orders``) and keeps
  only the keys under ``config/orders/``: Consul wakes a prefix query on a delete-tree
  only when the deleted prefix starts with the queried one, so ``config/orders/`` would
  sleep through ``consul kv delete -recurse config/orders`` (seen on 1.22). A delete of
  a parent (``config``) wakes nobody; the answer at the end of the wait is compared
  like any other, so even that is picked up within ``timing.wait``.
- Each plain read (index 0) first checks that the token may read the layer at all:
  Consul answers a recursive read it denies with the same 404 as an empty prefix.
- **An emptied prefix after an outage is suspect** (the rule ``ARCHITECTURE.md`` gives a
  registry that suddenly forgets; ``settle`` with ``continuous=False``): a prefix that had
  keys and reads empty right after Consul was unreachable or its index went backwards (a
  dev agent, or one that lost its data dir, comes back empty; a restart between two
  queries shows no error at all) keeps its last-known-good content until keys appear in
  it again; then content is compared, so re-putting the same data fires nothing and a
  changed value fires once. A prefix emptied while Consul stayed reachable is a real
  delete and is reported.
- Errors never stop the watch: each is handed to ``on_error`` (before the first answer
  the client decides about fail-fast); afterwards the content is kept.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Protocol

from consul_discovery.config.kv import KV_ERRORS, list_request, read_listing, readable_request
from consul_discovery.config.kv import check_answer as check_kv_answer
from consul_discovery.connection.blocking import WatchTiming
from consul_discovery.connection.exchange import Exchange, Request, Response
from consul_discovery.connection.resource import Answer, Poll, Resource
from consul_discovery.connection.watch import WatchState
from consul_discovery.connection.watch_drivers import poll_once

log = logging.getLogger(__name__)

Content = Mapping[str, str | None]
OnContent = Callable[[str, Content, int], None]
OnError = Callable[[str, BaseException], None]


class KVSender(Protocol):
    """What the watch needs of a KV store: where the agent is and how to send."""

    @property
    def connection(self) -> object: ...

    def send(self, request: Request) -> Response: ...


@dataclass(frozen=True, slots=True)
class PrefixContent:
    """A prefix's keys (full key -> decoded value) at the index that showed them."""

    content: Content
    index: int


class PrefixResource(Resource[Content, PrefixContent]):
    """One layer's KV prefix as a watched resource (no I/O; see the module docstring)."""

    def __init__(self, prefix: str, address: str, read_timeout: float = 10.0) -> None:
        super().__init__(prefix, prefix, address, KV_ERRORS)
        self.prefix = prefix
        self._read_timeout = read_timeout
        self._suspect = False  # driver only: an error or index reset not yet resolved
        self.held = False  # driver writes, others read: holding content (see the module)

    def exchange(self, poll: Poll) -> Exchange[Answer[Content]]:
        """A readability check on plain reads, then the recursive (blocking) read."""
        query = self.prefix.rstrip("/")
        if poll.index == 0:
            check = yield readable_request(self.prefix, self._read_timeout)
            check_kv_answer(check, self.prefix, self.address)
        response = yield list_request(query, poll.index, poll.wait, self._read_timeout)
        listing = read_listing(response, query, self.address)
        content = {k: v for k, v in listing.values().items() if k.startswith(self.prefix)}
        return Answer(listing.index, content)

    def settle(
        self,
        answer: Content,
        index: int,
        previous: PrefixContent | None,
        *,
        continuous: bool,
        now: float,
    ) -> PrefixContent:
        """Hold the last content while a suspect answer reads empty; else believe it."""
        if not continuous:
            self._suspect = True
        if previous is not None and previous.content and not answer and self._suspect:
            if not self.held:
                log.warning(
                    "%s reads empty after Consul was unreachable or reset: keeping its "
                    "last %d key(s) until keys appear again",
                    self.prefix,
                    len(previous.content),
                )
            self.held = True
            return previous
        self._suspect = False
        self.held = False
        return PrefixContent(answer, index)

    def same(self, old: PrefixContent, new: PrefixContent) -> bool:
        """Same keys and values (the index alone is no change)."""
        return old.content == new.content

    def summary(self, value: PrefixContent) -> str:
        """ "its last N key(s)"."""
        return f"its last {len(value.content)} key(s)"


class PrefixWatch:
    """The last content read under one prefix and the loop that keeps it fresh.

    ``poll_once`` does one request and returns the seconds to sleep before the next;
    ``run`` loops it on the caller's thread until ``stop`` is set (a poll cut short by
    closing is not an error). ``state`` is the shared ``WatchState`` (for a
    ``WatchThread`` driver).
    """

    def __init__(
        self,
        store: KVSender,
        prefix: str,
        on_content: OnContent,
        on_error: OnError,
        *,
        timing: WatchTiming,
        clock: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
    ) -> None:
        self.prefix = prefix
        self._store = store
        connection = store.connection
        self._resource = PrefixResource(
            prefix, getattr(connection, "address", "?"), getattr(connection, "read_timeout", 10.0)
        )
        self.state: WatchState[Content, PrefixContent] = WatchState(
            self._resource,
            lambda value: on_content(prefix, value.content, value.index),
            timing=timing,
            clock=clock,
            rng=rng,
            on_error=lambda exc: on_error(prefix, exc),
        )

    @property
    def held(self) -> bool:
        """True while an emptied prefix is held after an outage (see the module)."""
        return self._resource.held

    @property
    def requests(self) -> int:
        """Polls started."""
        return self.state.requests

    @property
    def index(self) -> int:
        """The index the next query sends (0: a plain read)."""
        return self.state.index

    def poll_once(self, closing: Callable[[], bool] = lambda: False) -> float | None:
        """Do one request; seconds to sleep before the next (None: closing)."""
        return poll_once(self.state, self._store.send, closing)

    def run(self, stop: threading.Event) -> None:
        """Loop ``poll_once`` until ``stop`` is set."""
        while not stop.is_set():
            delay = self.poll_once(stop.is_set)
            if delay is None:
                return
            if delay > 0:
                stop.wait(delay)
