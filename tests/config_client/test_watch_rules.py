"""PrefixWatch's rules with a scripted KV store and a fake clock (no Consul)."""

from __future__ import annotations

import random
from collections.abc import Callable

import pytest

from consul_discovery.config.errors import ConsulKVError
from consul_discovery.config.kv import Entry, Listing
from consul_discovery.config.watch import PrefixWatch
from consul_discovery.connection.blocking import WatchTiming

PREFIX = "config/orders/"
TIMING = WatchTiming(wait=30.0, min_interval=1.0, min_change_interval=0.0)


class ScriptedStore:
    """Answers ``list`` from a script of Listings or exceptions; records the indexes asked."""

    def __init__(self, script: list[Listing | Exception]) -> None:
        self.script = script
        self.asked: list[int] = []

    def check_readable(self, prefix: str) -> None:
        pass

    def list(self, prefix: str, index: int = 0, wait: float = 0.0) -> Listing:
        self.asked.append(index)
        step = self.script.pop(0)
        if isinstance(step, Exception):
            raise step
        return step


def listing(index: int | None, **values: str) -> Listing:
    return Listing(index, tuple(Entry(PREFIX + k, v, index or 1) for k, v in values.items()))


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def make(script: list[Listing | Exception]) -> tuple[PrefixWatch, ScriptedStore, list, Clock]:
    store = ScriptedStore(script)
    seen: list[dict[str, str | None]] = []
    errors: list[BaseException] = []
    clock = Clock()
    on_content: Callable = lambda prefix, content, index: seen.append(dict(content))  # noqa: E731
    watch = PrefixWatch(
        store,  # type: ignore[arg-type]
        PREFIX,
        on_content,
        lambda prefix, exc: errors.append(exc),
        timing=TIMING,
        clock=clock,
        rng=random.Random(1),
    )
    return watch, store, seen, clock


def test_404_is_empty_and_an_unchanged_answer_is_rate_limited() -> None:
    watch, store, seen, _ = make([listing(5), listing(6), listing(7, a="1")])
    assert watch.poll_once() == 0.0  # first read: start blocking at once
    assert seen == [{}]
    assert watch.poll_once() == pytest.approx(1.0)  # 404 again: no change, rate limited
    assert seen == [{}]
    assert watch.poll_once() == 0.0  # a real change: next query right away
    assert seen == [{}, {PREFIX + "a": "1"}]
    assert store.asked == [0, 5, 6]


def test_index_from_header_and_backwards_resets() -> None:
    watch, store, _, _ = make([listing(50, a="1"), listing(None, a="1"), listing(3, a="1")])
    watch.poll_once()
    watch.poll_once()  # no X-Consul-Index: counts as 1, which is backwards: reset
    assert watch.index == 0
    watch.poll_once()
    assert watch.index == 3
    assert store.asked == [0, 50, 0]


def test_deleted_and_new_keys_are_changes() -> None:
    watch, _, seen, _ = make([listing(5, a="1", b="2"), listing(6, a="1"), listing(7)])
    for _ in range(3):
        watch.poll_once()
    assert seen == [{PREFIX + "a": "1", PREFIX + "b": "2"}, {PREFIX + "a": "1"}, {}]


def test_emptied_after_an_outage_is_held_until_keys_come_back() -> None:
    down = ConsulKVError("unreachable")
    watch, store, seen, _ = make(
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
    watch, _, seen, _ = make([listing(5, a="1"), listing(6)])
    watch.poll_once()
    watch.poll_once()
    assert seen[-1] == {} and not watch.held


def test_errors_back_off_with_jitter_and_are_reported() -> None:
    down = ConsulKVError("unreachable")
    watch, _, _, _ = make([down, down, down, down])
    delays = [watch.poll_once() for _ in range(4)]
    assert all(TIMING.backoff_base / 2 <= d <= TIMING.backoff_cap for d in delays)
    assert delays[3] > delays[0]


def test_a_neighbouring_layer_is_not_this_layers_content() -> None:
    """The query is ``config/orders`` (see the module docstring): ``config/orders2/`` and
    ``config/orders,prod/`` keys come back too and must be dropped."""
    noisy = Listing(9, (Entry("config/orders2/a", "1", 9), Entry("config/orders,prod/b", "2", 8)))
    watch, _, seen, _ = make([listing(5, a="1"), noisy])
    watch.poll_once()
    watch.poll_once()
    assert seen == [{PREFIX + "a": "1"}, {}]  # the layer's own key deleted, neighbours ignored


def test_emptied_with_an_index_gone_backwards_is_held_too() -> None:
    """A restart between two queries shows no error: only the index going backwards."""
    watch, _, seen, _ = make([listing(40, a="1"), listing(1), listing(2, a="1")])
    watch.poll_once()
    watch.poll_once()
    assert watch.held and seen == [{PREFIX + "a": "1"}]
    watch.poll_once()
    assert not watch.held and seen == [{PREFIX + "a": "1"}]
