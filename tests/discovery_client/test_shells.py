"""The core's rules hold the same through each shell, with canned in-memory transports.

Each test runs through the requests shell (ServiceClient, an adapter that answers from a
script), the sync httpx shell and the asyncio httpx shell (``httpx.MockTransport``), with
an injected clock whose sleeps only advance it: no socket, no sleep, no Consul. The same
rules against a real agent and real backends: tests/discovery_client/conformance/.
"""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import httpx
import pytest
import requests
import urllib3
from requests.adapters import BaseAdapter

from consul_discovery.client import (
    AllAttemptsFailedError,
    AsyncDiscoveryTransport,
    DiscoveryError,
    DiscoveryTransport,
    NoHealthyInstanceError,
    RetryPolicy,
    ServiceClient,
    ServiceConfig,
)
from consul_discovery.client.propagation import propagating
from consul_discovery.client.target import service_of
from tests.discovery_client.fakes import FakeClock, StaticSource, instance, resolution

SHELLS = ("requests", "httpx", "httpx-async")
# port -> what that instance does: (status, headers), or "refuse" (connect refused)
Script = Mapping[int, Any]


def _refused_requests(url: str) -> requests.ConnectionError:
    reason = urllib3.exceptions.NewConnectionError(None, "refused")  # type: ignore[arg-type]
    return requests.ConnectionError(urllib3.exceptions.MaxRetryError(None, url, reason))  # type: ignore[arg-type]


class ScriptedAdapter(BaseAdapter):
    """A requests transport answering from a script, recording what it was sent."""

    def __init__(self, script: Script, sent: list[Any]) -> None:
        super().__init__()
        self.script, self.sent = script, sent

    def send(self, request: requests.PreparedRequest, **kwargs: Any) -> requests.Response:
        self.sent.append((request.url, dict(request.headers), kwargs.get("timeout")))
        port = int((request.url or "").split(":")[2].split("/")[0])
        what = self.script[port]
        if what == "refuse":
            raise _refused_requests(request.url or "")
        status, headers = what
        response = requests.Response()
        response.status_code, response._content = status, f"{port}".encode()
        response.headers.update(headers)
        response.request, response.url = request, request.url or ""
        return response

    def close(self) -> None:
        """Nothing to close."""


def _handler(script: Script, sent: list[Any]) -> Callable[[httpx.Request], httpx.Response]:
    def answer(request: httpx.Request) -> httpx.Response:
        sent.append((str(request.url), dict(request.headers), request.extensions["timeout"]))
        what = script[request.url.port]
        if what == "refuse":
            raise httpx.ConnectError("refused", request=request)
        status, headers = what
        return httpx.Response(status, headers=headers, content=str(request.url.port).encode())

    return answer


class _AsyncSource:
    """StaticSource, awaitable."""

    def __init__(self, source: StaticSource) -> None:
        self.source = source

    async def resolve(self, service: str, timeout: float = 5.0) -> Any:
        return self.source.resolve(service, timeout)

    def cached(self, service: str) -> Any:
        return self.source.current.get(service_of(service))

    def subscribe(self, service: str, listener: Any) -> None:
        self.source.subscribe(service, listener)

    async def aclose(self) -> None:
        """Nothing to stop."""


class Shell:
    """One shell over instances i1..iN of ``svc`` on ``ports``, answering from ``script``."""

    def __init__(self, kind: str, script: Script, clock: FakeClock, **knobs: Any) -> None:
        self.kind, self.clock, self.sent = kind, clock, []
        res = resolution(*(instance(n, port=p) for n, p in enumerate(script, 1)),
                         fetched_at=clock())  # fmt: skip
        source = StaticSource(res)
        knobs.setdefault("default_config", ServiceConfig(policy="round_robin"))
        common = {"clock": clock, "rng": random.Random(3), **knobs}
        if kind == "requests":
            session = requests.Session()
            session.mount("http://", ScriptedAdapter(script, self.sent))
            self.owner: Any = ServiceClient(source=source, session=session, sleep=clock.sleep,
                                            **common)  # fmt: skip
        elif kind == "httpx":
            inner = httpx.MockTransport(_handler(script, self.sent))
            self.owner = DiscoveryTransport(source=source, inner=inner, sleep=clock.sleep, **common)
            self.http: Any = httpx.Client(transport=self.owner)
        else:

            async def sleep(seconds: float) -> None:
                clock.sleep(seconds)

            inner = httpx.MockTransport(_handler(script, self.sent))
            self.loop = asyncio.new_event_loop()
            self.owner = AsyncDiscoveryTransport(source=_AsyncSource(source), inner=inner,  # type: ignore[arg-type]
                                                 sleep=sleep, **common)  # fmt: skip
            self.http = httpx.AsyncClient(transport=self.owner)

    def call(self, method: str = "GET", headers: dict[str, str] | None = None) -> tuple[int, str]:
        """(status, the port that answered); raises the DiscoveryError on failure."""
        try:
            if self.kind == "requests":
                r = self.owner.request("svc", method, "/p?q=1", headers=headers)
                return r.status_code, r.text
            if self.kind == "httpx":
                r = self.http.request(method, "http://svc/p?q=1", headers=headers)
            else:
                coro = self.http.request(method, "http://svc/p?q=1", headers=headers)
                r = self.loop.run_until_complete(coro)
            return r.status_code, r.text
        except httpx.TransportError as exc:
            if isinstance(exc.__cause__, DiscoveryError):
                raise exc.__cause__ from exc
            raise

    def stats(self) -> Any:
        return self.owner.stats().target("svc")

    def close(self) -> None:
        if self.kind == "requests":
            self.owner.close()
        elif self.kind == "httpx":
            self.http.close()
        else:
            self.loop.run_until_complete(self.http.aclose())
            self.loop.close()


@pytest.fixture(params=SHELLS)
def shell(request: pytest.FixtureRequest) -> Iterator[Callable[..., Shell]]:
    made: list[Shell] = []

    def factory(script: Script, clock: FakeClock | None = None, **knobs: Any) -> Shell:
        made.append(Shell(request.param, script, clock or FakeClock(), **knobs))
        return made[-1]

    yield factory
    for one in made:
        one.close()


OK = (200, {})


def test_each_attempt_goes_to_its_instance_with_trace_headers_and_capped_timeouts(shell):
    s = shell({9001: (503, {}), 9002: OK}, retry=RetryPolicy(deadline=1.0))
    with propagating({"traceparent": "00-abc-def-01"}):
        assert s.call() == (200, "9002")
    assert len(s.sent) == 2
    urls = [url for url, _, _ in s.sent]
    assert urls == ["http://127.0.0.1:9001/p?q=1", "http://127.0.0.1:9002/p?q=1"]
    for _, headers, timeout in s.sent:
        lowered = {k.lower(): v for k, v in headers.items()}
        assert lowered["traceparent"] == "00-abc-def-01"
        values = timeout.values() if isinstance(timeout, dict) else timeout
        assert all(0 < t <= 1.0 for t in values)


def test_a_5xx_is_retried_elsewhere_only_when_the_request_may_be_sent_again(shell):
    s = shell({9001: (503, {}), 9002: OK})
    assert Counter(s.call("POST") for _ in range(4)) == {(503, "9001"): 2, (200, "9002"): 2}
    key = {"Idempotency-Key": "order-17"}
    assert Counter(s.call("POST", key) for _ in range(4)) == {(200, "9002"): 4}
    g = shell({9001: (502, {}), 9002: (504, {}), 9003: OK})
    assert {g.call() for _ in range(6)} == {(200, "9003")}  # each instance once per call
    assert g.stats().instance("i3").picks == 6


def test_500_and_404_are_returned_as_is_without_retry(shell):
    s = shell({9001: (500, {}), 9002: (404, {})})
    assert [s.call("DELETE") for _ in range(2)] == [(500, "9001"), (404, "9002")]
    assert s.stats().retries == 0


def test_every_instance_answering_503_stays_within_the_retry_budget(shell):
    clock = FakeClock()
    s = shell({9001: (503, {}), 9002: (503, {}), 9003: (503, {})}, clock,
              default_config=ServiceConfig(policy="least_request"))  # fmt: skip
    assert Counter(s.call()[0] for _ in range(200)) == {503: 200}
    stats = s.stats()
    attempts = sum(i.picks for i in stats.instances)
    assert attempts == 200 + stats.retries
    assert attempts <= 200 * 1.2 + 10 + 10 * (clock() - 1000.0) and stats.retries_denied > 0


def test_a_short_retry_after_is_honoured_and_a_long_one_returns_the_answer(shell):
    clock = FakeClock()
    s = shell({9001: (503, {"Retry-After": "2"}), 9002: OK}, clock,
              retry=RetryPolicy(max_retry_after=2.0))  # fmt: skip
    assert [s.call() for _ in range(2)] == [(200, "9002")] * 2
    assert clock.sleeps == [2.0]  # exactly one call met the 503 first, and waited as asked
    long = shell({9001: (503, {"Retry-After": "120"}), 9002: OK}, clock)
    assert long.call("POST", {"Idempotency-Key": "k"}) == (503, "9001")
    assert clock.sleeps == [2.0]  # the caller decides: no thread sleeps two minutes


def test_a_relayed_failure_is_not_retried_nor_held_against_the_instance(shell):
    relayed = (503, {"Failure-Origin": "dependency", "Retry-After": "0"})
    s = shell({9001: relayed, 9002: relayed})
    assert Counter(s.call()[0] for _ in range(10)) == {503: 10}
    stats = s.stats()
    assert stats.retries == 0 and all(i.failures == 0 for i in stats.instances)


def test_an_instance_failing_five_times_in_a_row_is_ejected(shell):
    clock = FakeClock()
    s = shell({9001: (500, {}), 9002: OK}, clock)
    for _ in range(10):
        s.call()  # round robin: 9001 answers 500 (not retried) every other call
    assert {s.call()[1] for _ in range(10)} == {"9002"}
    stats = s.stats()
    assert stats.ejections == 1 and stats.instance("i1").ejected
    clock.advance(30.1)
    assert "9001" in {s.call()[1] for _ in range(4)}


def test_every_instance_refusing_stays_within_the_retry_budget(shell):
    clock = FakeClock()
    s = shell({9001: "refuse", 9002: "refuse", 9003: "refuse"}, clock)
    for _ in range(60):
        with pytest.raises(AllAttemptsFailedError) as caught:
            s.call()
    stats = s.stats()
    attempts = sum(i.picks for i in stats.instances)
    assert attempts <= 60 * 1.2 + 10 + 10 * (clock() - 1000.0)
    assert stats.failed_calls == 60 and stats.retries_denied > 0
    assert 1 <= len(caught.value.attempts) <= 3


def test_no_instance_is_a_clear_error(shell):
    s = shell({})
    with pytest.raises(NoHealthyInstanceError):
        s.call()
    assert s.stats().no_instance == 1


def test_a_cancelled_async_call_leaves_nothing_in_flight():
    started = asyncio.Event()

    async def hang(request: httpx.Request) -> httpx.Response:
        started.set()
        await asyncio.sleep(60)
        raise AssertionError("not reached")

    async def scenario() -> Any:
        source = _AsyncSource(StaticSource(resolution(instance(1, port=9001))))
        transport = AsyncDiscoveryTransport(source=source, inner=httpx.MockTransport(hang))  # type: ignore[arg-type]
        async with httpx.AsyncClient(transport=transport) as http:
            task = asyncio.create_task(http.get("http://svc/"))
            await started.wait()
            await asyncio.sleep(0.05)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            return transport.stats().target("svc").instance("i1")

    inst = asyncio.run(scenario())
    assert inst.in_flight == 0 and inst.failures == 0
    assert inst.latency_ewma >= 0.04  # how long it had waited: a lower bound


def test_an_opentelemetry_span_is_propagated_when_nothing_else_is(shell):
    from opentelemetry import context, trace

    s = shell({9001: OK})
    s.call()
    assert "traceparent" not in {k.lower() for k in s.sent[-1][1]}  # no span: nothing added
    span = trace.NonRecordingSpan(
        trace.SpanContext(0xABC, 0xDEF, is_remote=False, trace_flags=trace.TraceFlags(1))
    )
    token = context.attach(trace.set_span_in_context(span))
    try:
        s.call()
    finally:
        context.detach(token)
    sent = {k.lower(): v for k, v in s.sent[-1][1].items()}
    assert sent["traceparent"] == f"00-{0xABC:032x}-{0xDEF:016x}-01"
