"""Answers from several servers: headers read, stale limits, the index across a switch."""

from __future__ import annotations

import pytest

from consul_discovery.connection.server_reads import (
    Action,
    CrossServerIndex,
    ReadMeta,
    StalePolicy,
    read_meta,
)


def meta(index: int | None, last_contact: float | None = 0.0, leader: bool | None = True):
    return ReadMeta(index=index, last_contact=last_contact, known_leader=leader)


def test_headers_are_read_case_insensitively_and_bad_values_are_none():
    got = read_meta(
        {"x-consul-index": "42", "X-Consul-LastContact": "1500", "X-Consul-KnownLeader": "true"}
    )
    assert got == ReadMeta(42, 1.5, True)
    assert read_meta({"X-Consul-Query-Backend": "streaming"}).streaming
    assert read_meta({"X-Consul-KnownLeader": "false"}).known_leader is False
    assert read_meta({"X-Consul-Index": "abc", "X-Consul-LastContact": "-3"}) == ReadMeta(
        None, None, None
    )


def test_stale_params_only_when_asked_and_never_on_the_retry_to_the_leader():
    assert StalePolicy().params() == {}
    assert StalePolicy(stale=True).params() == {"stale": ""}
    assert StalePolicy(stale=True).params(leader=True) == {}
    with pytest.raises(ValueError, match="max_stale"):
        StalePolicy(max_stale=-1)


def test_same_server_follows_consuls_index_rules():
    idx = CrossServerIndex()
    assert idx.index_for(0) == 0
    first = idx.judge(0, meta(10), stale_read=False)
    assert (first.action, first.next_index) == (Action.APPLY, 10)
    assert idx.index_for(0) == 10
    assert idx.judge(0, meta(12), stale_read=False).next_index == 12
    # a missing index counts as 1 (next_index's rule), below ours: a reset
    assert idx.judge(0, meta(None), stale_read=False).action is Action.APPLY_RESET
    idx.judge(0, meta(10), stale_read=False)
    back = idx.judge(0, meta(4), stale_read=False)
    assert (back.action, back.next_index) == (Action.APPLY_RESET, 0)
    assert idx.applied == 0


def test_the_first_query_after_a_switch_is_a_plain_read():
    idx = CrossServerIndex()
    idx.judge(0, meta(500), stale_read=False)
    assert idx.index_for(0) == 500
    assert idx.index_for(1) == 0  # another server: never its future


def test_a_new_server_at_or_past_our_index_continues_the_view():
    idx = CrossServerIndex()
    idx.judge(0, meta(500), stale_read=False)
    same = idx.judge(1, meta(500), stale_read=True)
    assert (same.action, same.next_index) == (Action.APPLY, 500)
    ahead = idx.judge(2, meta(650), stale_read=False)
    assert (ahead.action, ahead.next_index) == (Action.APPLY, 650)
    assert idx.index_for(2) == 650 and idx.applied == 650


def test_a_lagging_follower_is_not_trusted_to_take_the_view_back():
    idx = CrossServerIndex()
    idx.judge(0, meta(500), stale_read=False)
    lag = idx.judge(1, meta(480, last_contact=0.05), stale_read=True)
    assert lag.action is Action.ASK_LEADER and "behind" in lag.reason
    assert idx.applied == 500 and idx.index_for(1) == 0
    leader = idx.judge(1, meta(510), stale_read=False)
    assert (leader.action, leader.next_index) == (Action.APPLY, 510)


def test_the_leader_saying_lower_is_a_reset_not_a_lag():
    idx = CrossServerIndex()
    idx.judge(0, meta(500), stale_read=False)
    reset = idx.judge(1, meta(12), stale_read=False)
    assert (reset.action, reset.next_index) == (Action.APPLY_RESET, 0)
    assert idx.applied == 0
    again = idx.judge(1, meta(13), stale_read=False)
    assert (again.action, again.next_index) == (Action.APPLY, 13)


def test_stale_answers_past_max_stale_or_without_a_leader_are_asked_again():
    idx = CrossServerIndex(StalePolicy(stale=True, max_stale=2.0))
    old = idx.judge(0, meta(100, last_contact=3.5), stale_read=True)
    assert old.action is Action.ASK_LEADER and "max_stale 2s" in old.reason
    fresh = idx.judge(0, meta(100, last_contact=1.0), stale_read=True)
    assert fresh.action is Action.APPLY
    leaderless = idx.judge(0, meta(101, leader=False), stale_read=True)
    assert leaderless.action is Action.ASK_LEADER and "no leader" in leaderless.reason
    assert idx.applied == 100


def test_leaderless_stale_answers_may_be_allowed_and_unknown_contact_passes():
    idx = CrossServerIndex(StalePolicy(stale=True, max_stale=1.0, allow_leaderless=True))
    assert idx.judge(0, meta(7, last_contact=None, leader=False), stale_read=True).action is (
        Action.APPLY
    )


def test_forget_makes_the_next_query_a_plain_read_on_the_same_server():
    idx = CrossServerIndex()
    idx.judge(0, meta(40), stale_read=False)
    idx.forget()
    assert idx.index_for(0) == 0
    assert idx.judge(0, meta(41), stale_read=False).action is Action.APPLY


def test_after_forget_a_lower_index_on_the_same_server_is_a_reset():
    idx = CrossServerIndex()
    idx.judge(0, meta(40), stale_read=False)
    idx.forget()  # the agent went away; it may come back empty
    back = idx.judge(0, meta(3), stale_read=False)
    assert (back.action, back.next_index) == (Action.APPLY_RESET, 0)


def test_streaming_answers_are_not_judged_on_headers_they_do_not_fill():
    # Consul 1.22's streaming backend answers KnownLeader false and LastContact 0 even
    # with a leader (measured on the secure profile, server and client agent alike).
    idx = CrossServerIndex(StalePolicy(stale=True, max_stale=1.0))
    streaming = ReadMeta(index=9, last_contact=0.0, known_leader=False, backend="streaming")
    assert idx.judge(0, streaming, stale_read=True).action is Action.APPLY
    blocking = ReadMeta(index=10, last_contact=0.0, known_leader=False, backend="blocking-query")
    assert idx.judge(0, blocking, stale_read=True).action is Action.ASK_LEADER
