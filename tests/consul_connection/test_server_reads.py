"""Answers from several servers: headers read, stale limits (the routing applies them:
tests/consul_connection/test_server_routing.py)."""

from __future__ import annotations

import pytest

from consul_discovery.connection.server_reads import ReadMeta, StalePolicy, read_meta


def meta(last_contact: float | None = 0.0, leader: bool | None = True, backend=None):
    return ReadMeta(index=7, last_contact=last_contact, known_leader=leader, backend=backend)


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


def test_answers_past_max_stale_or_without_a_leader_are_too_stale():
    policy = StalePolicy(stale=True, max_stale=2.0)
    assert "max_stale 2s" in (policy.too_stale(meta(last_contact=3.5)) or "")
    assert policy.too_stale(meta(last_contact=1.0)) is None
    assert "no leader" in (policy.too_stale(meta(leader=False)) or "")


def test_leaderless_answers_may_be_allowed_and_unknown_contact_passes():
    policy = StalePolicy(stale=True, max_stale=1.0, allow_leaderless=True)
    assert policy.too_stale(meta(last_contact=None, leader=False)) is None
    assert policy.too_stale(meta(last_contact=1.5, leader=False)) is not None


def test_streaming_answers_are_not_judged_on_headers_they_do_not_fill():
    # Consul 1.22's streaming backend answers KnownLeader false and LastContact 0 even
    # with a leader (measured on the secure profile, server and client agent alike).
    policy = StalePolicy(stale=True, max_stale=1.0)
    assert policy.too_stale(meta(leader=False, backend="streaming")) is None
    assert policy.too_stale(meta(leader=False, backend="blocking-query")) is not None
