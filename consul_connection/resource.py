"""What a watched resource is: its query and what its answers mean, without I/O.

A ``Resource`` is the part of a Consul watch that differs from one watch to the next
(the health of a service, a KV prefix, a discovery chain, a leaf certificate, CA roots,
intentions): the request for a ``Poll`` and the reading of its answer, the error kinds
its refusals map to, and the hooks the shared rules call (``settle`` for a suspect
answer, ``same``, ``mark_stale``, ``window_until``). The rules themselves are
``consul_connection.watch.WatchState``'s; how to add a watch is shown there.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Generic, TypeVar, cast

from consul_discovery.connection.exchange import (
    Exchange,
    Request,
    Response,
    TransportError,
    blocking_timeout,
    wait_param,
)
from consul_discovery.connection.refusals import ErrorKinds, answer_error, transport_error

A = TypeVar("A")  # what one poll's answer holds (health entries, a prefix's keys, ...)
V = TypeVar("V")  # what the watch publishes (a Resolution, a prefix's content, ...)


@dataclass(frozen=True, slots=True)
class Poll:
    """One poll about to be sent: the index (0: a plain read), its blocking wait, and
    whether the watch has published a value yet."""

    index: int
    wait: float
    resolved: bool

    def params(self) -> tuple[tuple[str, str], ...]:
        """Consul's blocking parameters (``index``, ``wait``); none for a plain read."""
        if self.index <= 0:
            return ()
        return (("index", str(self.index)), ("wait", wait_param(self.wait)))

    def timeout(self, request_timeout: float) -> float:
        """The read timeout: ``request_timeout``, plus the wait and its jitter if blocking."""
        return blocking_timeout(request_timeout, self.wait) if self.index > 0 else request_timeout


@dataclass(frozen=True, slots=True)
class Answer(Generic[A]):
    """What one poll returned: ``X-Consul-Index`` (None if missing) and the answer."""

    index: int | None
    value: A


class Resource(Generic[A, V]):
    """A watched resource: its query and what its answers mean (no I/O; see the module).

    ``name`` is for log lines; ``what`` names it in error messages ("service 'web'").
    Subclasses give ``request`` and ``decode``; the defaults publish each answer as is.
    """

    def __init__(self, name: str, what: str, address: str, errors: ErrorKinds) -> None:
        self.name = name
        self.what = what
        self.address = address
        self.errors = errors

    def request(self, poll: Poll) -> Request:
        """The request for ``poll``."""
        raise NotImplementedError

    def decode(self, response: Response) -> A:
        """The answer in a successful response."""
        raise NotImplementedError

    def exchange(self, poll: Poll) -> Exchange[Answer[A]]:
        """One poll: yields its request(s), returns the Answer (raises a mapped error)."""
        response = yield self.request(poll)
        return Answer(response.index, self.interpret(response))

    def interpret(self, response: Response) -> A:
        """``decode`` a 2xx; raise the shared mapping's error for anything else."""
        error = answer_error(response, self.what, self.address, self.errors)
        if error is not None:
            raise error
        return self.decode(response)

    def failure(self, error: TransportError) -> Exception:
        """The error a poll that got no answer raises."""
        return transport_error(error, self.what, self.address, self.errors)

    def settle(
        self, answer: A, index: int, previous: V | None, *, continuous: bool, now: float
    ) -> V:
        """The value to publish for ``answer`` (``continuous`` False: a suspect answer)."""
        return cast(V, answer)

    def same(self, old: V, new: V) -> bool:
        """True when ``new`` is no change from ``old`` (listeners are not called)."""
        return old == new

    def remember(self, stand_in: V) -> None:
        """Callers were handed ``stand_in`` before any answer (e.g. a cold-start
        snapshot); a resource that holds things on trust takes note (default: nothing)."""

    def mark_stale(self, value: V, error: BaseException) -> V | None:
        """``value`` marked as served stale because of ``error`` (None: no marking)."""
        return None

    @property
    def window_until(self) -> float | None:
        """When a window of holding things on trust ends (None: no window)."""
        return None

    def summary(self, value: V) -> str:
        """``value`` in a few words, for the outage log line."""
        return "its last answer"
