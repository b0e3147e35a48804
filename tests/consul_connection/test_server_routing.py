"""ServerRouting and the list senders: the same request on the next server at once, an
index trusted only where it is known, stale answers judged (no I/O, injected clock)."""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable

import pytest

from consul_discovery.connection.exchange import Request, Response, TransportError
from consul_discovery.connection.server_reads import StalePolicy
from consul_discovery.connection.server_routing import ServerRouting, cannot_serve
from consul_discovery.connection.server_sending import (
    AsyncServerListSender,
    ServerListSender,
    drive,
)
from consul_discovery.connection.servers import ServerAddress, parse_servers
from consul_discovery.connection.transport_errors import TransportFailure

SERVERS = parse_servers("http://10.0.0.1:8500,http://10.0.0.2:8500,http://10.0.0.3:8500")
HEALTH = "/v1/health/service/web"


class Clock:
    def __init__(self) -> None:
        self.now = 50.0

    def __call__(self) -> float:
        return self.now


Handler = Callable[[Request], Response]


class Cluster:
    """Fake servers: each answers with its handler and records what it was sent."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.handlers: dict[ServerAddress, Handler] = {s: self.ok(10) for s in SERVERS}
        self.sent: list[tuple[ServerAddress, Request]] = []

    @staticmethod
    def ok(index: int, **headers: str) -> Handler:
        return lambda _request: Response(200, {"X-Consul-Index": str(index), **headers}, b"[]")

    @staticmethod
    def down(kind: TransportFailure = TransportFailure.REFUSED) -> Handler:
        def handler(_request: Request) -> Response:
            raise TransportError(kind, "test")

        return handler

    @staticmethod
    def answer(status: int, body: bytes) -> Handler:
        return lambda _request: Response(status, {}, body)

    def sender(self, routing: ServerRouting) -> ServerListSender:
        def make(server: ServerAddress) -> Callable[[Request], Response]:
            def send(request: Request) -> Response:
                self.sent.append((server, request))
                self.clock.now += 0.002
                return self.handlers[server](request)

            send.interrupt = lambda: None  # type: ignore[attr-defined]
            send.close = lambda: None  # type: ignore[attr-defined]
            return send

        return ServerListSender(routing, {s: make(s) for s in SERVERS})  # type: ignore[misc]


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def cluster(clock: Clock) -> Cluster:
    return Cluster(clock)


def routing(clock: Clock, policy: StalePolicy | None = None, **kwargs) -> ServerRouting:
    return ServerRouting(SERVERS, policy=policy, rng=random.Random(3), clock=clock, **kwargs)


def read(index: int = 0, *params: tuple[str, str]) -> Request:
    blocking = (("index", str(index)), ("wait", "30000ms")) if index else ()
    return Request(HEALTH, (*blocking, *params), 40.0)


# -- the current server, then the next at once ----------------------------------------


def test_the_current_server_answers_and_is_named_on_the_answer(clock, cluster):
    route = routing(clock)
    sender = cluster.sender(route)
    response = sender(read())
    current = route.status().current
    assert response.status == 200 and response.server == str(current)
    assert [s for s, _ in cluster.sent] == [current]
    sender(read())
    assert [s for s, _ in cluster.sent] == [current, current]  # it sticks


def test_a_server_that_fails_is_replaced_within_the_same_request(clock, cluster, caplog):
    route = routing(clock)
    sender = cluster.sender(route)
    first = route.status().current
    cluster.handlers[first] = Cluster.down(TransportFailure.RESET)
    with caplog.at_level(logging.WARNING):
        response = sender(read())
    second = route.status().current
    assert second != first and response.server == str(second)
    assert [s for s, _ in cluster.sent] == [first, second]
    status = route.status()
    assert (status.switches, status.failovers) == (1, 1)
    switch = status.last_switch
    assert switch is not None and (switch.failed, switch.to) == (first, second)
    assert switch.seconds == pytest.approx(0.002)  # from the failure to the answer
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and str(first) in warnings[0] and str(second) in warnings[0]
    sender(read())
    assert cluster.sent[-1][0] == second  # the next request stays on the new server


def test_every_server_failing_raises_the_last_failure_once_each_was_tried(clock, cluster):
    for server in SERVERS:
        cluster.handlers[server] = Cluster.down()
    sender = cluster.sender(routing(clock))
    with pytest.raises(TransportError) as info:
        sender(read())
    assert info.value.kind is TransportFailure.REFUSED
    assert sorted(str(s) for s, _ in cluster.sent) == sorted(str(s) for s in SERVERS)


@pytest.mark.parametrize(
    "body",
    [
        b"No cluster leader",
        b"rpc error making call: EOF",
        b"grpc: the client connection is closing",
    ],
)
def test_a_server_that_cannot_serve_is_skipped_and_the_last_refusal_returned(clock, cluster, body):
    route = routing(clock)
    first = route.status().current
    cluster.handlers[first] = Cluster.answer(500, body)
    sender = cluster.sender(route)
    assert sender(read()).status == 200
    assert len(cluster.sent) == 2
    cluster.sent.clear()
    for server in SERVERS:
        cluster.handlers[server] = Cluster.answer(500, body)
    refused = sender(read())
    assert refused.status == 500 and refused.body == body and len(cluster.sent) == 3


def test_a_rate_limited_server_is_skipped(clock, cluster):
    route = routing(clock)
    cluster.handlers[route.status().current] = Cluster.answer(429, b"rate limit exceeded")
    assert cluster.sender(route)(read()).status == 200
    assert len(cluster.sent) == 2


def test_a_bad_filter_is_the_requests_fault_and_not_retried(clock, cluster):
    route = routing(clock)
    bad = b"Failed to create boolean expression evaluator: bad"
    cluster.handlers[route.status().current] = Cluster.answer(500, bad)
    assert cluster.sender(route)(read()).status == 500
    assert len(cluster.sent) == 1 and route.status().failovers == 0
    assert not cannot_serve(Response(500, {}, bad)) and not cannot_serve(Response(404))


def test_our_own_close_is_never_retried(clock, cluster):
    route = routing(clock)
    cluster.handlers[route.status().current] = Cluster.down(TransportFailure.CLOSED)
    with pytest.raises(TransportError):
        cluster.sender(route)(read())
    assert len(cluster.sent) == 1


@pytest.mark.parametrize(
    ("failure", "retried"),
    [
        (TransportFailure.REFUSED, True),
        (TransportFailure.TLS_UNTRUSTED, True),
        (TransportFailure.RESET, False),  # may have been applied
        (TransportFailure.TIMEOUT, False),
    ],
)
def test_a_write_moves_on_only_when_it_cannot_have_reached_consul(clock, cluster, failure, retried):
    route = routing(clock)
    cluster.handlers[route.status().current] = Cluster.down(failure)
    put = Request("/v1/kv/a", (), 10.0, "PUT", body=b"1")
    sender = cluster.sender(route)
    if retried:
        assert sender(put).status == 200
    else:
        with pytest.raises(TransportError):
            sender(put)
    assert len(cluster.sent) == (2 if retried else 1)


def test_a_write_refused_without_a_leader_moves_on_a_forwarding_error_does_not(clock, cluster):
    route = routing(clock)
    current = route.status().current
    put = Request("/v1/kv/a", (), 10.0, "PUT", body=b"1")
    cluster.handlers[current] = Cluster.answer(500, b"No cluster leader")
    assert cluster.sender(route)(put).status == 200
    current = route.status().current
    cluster.handlers[current] = Cluster.answer(500, b"rpc error making call: EOF")
    assert cluster.sender(route)(put).status == 500  # the leader may have applied it


def test_requests_in_flight_when_a_server_fails_switch_once(clock, cluster):
    """Two watches' polls on one server both fail; the list moves once, both retry."""
    route = routing(clock)
    first = route.status().current
    a, b = route.route(read()), route.route(read())
    assert next(a).server == first and next(b).server == first
    moved = a.throw(TransportError(TransportFailure.RESET))
    again = b.throw(TransportError(TransportFailure.RESET))
    assert moved.server == again.server == route.status().current != first
    assert route.status().switches == 0  # not yet: nobody answered
    for gen in (a, b):
        with pytest.raises(StopIteration):
            gen.send(Response(200, {"X-Consul-Index": "5"}))
    assert route.status().switches == 1


# -- blocking indexes across servers --------------------------------------------------


def test_an_index_goes_only_to_a_server_known_to_have_reached_it(clock, cluster):
    route = routing(clock)
    sender = cluster.sender(route)
    first = route.status().current
    cluster.handlers[first] = Cluster.ok(100)
    assert sender(read()).index == 100
    sender(read(100))
    assert dict(cluster.sent[-1][1].params)["index"] == "100"  # its own index, blocking
    cluster.handlers[first] = Cluster.down(TransportFailure.RESET)
    for server in SERVERS:
        if server != first:
            cluster.handlers[server] = Cluster.ok(120)
    response = sender(read(100))
    moved, sent = cluster.sent[-1]
    assert moved != first and "index" not in dict(sent.params) and "wait" not in dict(sent.params)
    assert response.index == 120 and route.status().plain_reads == 1
    sender(read(120))
    assert dict(cluster.sent[-1][1].params)["index"] == "120"  # blocking again
    assert route.mark(moved) == 120 and route.mark(first) == 0  # forgotten on failure


def test_a_server_that_answered_past_an_index_may_block_on_it(clock, cluster):
    """Another watch's answer from the new server proves it reached the index."""
    route = routing(clock)
    sender = cluster.sender(route)
    current = route.status().current
    cluster.handlers[current] = Cluster.ok(300)
    sender(read())
    sender(read(250))  # an index from elsewhere, below this server's mark
    assert dict(cluster.sent[-1][1].params)["index"] == "250"
    assert route.status().plain_reads == 0


def test_a_server_restarted_after_failing_gets_plain_reads(clock, cluster):
    route = routing(clock, rebalance_after=None)
    sender = cluster.sender(route)
    current = route.status().current
    cluster.handlers[current] = Cluster.ok(50)
    sender(read())
    for server in SERVERS:
        cluster.handlers[server] = Cluster.down()
    with pytest.raises(TransportError):
        sender(read(50))
    for server in SERVERS:
        cluster.handlers[server] = Cluster.ok(3)  # came back empty
    cluster.sent.clear()
    assert sender(read(50)).index == 3  # the watch resets on it (next_index)
    assert "index" not in dict(cluster.sent[0][1].params)


# -- stale reads ----------------------------------------------------------------------


def test_stale_reads_are_asked_for_where_they_mean_something(clock, cluster):
    route = routing(clock, StalePolicy(stale=True))
    sender = cluster.sender(route)
    sender(read())
    assert dict(cluster.sent[-1][1].params) == {"stale": ""}
    sender(read(0, ("consistent", "")))
    assert dict(cluster.sent[-1][1].params) == {"consistent": ""}
    sender(Request("/v1/agent/self", (), 5.0))
    assert cluster.sent[-1][1].params == ()
    sender(Request("/v1/kv/a", (), 5.0, "PUT", body=b"x"))
    assert cluster.sent[-1][1].params == ()


def test_an_answer_past_max_stale_is_asked_again_of_the_leader(clock, cluster):
    route = routing(clock, StalePolicy(stale=True, max_stale=2.0, allow_leaderless=True))
    current = route.status().current
    old = {"X-Consul-LastContact": "5000", "X-Consul-KnownLeader": "true"}
    cluster.handlers[current] = lambda r: (
        Response(200, {"X-Consul-Index": "9", **old})
        if "stale" in dict(r.params)
        else Response(200, {"X-Consul-Index": "11"})
    )
    response = cluster.sender(route)(read())
    assert response.index == 11
    assert [dict(r.params) for _, r in cluster.sent] == [{"stale": ""}, {}]
    assert {s for s, _ in cluster.sent} == {current} and route.status().leader_reads == 1


def test_a_leaderless_follower_serves_within_max_stale(clock, cluster):
    route = routing(clock, StalePolicy(stale=True, max_stale=10.0, allow_leaderless=True))
    current = route.status().current
    headers = {"X-Consul-LastContact": "1500", "X-Consul-KnownLeader": "false"}
    cluster.handlers[current] = Cluster.ok(9, **headers)
    assert cluster.sender(route)(read()).index == 9 and len(cluster.sent) == 1


def test_a_lagging_follower_is_not_believed_on_a_plain_read(clock, cluster):
    route = routing(clock, StalePolicy(stale=True))
    sender = cluster.sender(route)
    first = route.status().current
    cluster.handlers[first] = Cluster.ok(100)
    sender(read())
    cluster.handlers[first] = Cluster.down(TransportFailure.RESET)
    behind = {"X-Consul-LastContact": "10", "X-Consul-KnownLeader": "true"}
    for server in SERVERS:
        if server != first:
            cluster.handlers[server] = lambda r: (
                Response(200, {"X-Consul-Index": "90", **behind})
                if "stale" in dict(r.params)
                else Response(200, {"X-Consul-Index": "104"})
            )
    cluster.sent.clear()
    assert sender(read(100)).index == 104  # the leader's view, not the follower's past
    assert [dict(r.params) for _, r in cluster.sent[1:]] == [{"stale": ""}, {}]


def test_streaming_answers_are_not_judged_on_their_staleness_headers(clock, cluster):
    route = routing(clock, StalePolicy(stale=True, max_stale=1.0))
    current = route.status().current
    cluster.handlers[current] = Cluster.ok(
        9, **{"X-Consul-KnownLeader": "false", "X-Consul-LastContact": "0",
              "X-Consul-Query-Backend": "streaming"}
    )  # fmt: skip
    assert cluster.sender(route)(read()).index == 9
    assert len(cluster.sent) == 1 and route.status().leader_reads == 0


# -- spreading ------------------------------------------------------------------------


def test_clients_spread_and_rebalance(clock, cluster):
    firsts = {ServerRouting(SERVERS, rng=random.Random(n)).status().current for n in range(30)}
    assert firsts == set(SERVERS)
    route = routing(clock, rebalance_after=60.0)
    seen = {route.status().current}
    for _ in range(10):
        clock.now += 61
        cluster.sender(route)(read())
        seen.add(cluster.sent[-1][0])
    assert len(seen) > 1


def test_drive_returns_what_the_route_returns():
    route = ServerRouting(SERVERS[:2], rng=random.Random(1))
    assert drive(route.route(read()), lambda a: Response(204)).status == 204


# -- the async shell ------------------------------------------------------------------


def test_the_async_sender_follows_the_same_rules(clock):
    route = routing(clock)
    first = route.status().current
    calls: list[ServerAddress] = []

    class One:
        def __init__(self, server: ServerAddress) -> None:
            self.server = server
            self.closed = False

        async def __call__(self, request: Request) -> Response:
            calls.append(self.server)
            await asyncio.sleep(0)
            if self.server == first:
                raise TransportError(TransportFailure.RESET)
            return Response(200, {"X-Consul-Index": "7"})

        async def aclose(self) -> None:
            self.closed = True

    senders = {s: One(s) for s in SERVERS}
    sender = AsyncServerListSender(route, senders)

    async def main() -> Response:
        try:
            return await sender(read())
        finally:
            await sender.aclose()

    response = asyncio.run(main())
    assert response.index == 7 and calls[0] == first and calls[1] != first
    assert all(one.closed for one in senders.values())


def test_a_list_sender_needs_a_sender_per_server(clock):
    with pytest.raises(ValueError, match="no sender for"):
        ServerListSender(routing(clock), {})
