"""ServerReads: a watch's requests across servers, failovers and stale reads together."""

from __future__ import annotations

import random

from consul_discovery.connection.server_reads import Action, StalePolicy
from consul_discovery.connection.server_watch import ServerReads
from consul_discovery.connection.servers import ServerList, parse_servers

SERVERS = parse_servers("https://10.0.0.1:8501,https://10.0.0.2:8501,https://10.0.0.3:8501")


def headers(index: int, *, contact_ms: int = 0, leader: bool = True, backend: str = "") -> dict:
    out = {
        "X-Consul-Index": str(index),
        "X-Consul-LastContact": str(contact_ms),
        "X-Consul-KnownLeader": "true" if leader else "false",
    }
    if backend:
        out["X-Consul-Query-Backend"] = backend
    return out


def servers() -> ServerList:
    return ServerList(SERVERS, rng=random.Random(4))


def test_a_watch_blocks_on_its_server_with_the_index_it_got_there():
    reads = ServerReads(servers())
    first = reads.plan()
    assert (first.index, dict(first.params), first.stale) == (0, {}, False)
    assert reads.answered(first, headers(10)).action is Action.APPLY
    second = reads.plan()
    assert (second.server, second.index) == (first.server, 10)


def test_after_a_failure_the_next_server_gets_a_plain_read_then_the_view_continues():
    reads = ServerReads(servers())
    plan = reads.plan()
    reads.answered(plan, headers(10))
    failover = reads.failed(reads.plan())
    assert failover.switched and failover.delay == 0
    moved = reads.plan()
    assert moved.server == failover.server != plan.server and moved.index == 0
    assert reads.answered(moved, headers(12)).action is Action.APPLY
    assert reads.plan().index == 12


def test_a_lagging_follower_read_stale_is_asked_again_of_the_leader():
    reads = ServerReads(servers(), StalePolicy(stale=True, max_stale=2.0))
    plan = reads.plan()
    assert dict(plan.params) == {"stale": ""}
    reads.answered(plan, headers(100))
    reads.failed(reads.plan())
    behind = reads.plan()
    verdict = reads.answered(behind, headers(90, contact_ms=50))
    assert verdict.action is Action.ASK_LEADER
    leader = reads.plan()
    assert (leader.server, leader.index, dict(leader.params)) == (behind.server, 0, {})
    assert reads.answered(leader, headers(105)).action is Action.APPLY
    again = reads.plan()
    assert (again.index, dict(again.params)) == (105, {"stale": ""})


def test_a_stale_answer_past_max_stale_is_asked_of_the_leader_but_streaming_is_not_judged():
    reads = ServerReads(servers(), StalePolicy(stale=True, max_stale=1.0))
    old = reads.plan()
    assert reads.answered(old, headers(7, contact_ms=4000)).action is Action.ASK_LEADER
    assert reads.answered(reads.plan(), headers(8)).action is Action.APPLY
    streaming = reads.plan()
    verdict = reads.answered(streaming, headers(9, leader=False, backend="streaming"))
    assert verdict.action is Action.APPLY


def test_an_answer_in_flight_during_another_watchs_failover_is_judged_where_it_was_read():
    shared = servers()
    a, b = ServerReads(shared), ServerReads(shared)
    a.answered(a.plan(), headers(50))
    in_flight = a.plan()  # a's long poll on the first server
    b.failed(b.plan())  # b's poll failed: the process moves to the next server
    assert shared.current != in_flight.server
    assert a.answered(in_flight, headers(51)).action is Action.APPLY  # continuous there
    follow_up = a.plan()
    assert follow_up.server == shared.current and follow_up.index == 0  # a plain read


def test_the_leader_answering_lower_after_a_switch_is_a_reset():
    reads = ServerReads(servers())
    reads.answered(reads.plan(), headers(500))
    reads.failed(reads.plan())
    verdict = reads.answered(reads.plan(), headers(20))
    assert verdict.action is Action.APPLY_RESET
    assert reads.plan().index == 0


def test_every_server_failing_in_a_row_backs_off_and_ends_any_leader_retry():
    reads = ServerReads(servers(), StalePolicy(stale=True, max_stale=1.0))
    reads.answered(reads.plan(), headers(3, contact_ms=5000))  # ask the leader next...
    delays = [reads.failed(reads.plan()).delay for _ in range(3)]  # ...but all fail
    assert delays[:2] == [0.0, 0.0] and delays[2] > 0
    assert dict(reads.plan().params) == {"stale": ""}
