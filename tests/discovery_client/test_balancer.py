"""The Balancer: snapshots in, pickers out; load survives updates; latency-aware policies."""

from __future__ import annotations

import heapq
import logging
import random
from itertools import count

import pytest

from consul_discovery.client.balancer import Balancer
from consul_discovery.client.config import ServiceConfig
from consul_discovery.client.errors import NoHealthyInstanceError
from tests.discovery_client.fakes import FakeClock, instance, resolution


def make(policy="least_request", clock=None, seed=1, **kw) -> Balancer:
    return Balancer(
        "svc",
        ServiceConfig(policy=policy),
        clock=clock or FakeClock(),
        rng=random.Random(seed),
        **kw,
    )


def simulate(policy: str, *, concurrency: int, calls: int = 3000, seed: int = 1) -> dict[str, int]:
    """Closed-loop load on 3 instances, i3 ten times slower, in fake time; picks per id."""
    latency = {"i1": 0.010, "i2": 0.010, "i3": 0.100}
    clock = FakeClock()
    bal = make(policy, clock=clock, seed=seed)
    bal.update(resolution(instance(1), instance(2), instance(3)))
    pending: list = []
    order = count()

    def start() -> None:
        ep = bal.pick()
        started = bal.begin(ep)
        heapq.heappush(pending, (clock.now + latency[ep.id], next(order), ep, started))

    for _ in range(concurrency):
        start()
    issued = concurrency
    while pending:
        done_at, _, ep, started = heapq.heappop(pending)
        clock.now = done_at
        bal.finish(ep, started, failed=False, responded=True)
        if issued < calls:
            start()
            issued += 1
    return {i: bal.load_of(i).picks for i in ("i1", "i2", "i3")}


def test_round_robin_sends_the_slow_instance_a_third():
    picks = simulate("round_robin", concurrency=10)
    assert picks["i3"] == 1000


@pytest.mark.parametrize("policy", ["least_request", "peak_ewma"])
def test_latency_aware_policies_send_the_slow_instance_under_a_third_of_round_robin(policy):
    rr = simulate("round_robin", concurrency=10)["i3"]
    slow = simulate(policy, concurrency=10)["i3"]
    assert slow < rr / 3, (policy, slow, rr)


def test_peak_ewma_avoids_the_slow_instance_even_one_call_at_a_time():
    rr = simulate("round_robin", concurrency=1)["i3"]
    slow = simulate("peak_ewma", concurrency=1)["i3"]
    assert slow < rr / 3, (slow, rr)


def test_load_state_survives_membership_updates():
    clock = FakeClock()
    bal = make(clock=clock)
    bal.update(resolution(instance(1), instance(2), fetched_at=1.0))
    ep = next(e for e in (bal.pick() for _ in range(20)) if e.id == "i1")
    bal.begin(ep)
    before = bal.load_of("i1")
    bal.update(resolution(instance(1), instance(2), instance(3), index=2, fetched_at=2.0))
    assert bal.load_of("i1") is before
    assert before.in_flight == 1 and before.picks == 1
    assert bal.load_of("i3").in_flight == 0
    # A finish on the old endpoint lands on the same state object.
    bal.finish(ep, clock.now, failed=False, responded=True)
    assert bal.load_of("i1").in_flight == 0


def test_removed_then_returning_instance_gets_fresh_state():
    bal = make()
    bal.update(resolution(instance(1), instance(2), fetched_at=1.0))
    old = bal.load_of("i2")
    bal.update(resolution(instance(1), index=2, fetched_at=2.0))
    assert bal.load_of("i2") is None
    bal.update(resolution(instance(1), instance(2), index=3, fetched_at=3.0))
    assert bal.load_of("i2") is not old


def test_changed_address_gets_fresh_state():
    bal = make()
    bal.update(resolution(instance(1, port=1000), fetched_at=1.0))
    old = bal.load_of("i1")
    bal.update(resolution(instance(1, port=2000), index=2, fetched_at=2.0))
    assert bal.load_of("i1") is not old
    assert bal.pick().instance.port == 2000


def test_older_resolution_is_ignored():
    bal = make("round_robin")
    bal.update(resolution(instance(1), instance(2), fetched_at=5.0, index=9))
    bal.update(resolution(instance(3), fetched_at=4.0, index=3))
    assert {bal.pick().id for _ in range(4)} == {"i1", "i2"}


@pytest.mark.parametrize("policy", ["round_robin", "least_request", "peak_ewma", "random"])
def test_a_plain_target_skips_connect_native_instances_while_another_serves(policy: str):
    """A move into the mesh: Connect-native instances serve mTLS only, so a plain
    target's picks (and retries) go to the others; with only those left, a pick is one
    of them and its Dial carries the refusal the shells raise (ConnectRequiredError)."""
    bal = make(policy)
    bal.update(
        resolution(instance(1, connect_native=True), instance(2), instance(3, connect_native=True))
    )
    assert {bal.pick().id for _ in range(30)} == {"i2"}
    assert bal.pick(exclude={"i2"}).id == "i2"  # never a native one, even on a retry
    bal.update(
        resolution(
            instance(1, connect_native=True), instance(3, connect_native=True), fetched_at=1.0
        )
    )
    endpoint = bal.pick()
    assert endpoint.id in {"i1", "i3"}
    assert endpoint.dial.refusal is not None and "connect=True" in endpoint.dial.refusal


def test_a_resolution_is_published_only_after_its_picker(monkeypatch: pytest.MonkeyPatch):
    """Calls read ``resolution`` lock-free to skip the wait for a first answer, then pick
    at once: when it is set, the picker must already be the one built from it. (CI, 2
    cores under load: a call saw the resolution, then the old picker: "not resolved yet".)"""
    import consul_discovery.client.balancer as balancer_module

    seen_while_building: list[object] = []
    real = balancer_module.build_picker

    def spying(*args, **kwargs):
        seen_while_building.append(bal.resolution)
        return real(*args, **kwargs)

    monkeypatch.setattr(balancer_module, "build_picker", spying)
    bal = make("round_robin")
    first = resolution(instance(1), fetched_at=1.0)
    bal.update(first)
    assert seen_while_building == [None]  # not yet published while its picker was built
    assert bal.resolution is first and bal.pick().id == "i1"
    bal.update(resolution(stale=True, error="connection refused", fetched_at=2.0))
    with pytest.raises(NoHealthyInstanceError, match="connection refused"):
        bal.pick()  # the empty picker's reason is the new resolution's, not the old one's


def test_empty_passing_set_raises_with_a_reason():
    bal = make()
    with pytest.raises(NoHealthyInstanceError, match="not resolved yet"):
        bal.pick()
    bal.update(resolution())
    with pytest.raises(NoHealthyInstanceError, match="no passing instance"):
        bal.pick()
    bal.update(resolution(stale=True, error="connection refused", fetched_at=1.0))
    with pytest.raises(NoHealthyInstanceError, match="connection refused"):
        bal.pick()


def test_stats_report_cache_age_and_instances():
    clock = FakeClock(100.0)
    bal = make(clock=clock)
    bal.update(resolution(instance(1), fetched_at=90.0, index=4, stale=True, error="down"))
    res = bal.resolution
    assert res is not None and res.age(clock()) == pytest.approx(10.0)
    assert res.stale is True and res.index == 4 and res.error == "down"
    (only,) = bal.instance_stats(clock())
    assert only.id == "i1" and only.picks == 0 and only.address == "127.0.0.1:0"


def test_membership_changes_are_logged_at_debug(caplog):
    bal = make()
    with caplog.at_level(logging.DEBUG, logger="consul_discovery.client.balancer"):
        bal.update(resolution(instance(1), instance(2), fetched_at=1.0))
        bal.update(resolution(instance(2), instance(3), index=2, fetched_at=2.0))
    text = caplog.text
    assert "+['i1', 'i2']" in text
    assert "+['i3'] -['i1']" in text


@pytest.mark.parametrize("concurrency", [1, 4])
def test_peak_ewma_tries_an_instance_again_one_decay_time_after_a_stall(concurrency):
    """One 1 s answer at an instance whose calls take 10 ms, like its peers': time alone
    would keep it out of rotation for ~46 s (its cost decayed below its peers'); its
    estimate is forgotten after one decay time (10 s) and a pick tries it again."""
    clock = FakeClock()
    bal = make("peak_ewma", clock=clock)
    bal.update(resolution(instance(1), instance(2), instance(3)))
    stall_at: list[float] = []
    picks_after: list[float] = []
    pending: list = []
    order = count()

    def start() -> None:
        ep = bal.pick()
        started = bal.begin(ep)
        latency = 0.010
        if ep.id == "i3" and not stall_at:
            latency = 1.0
            stall_at.append(clock.now + latency)
        elif ep.id == "i3":
            picks_after.append(clock.now)
        heapq.heappush(pending, (clock.now + latency, next(order), ep, started))

    for _ in range(concurrency):
        start()
    end = clock.now + 60.0
    while pending and clock.now < end:
        done_at, _, ep, started = heapq.heappop(pending)
        clock.now = done_at
        bal.finish(ep, started, failed=False, responded=True)
        start()
    assert stall_at, "i3 was never picked"
    picks_after = [t for t in picks_after if t >= stall_at[0]]  # not beside the stall
    assert picks_after, "i3 was never picked again after its stall"
    back = picks_after[0] - stall_at[0]
    assert 5.0 < back <= 10.5, back  # not at once (the stall counts), not after ~46 s
    # and once it answered fast again it is back in rotation for good
    later = [t for t in picks_after if t > picks_after[0]]
    assert len(later) > 100, len(later)
