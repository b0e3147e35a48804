"""ServerList and parse_servers: spread, stick, fail over in order, back off, rebalance."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from consul_discovery.connection.backoff import JitterBackoff
from consul_discovery.connection.servers import ServerAddress, ServerList, parse_servers

A = ServerAddress("https", "10.0.0.1", 8501)
B = ServerAddress("https", "10.0.0.2", 8501)
C = ServerAddress("https", "10.0.0.3", 8501)


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def servers(rng_seed: int = 1, **kwargs) -> ServerList:
    return ServerList([A, B, C], rng=random.Random(rng_seed), **kwargs)


# -- parse_servers ---------------------------------------------------------------------


def test_parse_a_comma_or_space_separated_list_in_consul_http_addr_spelling():
    parsed = parse_servers("https://10.0.0.1:8501, https://10.0.0.2:8501  https://10.0.0.3:8501")
    assert parsed == (A, B, C)
    assert parse_servers(["127.0.0.1:8500", "[::1]:8500"]) == (
        ServerAddress("http", "127.0.0.1", 8500),
        ServerAddress("http", "::1", 8500),
    )
    assert str(parse_servers("[::1]:8500")[0]) == "http://[::1]:8500"
    assert parse_servers("10.0.0.1", default_scheme="https")[0] == ServerAddress(
        "https", "10.0.0.1", 443
    )


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("", "no Consul address"),
        (" , ", "no Consul address"),
        ("10.0.0.1:8500, ftp://10.0.0.2", "unknown scheme 'ftp'"),
        ("10.0.0.1:8500,10.0.0.1:8500", "listed twice"),
        ("http://10.0.0.1:8500,https://10.0.0.2:8501", "mixes http and https"),
        ("10.0.0.1:99999", "10.0.0.1:99999"),
        ("[::1:8500", "invalid Consul address '[::1:8500': an unbalanced '['"),
        ("10.0.0.1:8500 ::1]:8500", "invalid Consul address '::1]:8500': an unbalanced"),
    ],
)
def test_bad_lists_name_the_setting_and_the_item(text: str, fragment: str):
    with pytest.raises(ValueError) as info:
        parse_servers(text, setting="CONSUL_HTTP_ADDR")
    assert str(info.value).startswith("CONSUL_HTTP_ADDR: ")
    assert fragment in str(info.value)


# -- spreading and sticking ------------------------------------------------------------


def test_clients_spread_over_the_servers():
    firsts = Counter(ServerList([A, B, C], rng=random.Random(seed)).current for seed in range(300))
    assert set(firsts) == {A, B, C}
    assert min(firsts.values()) >= 70  # ~100 each: no server takes the whole fleet


def test_a_server_that_answers_is_kept():
    servers_ = servers()
    first = servers_.current
    for _ in range(5):
        servers_.succeeded(first)
    assert servers_.current == first and servers_.generation == 0


# -- failing over ----------------------------------------------------------------------


def test_a_failed_server_goes_to_the_back_and_the_next_is_used_at_once():
    servers_ = servers()
    first, second, third = servers_.order
    move = servers_.failed(first)
    assert (move.server, move.delay, move.switched, move.round_failed) == (second, 0, True, False)
    assert servers_.order == (second, third, first)
    assert servers_.generation == 1


def test_every_server_is_tried_once_before_any_twice_then_the_client_backs_off():
    servers_ = servers(backoff=JitterBackoff(0.25, 5.0, rng=random.Random(3)))
    tried = [servers_.current]
    moves = []
    for _ in range(3):
        moves.append(servers_.failed(servers_.current))
        tried.append(servers_.current)
    assert set(tried[:3]) == {A, B, C}
    assert [m.delay for m in moves[:2]] == [0.0, 0.0]
    assert moves[2].round_failed and 0.125 <= moves[2].delay <= 0.25
    # another whole round failing doubles the step
    for _ in range(2):
        servers_.failed(servers_.current)
    again = servers_.failed(servers_.current)
    assert again.round_failed and 0.25 <= again.delay <= 0.5


def test_an_answer_ends_the_failure_streak():
    servers_ = servers(backoff=JitterBackoff(0.25, 5.0, rng=random.Random(3)))
    servers_.failed(servers_.current)
    servers_.failed(servers_.current)
    servers_.succeeded(servers_.current)
    move = servers_.failed(servers_.current)
    assert move.delay == 0 and not move.round_failed


def test_a_late_failure_of_a_server_no_longer_in_use_changes_nothing():
    servers_ = servers()
    old = servers_.current
    servers_.failed(old)
    now = servers_.current
    move = servers_.failed(old)  # a poll that was still in flight on the old server
    assert move.server == now and not move.switched and servers_.generation == 1


def test_a_single_server_is_retried_with_backoff_without_switching():
    one = ServerList([A], rng=random.Random(1))
    move = one.failed(A)
    assert move.server == A and not move.switched and move.round_failed and move.delay > 0
    assert one.generation == 0


# -- rebalancing -----------------------------------------------------------------------


def test_rebalance_only_after_the_interval_and_a_new_server_is_a_new_generation():
    clock = Clock()
    changed = 0
    for seed in range(20):
        servers_ = servers(seed, clock=clock, rebalance_after=60.0)
        assert not servers_.maybe_rebalance()
        clock.now += 61
        before = servers_.current
        if servers_.maybe_rebalance():
            changed += 1
            assert servers_.current != before and servers_.generation == 1
        else:
            assert servers_.current == before and servers_.generation == 0
        clock.now += 1
        assert not servers_.maybe_rebalance()  # the interval starts again
    assert 5 <= changed <= 19  # about two thirds of the shuffles move the client


def test_rebalance_can_be_turned_off():
    clock = Clock()
    servers_ = servers(clock=clock, rebalance_after=None)
    clock.now += 10_000
    assert not servers_.maybe_rebalance()


@pytest.mark.parametrize(
    ("args", "fragment"),
    [(([],), "at least one"), (([A, A],), "listed twice")],
)
def test_bad_server_lists(args, fragment):
    with pytest.raises(ValueError, match=fragment):
        ServerList(*args)
    with pytest.raises(ValueError, match="rebalance_after"):
        ServerList([A], rebalance_after=0)
