"""The health watch's loop rules with a scripted agent and a fake clock (no threads, no
Consul): ``health_state`` (the shared WatchState rules around the health query), driven
poll by poll with ``poll_once`` as the thread driver does."""

from __future__ import annotations

import json
import random
import threading
from collections.abc import Callable, Sequence

import pytest

from consul_discovery.client.instance import Instance, Resolution
from consul_discovery.client.source import WatchKey
from consul_discovery.client.target import Target
from consul_discovery.client.watch import HealthState, health_state
from consul_discovery.connection.blocking import WatchTiming, next_index
from consul_discovery.connection.exchange import (
    Request,
    Response,
    TransportError,
    TransportFailure,
)
from consul_discovery.connection.watch_drivers import WatchThread, poll_once
from tests.discovery_client.fake_consul import health_response


class FakeClock:
    """Monotonic time that only moves when told."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def inst(ident: str, health: str = "passing") -> Instance:
    return Instance(id=ident, service="svc", address="127.0.0.1", port=8000, health=health)


def down(why: str = "refused") -> TransportError:
    return TransportError(TransportFailure.REFUSED, why)


class Script:
    """An agent answering health queries from a function of the call number (an
    exception raised by it is the send's); records (time, index sent) per query."""

    def __init__(self, answer: Callable[[int, int], tuple[int | None, Sequence[Instance]]]):
        self.answer = answer
        self.calls: list[tuple[float, int]] = []  # (time, index sent)
        self.clock: FakeClock | None = None

    def __call__(self, request: Request) -> Response:
        assert self.clock is not None
        if request.path == "/v1/catalog/services":
            return Response(200, {"X-Consul-Index": "1"}, json.dumps({"svc": []}).encode())
        index = int(dict(request.params).get("index", 0))
        self.calls.append((self.clock.now, index))
        returned, instances = self.answer(len(self.calls), index)
        return health_response(returned, list(instances))


class Watch:
    """A health WatchState and its send, polled by hand like the thread driver does."""

    def __init__(self, state: HealthState, send: Script) -> None:
        self.state = state
        self.send = send

    def poll_once(self) -> float | None:
        return poll_once(self.state, self.send)

    @property
    def resolution(self) -> Resolution | None:
        return self.state.value


def make_watch(script: Script, clock: FakeClock, on_change=None, **timing: float):
    script.clock = clock
    seen: list[Resolution] = []
    state = health_state(
        WatchKey(Target("svc"), None, 20.0), "127.0.0.1:8500", on_change or seen.append,
        timing=WatchTiming(**timing), clock=clock, rng=random.Random(7),
    )  # fmt: skip
    return Watch(state, script), seen


def drive(watch: Watch, clock: FakeClock, seconds: float) -> None:
    """Run poll_once back to back, advancing the fake clock by each returned delay."""
    end = clock.now + seconds
    while clock.now < end:
        delay = watch.poll_once()
        assert delay is not None, "watch stopped unexpectedly"
        clock.advance(delay)


@pytest.mark.parametrize(
    ("previous", "returned", "expected"),
    [
        (0, 10, 10),  # first answer
        (10, 12, 12),  # moved forward
        (10, 10, 10),  # no change
        (10, 3, 0),  # went backwards: reset
        (0, 0, 1),  # 0 is treated as 1
        (0, None, 1),  # missing header is treated as 1
        (5, 0, 0),  # 0 after a real index: backwards, reset
        (1, 0, 1),  # 0 while already at 1: stay at 1 (and block)
    ],
)
def test_next_index_follows_consul_rules(previous: int, returned: int | None, expected: int):
    assert next_index(previous, returned) == expected


def test_error_backoff_grows_is_jittered_and_capped():
    clock = FakeClock()

    def fail(n: int, idx: int):
        raise down()

    watch, _ = make_watch(Script(fail), clock, backoff_base=0.25, backoff_cap=5.0)
    delays = [watch.poll_once() for _ in range(11)]
    for n, delay in enumerate(delays, start=1):
        assert delay is not None
        ceiling = min(5.0, 0.25 * 2 ** (n - 1))
        assert ceiling / 2 <= delay <= ceiling
    assert max(d for d in delays if d is not None) <= 5.0


@pytest.mark.parametrize(
    "answer",
    [
        pytest.param(lambda n, idx: (0, [inst("a")]), id="index-always-0"),
        pytest.param(lambda n, idx: (None, [inst("a")]), id="index-missing"),
        pytest.param(lambda n, idx: (100 if n % 2 else 50, [inst("a")]), id="index-backwards"),
        pytest.param(lambda n, idx: (n, [inst("a")]), id="index-moves-nothing-changes"),
    ],
)
def test_broken_index_never_busy_loops(answer):
    clock = FakeClock()
    script = Script(answer)
    watch, seen = make_watch(script, clock, min_interval=1.0)
    drive(watch, clock, 60.0)
    # Index churn with nothing changing: one request per min_interval, plus the quick
    # follow-up after the plain read, the settle burst, and one more per min_interval
    # as the allowance refills: never a busy loop.
    burst = WatchTiming().settle_burst
    assert len(script.calls) <= 1 + burst + 2 * 61
    gaps = [b[0] - a[0] for a, b in zip(script.calls[1:], script.calls[2:], strict=False)]
    assert min(gaps) >= 0.05 - 1e-9
    begun = script.calls[0][0]
    late = [t for t, _ in script.calls if t - begun > 10.0]
    assert len(late) <= 2 * 51  # after the burst: at most two polls per second
    assert len(seen) == 1, "listener must only hear about real changes"


def test_index_backwards_resets_to_zero_then_blocks_again():
    clock = FakeClock()
    answers = iter([(100, [inst("a")]), (40, [inst("a")]), (41, [inst("a")]), (41, [inst("a")])])
    script = Script(lambda n, idx: next(answers))
    watch, _ = make_watch(script, clock)
    for _ in range(4):
        clock.advance(watch.poll_once() or 0.0)
    assert [index for _, index in script.calls] == [0, 100, 0, 41]


def test_blocking_index_is_at_least_one():
    clock = FakeClock()
    script = Script(lambda n, idx: (0, [inst("a")]))
    watch, _ = make_watch(script, clock)
    for _ in range(3):
        clock.advance(watch.poll_once() or 0.0)
    assert [index for _, index in script.calls] == [0, 1, 1]


def test_real_change_is_emitted_and_followed_quickly():
    clock = FakeClock()
    ab, a = [inst("a"), inst("b")], [inst("a")]
    burst = WatchTiming().settle_burst
    changes_at = burst + 3  # the first read, burst + 1 quiet answers, then the change
    script = Script(lambda n, idx: (10 + n, ab if n < changes_at else a))
    watch, seen = make_watch(script, clock, min_interval=1.0, min_change_interval=0.05)
    assert watch.poll_once() == 0.0  # the first read was plain: block at once
    # The index moved with no change: a burst of quick polls, then rate limited
    for _ in range(burst):
        assert watch.poll_once() == pytest.approx(0.05)
    assert watch.poll_once() == pytest.approx(1.0)
    clock.advance(1.0)  # one poll's allowance back
    assert watch.poll_once() == pytest.approx(0.05)  # the real change: quick
    assert [tuple(i.id for i in r.instances) for r in seen] == [("a", "b"), ("a",)]
    assert watch.poll_once() == pytest.approx(0.05)  # quiet again: the refilled one
    assert watch.poll_once() == pytest.approx(1.0)  # spent


def test_an_instance_that_registers_then_passes_is_seen_without_the_rate_limit():
    """A restarted instance registers with a critical check (Consul's index moves, the
    passing set does not), then passes a moment later: the poll after the registration
    is a quick one, so the instance is seen then, not up to min_interval later."""
    clock = FakeClock()
    healths = {1: None, 2: "critical"}  # 1: not registered yet; then critical; then passing

    def answer(n: int, idx: int):
        health = healths.get(n, "passing")
        return 10 + n, [inst("a")] + ([] if health is None else [inst("b", health)])

    script = Script(answer)
    watch, seen = make_watch(script, clock, min_interval=1.0, min_change_interval=0.05)
    delays = [watch.poll_once() for _ in range(3)]
    assert delays[1] == pytest.approx(0.05)  # registered critical: poll again quickly
    assert [i.id for i in seen[-1].instances] == ["a", "b"]


def test_health_change_alone_is_a_change():
    clock = FakeClock()
    healths = {1: "passing", 2: "warning"}
    script = Script(lambda n, idx: (n, [inst("a", healths.get(n, "warning"))]))
    watch, seen = make_watch(script, clock)
    drive(watch, clock, 5.0)
    assert [r.instances[0].health for r in seen] == ["passing", "warning"]


def test_error_before_first_success_is_cached_and_retried_with_backoff():
    clock = FakeClock()
    answers = {3: (5, [inst("a")])}

    def flaky(n: int, idx: int):
        if n in answers:
            return answers[n]
        raise down()

    script = Script(flaky)
    watch, seen = make_watch(script, clock, backoff_base=0.25)
    delay = watch.poll_once()
    assert delay is not None and 0.125 <= delay <= 0.25
    assert watch.state.wait_first(0)
    assert "unreachable" in str(watch.state.first_error)
    assert watch.resolution is None and seen == []
    clock.advance(delay)
    assert watch.poll_once() is not None  # 2nd failure: longer backoff
    assert (watch.state.requests, watch.state.errors) == (2, 2)
    assert watch.poll_once() == 0.0  # resolved: blocking starts at once
    assert watch.state.first_error is None
    assert [i.id for i in watch.resolution.instances] == ["a"]


def test_stale_on_error_keeps_instances_and_age_grows_then_recovers():
    clock = FakeClock()
    outage = {"value": False}

    def answer(n: int, idx: int):
        if outage["value"]:
            raise down("consul down")
        return 5, [inst("a"), inst("b")]

    script = Script(answer)
    watch, seen = make_watch(script, clock, backoff_base=0.25, backoff_cap=5.0)
    clock.advance(watch.poll_once() or 0.0)
    fetched_at = watch.resolution.fetched_at
    outage["value"] = True
    delays = []
    for _ in range(8):
        delay = watch.poll_once()
        delays.append(delay)
        clock.advance(delay or 0.0)
    stale = watch.resolution
    assert stale.stale and "consul down" in stale.error
    assert stale.error.startswith("ConsulUnavailableError: ")
    assert [i.id for i in stale.instances] == ["a", "b"]
    assert stale.fetched_at == fetched_at
    assert stale.age(clock.now) >= sum(delays)
    assert [r.stale for r in seen] == [False, True], "one event per transition, not per error"
    assert delays[0] < delays[3] and all(d <= 5.0 for d in delays)
    assert sum(1 for d in delays if d >= 2.5) >= 3  # reached the cap region
    outage["value"] = False
    clock.advance(watch.poll_once() or 0.0)
    assert [r.stale for r in seen] == [False, True, False]
    assert watch.resolution.fetched_at > fetched_at and watch.resolution.error is None


def test_empty_set_is_real_and_reported():
    clock = FakeClock()
    sets = {1: [inst("a")]}
    script = Script(lambda n, idx: (n, sets.get(n, [])))
    watch, seen = make_watch(script, clock)
    drive(watch, clock, 3.0)
    assert [len(r.instances) for r in seen] == [1, 0]
    assert not seen[-1].stale and not seen[-1].panic


def test_listener_exception_does_not_stop_the_loop():
    clock = FakeClock()
    script = Script(lambda n, idx: (n, [inst(f"i{n}")]))
    script.clock = clock

    def boom(_: Resolution) -> None:
        raise RuntimeError("listener bug")

    watch, _ = make_watch(script, clock, on_change=boom)
    drive(watch, clock, 2.0)
    assert watch.resolution.instances[0].id == f"i{len(script.calls)}"


def test_the_thread_driver_stops_with_injected_sleep():
    clock = FakeClock()
    script = Script(lambda n, idx: (1, [inst("a")]))
    watch, _ = make_watch(script, clock)
    done = threading.Event()

    def sleep(seconds: float) -> None:
        clock.advance(seconds)
        if len(script.calls) >= 5:
            driver.stop()
            done.set()

    driver = WatchThread(watch.state, script, name="t", sleep=sleep)
    driver.start()
    assert done.wait(5)
    driver.join(5)
    assert not driver.alive and not driver.finished
    assert len(script.calls) == 5


def test_after_an_error_the_next_query_is_a_plain_read():
    clock = FakeClock()
    answers = iter([(50, [inst("a")]), down("agent restarting"), (7, [inst("a")])])

    def answer(n: int, idx: int):
        value = next(answers)
        if isinstance(value, Exception):
            raise value
        return value

    script = Script(answer)
    watch, seen = make_watch(script, clock)
    for _ in range(3):
        clock.advance(watch.poll_once() or 0.0)
    assert [index for _, index in script.calls] == [0, 50, 0]
    assert watch.state.index == 7 and [r.stale for r in seen] == [False, True, False]
