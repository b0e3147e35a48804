"""Calling by name, the same through every transport: policy and weights, retry on a
connect error, no resend of an unsafe request without an Idempotency-Key, the
relayed-failure rule. A real agent; instances registered through its HTTP API (TTL
checks) pointing at three gunicorn processes, or at a closed port."""

from __future__ import annotations

import time
from collections import Counter

import pytest

from consul_discovery.client import (
    AllAttemptsFailedError,
    NoHealthyInstanceError,
    RetryPolicy,
    ServiceConfig,
)
from tests.discovery_client.conformance.conftest import register
from tests.harness.ports import free_port

ROUND_ROBIN = ServiceConfig(policy="round_robin")
RETRY = RetryPolicy(deadline=5.0)


def test_picks_follow_the_policy_and_consul_weights(agent, procs, make):
    for n, proc in enumerate(procs):
        register(agent, "rr", f"rr-{n}", proc.port)
    # Passing 10 / Warning 1: the warning instance gets 1 call in 21.
    for n, proc in enumerate(procs):
        status = "warning" if n == 2 else "passing"
        register(agent, "wrr", f"wrr-{n}", proc.port, status=status, weights=(10, 1))
    caller = make(services={"rr": ROUND_ROBIN, "wrr": ROUND_ROBIN}, retry=RETRY)
    seen = Counter(caller.call("rr").instance for _ in range(30))
    assert seen == {"proc-0": 10, "proc-1": 10, "proc-2": 10}
    weighted = Counter(caller.call("wrr").instance for _ in range(42))
    assert weighted == {"proc-0": 20, "proc-1": 20, "proc-2": 2}
    stats = caller.stats().target("rr")
    assert stats.requests == 30 and stats.retries == 0
    assert {i.picks for i in stats.instances} == {10}
    assert caller.stats().target("wrr").instance("wrr-2").weight == 1


def test_a_connect_error_is_retried_on_another_instance_for_any_method(agent, procs, make):
    register(agent, "withdead", "live-0", procs[0].port)
    register(agent, "withdead", "live-1", procs[1].port)
    register(agent, "withdead", "dead", free_port())  # nothing listens there
    caller = make(services={"withdead": ROUND_ROBIN}, retry=RETRY)
    answers = [caller.call("withdead") for _ in range(9)]
    assert [a.status for a in answers] == [200] * 9
    assert {a.instance for a in answers} == {"proc-0", "proc-1"}
    # A POST without Idempotency-Key too: nothing was sent to the dead one.
    posts = [caller.call("withdead", "POST", json={}) for _ in range(6)]
    assert [a.status for a in posts] == [200] * 6
    stats = caller.stats().target("withdead")
    assert stats.instance("dead").failures >= 2
    assert stats.retries == stats.instance("dead").failures
    assert stats.instance("dead").latency_ewma == 0.0  # a refused connect says nothing


def test_an_unsafe_request_is_not_resent_after_a_read_timeout(agent, procs, make):
    slow = procs[2]
    register(agent, "slow", "slow-a", slow.port)
    register(agent, "slow", "slow-b", slow.port)
    caller = make(services={"slow": ROUND_ROBIN}, retry=RETRY)
    caller.call("slow")  # resolved, connections warm
    slow.control(delay=1.0)
    try:
        before = slow.request_count()
        with pytest.raises(AllAttemptsFailedError) as info:
            caller.call("slow", "POST", json={}, read_timeout=0.3)
        assert len(info.value.attempts) == 1
        # A read timeout is a lower bound on the instance's latency (read before it decays).
        tried = info.value.attempts[0][0]
        assert caller.stats().target("slow").instance(tried).latency_ewma >= 0.29
        # Counted once the sleeping handlers finish: exactly one POST reached it.
        caller.until(lambda: slow.request_count() - before >= 1, 5, "the POST to land")
        time.sleep(1.2)  # a resent POST would land within one more delay
        assert slow.request_count() - before == 1
        # The same POST with an Idempotency-Key may be resent: every attempt is made.
        before = slow.request_count()
        with pytest.raises(AllAttemptsFailedError) as info:
            caller.call("slow", "POST", json={}, headers={"Idempotency-Key": "k-1"},
                        read_timeout=0.3)  # fmt: skip
        assert len(info.value.attempts) == RETRY.max_attempts
        caller.until(lambda: slow.request_count() - before == RETRY.max_attempts, 5, "resends")
    finally:
        slow.control(delay=0)


def test_a_relayed_failure_is_neither_retried_nor_counted_for_ejection(agent, procs, make):
    relaying = procs[2]
    register(agent, "relay", "relay-bad", relaying.port)
    register(agent, "relay", "relay-ok", procs[0].port)
    caller = make(services={"relay": ROUND_ROBIN}, retry=RETRY)
    relaying.control(fail=503, origin="dependency")
    try:
        answers = [caller.call("relay") for _ in range(12)]
        assert Counter(a.status for a in answers) == {503: 6, 200: 6}  # never retried
        assert all(a.headers["failure-origin"] == "dependency" for a in answers if a.status > 299)
        stats = caller.stats().target("relay")
        bad = stats.instance("relay-bad")
        assert bad.failures == 0 and not bad.ejected and stats.retries == 0
        # Without the header the same 503 is the instance's own: retried elsewhere.
        relaying.control(origin="")
        own = [caller.call("relay") for _ in range(4)]
        assert [a.status for a in own] == [200] * 4
        stats = caller.stats().target("relay")
        assert stats.instance("relay-bad").failures == stats.retries >= 1
    finally:
        relaying.control(fail=0, origin="")


def test_no_passing_instance_is_a_clear_error(agent, procs, make):
    register(agent, "allcritical", "ac-0", procs[0].port, status="critical")
    caller = make()
    with pytest.raises(NoHealthyInstanceError, match="allcritical"):
        caller.call("allcritical")
    assert caller.stats().target("allcritical").no_instance == 1


def test_a_call_after_close_is_refused_for_a_service_called_before_and_a_new_one(
    agent, procs, make
):
    """Closing releases the pools, watches and mesh identity: no call goes out after it.
    Before, the requests client went on calling a service it had called (its Session
    reopens pools) and refused only a new one."""
    register(agent, "closing", "closing-0", procs[0].port)
    caller = make()
    assert caller.call("closing").status == 200
    caller.close()
    for service in ("closing", "never-called"):
        with pytest.raises(RuntimeError, match="closed"):
            caller.call(service)
