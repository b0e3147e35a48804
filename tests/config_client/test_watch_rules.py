"""PrefixWatch's rules with a scripted agent (HTTP values) and a fake clock (no Consul).

The rules are the shared WatchState's; these tests pin what is particular to KV (404 is
empty, neighbouring layers dropped, an emptied prefix after an outage held) and that the
KV watch follows the same index, pacing and backoff rules.
"""

from __future__ import annotations

import base64
import json
import random
from collections.abc import Callable
from dataclasses import dataclass, field

import pytest

from consul_discovery.config.errors import ConsulKVError, KVAccessDenied
from consul_discovery.config.kv import Entry, Listing
from consul_discovery.config.watch import PrefixWatch
from consul_discovery.connection import ConsulConnection
from consul_discovery.connection.blocking import WatchTiming
from consul_discovery.connection.exchange import (
    Request,
    Response,
    TransportError,
    TransportFailure,
)

PREFIX = "config/orders/"
TIMING = WatchTiming(wait=30.0, min_interval=1.0, min_change_interval=0.0)
DOWN = TransportError(TransportFailure.REFUSED, "unreachable")


def answer(step: Listing | Exception | Response) -> Response:
    """A listing as Consul's recursive KV answer (no entries: 404)."""
    if isinstance(step, Response):
        return step
    assert isinstance(step, Listing)
    head = {} if step.index is None else {"X-Consul-Index": str(step.index)}
    if not step.entries:
        return Response(404, head, b"")
    body = [
        {"Key": e.key, "Value": base64.b64encode((e.value or "").encode()).decode(),
         "ModifyIndex": e.modify_index}
        for e in step.entries
    ]  # fmt: skip
    return Response(200, head, json.dumps(body).encode())


@dataclass
class ScriptedStore:
    """Answers the watch's recursive reads from a script of Listings, Responses or
    exceptions (raised by the send); readability checks answer 404. Records the index
    each read asked for."""

    script: list[Listing | Exception | Response]
    asked: list[int]
    connection: ConsulConnection = field(default_factory=ConsulConnection)

    def send(self, request: Request) -> Response:
        if ("recurse", "true") not in request.params:
            return Response(404, {"X-Consul-Index": "1"}, b"")  # the readability check
        self.asked.append(int(dict(request.params).get("index", 0)))
        step = self.script.pop(0)
        if isinstance(step, Exception):
            raise step
        return answer(step)


def listing(index: int | None, **values: str) -> Listing:
    return Listing(index, tuple(Entry(PREFIX + k, v, index or 1) for k, v in values.items()))


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def make(
    script: list[Listing | Exception | Response],
) -> tuple[PrefixWatch, ScriptedStore, list, Clock, list]:
    store = ScriptedStore(script, [])
    seen: list[dict[str, str | None]] = []
    errors: list[BaseException] = []
    clock = Clock()
    on_content: Callable = lambda prefix, content, index: seen.append(dict(content))  # noqa: E731
    watch = PrefixWatch(
        store,
        PREFIX,
        on_content,
        lambda prefix, exc: errors.append(exc),
        timing=TIMING,
        clock=clock,
        rng=random.Random(1),
    )
    return watch, store, seen, clock, errors


def test_404_is_empty_and_an_unchanged_answer_is_rate_limited() -> None:
    burst = TIMING.settle_burst
    quiet = [listing(6 + n) for n in range(burst + 1)]
    watch, store, seen, _, _ = make([listing(5), *quiet, listing(20, a="1")])
    assert watch.poll_once() == 0.0  # first read: start blocking at once
    assert seen == [{}]
    # 404 again with a new index: something moves in Consul, so a burst of quick polls,
    # then rate limited (the allowance refills at one per min_interval)
    for _ in range(burst):
        assert watch.poll_once() == pytest.approx(TIMING.min_change_interval)
    assert watch.poll_once() == pytest.approx(1.0)
    assert seen == [{}]
    assert watch.poll_once() == 0.0  # a real change: next query right away
    assert seen == [{}, {PREFIX + "a": "1"}]
    assert store.asked == [0, *(5 + n for n in range(burst + 2))]


def test_index_from_header_and_backwards_resets() -> None:
    watch, store, _, _, _ = make([listing(50, a="1"), listing(None, a="1"), listing(3, a="1")])
    watch.poll_once()
    watch.poll_once()  # no X-Consul-Index: counts as 1, which is backwards: reset
    assert watch.index == 0
    watch.poll_once()
    assert watch.index == 3
    assert store.asked == [0, 50, 0]


def test_deleted_and_new_keys_are_changes() -> None:
    watch, _, seen, _, _ = make([listing(5, a="1", b="2"), listing(6, a="1"), listing(7)])
    for _ in range(3):
        watch.poll_once()
    assert seen == [{PREFIX + "a": "1", PREFIX + "b": "2"}, {PREFIX + "a": "1"}, {}]


def test_emptied_after_an_outage_is_held_until_keys_come_back() -> None:
    down = DOWN
    watch, store, seen, _, _ = make(
        [listing(40, a="1"), down, down, listing(2), listing(3, a="1"), listing(4, a="2")]
    )
    watch.poll_once()
    assert watch.poll_once() > 0 and watch.poll_once() > 0  # backoff, index reset
    watch.poll_once()  # restarted empty: suspect, held
    assert watch.held and seen == [{PREFIX + "a": "1"}]
    watch.poll_once()  # the same data re-put: nothing to report
    assert not watch.held and seen == [{PREFIX + "a": "1"}]
    watch.poll_once()  # a real change afterwards
    assert seen[-1] == {PREFIX + "a": "2"}
    assert store.asked == [0, 40, 0, 0, 2, 3]


def test_emptied_while_reachable_is_a_real_delete() -> None:
    watch, _, seen, _, _ = make([listing(5, a="1"), listing(6)])
    watch.poll_once()
    watch.poll_once()
    assert seen[-1] == {} and not watch.held


def test_errors_back_off_with_jitter_and_are_reported() -> None:
    watch, _, _, _, errors = make([DOWN, DOWN, DOWN, DOWN])
    delays = [watch.poll_once() for _ in range(4)]
    assert all(d is not None and TIMING.backoff_base / 2 <= d <= TIMING.backoff_cap for d in delays)
    assert delays[3] > delays[0]  # type: ignore[operator]
    assert len(errors) == 4 and all(type(e) is ConsulKVError for e in errors)
    assert "unreachable" in str(errors[0]) and "config/orders/" in str(errors[0])


def test_a_denied_or_filtered_read_is_an_access_error_not_an_empty_prefix() -> None:
    denied = Response(
        403,
        {},
        b"Permission denied: token with AccessorID 'a1' lacks "
        b"permission 'key:read' on \"config/orders\"",
    )
    filtered = Response(200, {"X-Consul-Results-Filtered-By-ACLs": "true"}, b"[]")
    watch, _, seen, _, errors = make([denied, filtered])
    watch.poll_once()
    watch.poll_once()
    assert seen == [] and [type(e) for e in errors] == [KVAccessDenied, KVAccessDenied]
    assert "'key:read' on 'config/orders'" in str(errors[0])
    assert "key_prefix read" in str(errors[1])


def test_a_poll_cut_short_by_closing_is_no_error() -> None:
    watch, _, seen, _, errors = make([listing(5, a="1"), DOWN])
    watch.poll_once()
    assert watch.poll_once(closing=lambda: True) is None
    assert errors == [] and not watch.state.stale and seen == [{PREFIX + "a": "1"}]


def test_a_neighbouring_layer_is_not_this_layers_content() -> None:
    """The query is ``config/orders`` (see the module docstring): ``config/orders2/`` and
    ``config/orders,prod/`` keys come back too and must be dropped."""
    noisy = Listing(9, (Entry("config/orders2/a", "1", 9), Entry("config/orders,prod/b", "2", 8)))
    watch, _, seen, _, _ = make([listing(5, a="1"), noisy])
    watch.poll_once()
    watch.poll_once()
    assert seen == [{PREFIX + "a": "1"}, {}]  # the layer's own key deleted, neighbours ignored


def test_emptied_with_an_index_gone_backwards_is_held_too() -> None:
    """A restart between two queries shows no error: only the index going backwards."""
    watch, _, seen, _, _ = make([listing(40, a="1"), listing(1), listing(2, a="1")])
    watch.poll_once()
    watch.poll_once()
    assert watch.held and seen == [{PREFIX + "a": "1"}]
    watch.poll_once()
    assert not watch.held and seen == [{PREFIX + "a": "1"}]
