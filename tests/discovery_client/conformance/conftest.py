"""The conformance harness: every transport behind one blocking interface.

Each test of this package runs once per transport: ``requests`` (``ServiceClient``,
threaded ``ConsulSource``), ``httpx`` (``httpx.Client`` + ``DiscoveryTransport``, its own
core over a threaded ``ConsulSource``) and ``httpx-async`` (``httpx.AsyncClient`` +
``AsyncDiscoveryTransport`` over ``AsyncConsulSource``, on an event loop running in a
thread of its own, as in an asyncio service: its watch tasks run all the time). So the
three transports, and both sources, are held to the same rules against a real Consul
agent and real gunicorn backends (tests/harness/backends.py).

A ``Caller`` makes one call and returns an ``Answer``; a discovery failure raises the
DiscoveryError itself (for httpx, the ``__cause__`` of the httpx error it surfaces as:
that mapping has its own test), so every rule is asserted the same way.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

import httpx
import pytest
import requests

from bench.loadgen import LoadReport, run_open_loop, run_open_loop_async
from consul_discovery.client import (
    AsyncDiscoveryTransport,
    DiscoveryError,
    DiscoveryTransport,
    ServiceClient,
)
from consul_discovery.client.stats import ClientStats
from tests.harness.agent import ConsulAgent, running_agent
from tests.harness.backends import Backend
from tests.harness.ports import free_port

TRANSPORTS = ("requests", "httpx", "httpx-async")
T = TypeVar("T")


@dataclass(frozen=True)
class Answer:
    """One call's HTTP answer, whatever the transport."""

    status: int
    headers: dict[str, str]  # lower-cased names
    body: Any  # JSON if it parses, else text

    @property
    def instance(self) -> str:
        """The backend process that answered (its ``{"instance": ID}`` body)."""
        return self.body["instance"]


class Loop:
    """An event loop running in a thread of its own; ``run`` a coroutine on it and wait."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="conformance-loop")
        self.thread.start()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 60.0) -> T:
        """Run ``coro`` on the loop; its result or exception."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def close(self) -> None:
        """Stop the loop and join its thread."""
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


def _discovery_error(exc: httpx.TransportError) -> BaseException:
    cause = exc.__cause__
    return cause if isinstance(cause, DiscoveryError) else exc


def _answer(status: int, headers: Any, body: bytes) -> Answer:
    import json

    try:
        parsed: Any = json.loads(body)
    except ValueError:
        parsed = body.decode(errors="replace")
    return Answer(status, {k.lower(): v for k, v in headers.items()}, parsed)


class Caller:
    """One transport of the three, made with ``knobs`` (as ServiceClient takes them)."""

    def __init__(self, kind: str, address: str, **knobs: Any) -> None:
        self.kind = kind
        self.loop: Loop | None = None
        if kind == "requests":
            self.client: Any = ServiceClient(address, **knobs)
            self.owner: Any = self.client
        elif kind == "httpx":
            self.owner = DiscoveryTransport(consul_addr=address, **knobs)
            self.client = httpx.Client(transport=self.owner, timeout=httpx.Timeout(10.0))
        else:
            self.loop = Loop()

            async def make() -> tuple[Any, Any]:
                transport = AsyncDiscoveryTransport(address, **knobs)
                return transport, httpx.AsyncClient(
                    transport=transport, timeout=httpx.Timeout(10.0)
                )

            self.owner, self.client = self.loop.run(make())

    # -- one call ----------------------------------------------------------------------

    def call(
        self,
        service: str,
        method: str = "GET",
        path: str = "/",
        *,
        headers: dict[str, str] | None = None,
        json: Any = None,
        read_timeout: float | None = None,
    ) -> Answer:
        """One call; raises the DiscoveryError when discovery fails."""
        if self.kind == "requests":
            timeout = (1.0, read_timeout or 10.0)
            r = self.client.request(service, method, path, headers=headers, json=json,
                                    timeout=timeout)  # fmt: skip
            return _answer(r.status_code, r.headers, r.content)
        timeout = httpx.Timeout(10.0, read=read_timeout or 10.0)
        url = f"http://{service}{path}"
        try:
            if self.loop is None:
                r = self.client.request(method, url, headers=headers, json=json, timeout=timeout)
            else:
                coro = self.client.request(method, url, headers=headers, json=json,
                                           timeout=timeout)  # fmt: skip
                r = self.loop.run(coro)
        except httpx.TransportError as exc:
            raise _discovery_error(exc) from exc
        return _answer(r.status_code, r.headers, r.content)

    def caller(self, service: str) -> Callable[[int], tuple[bool, str]]:
        """A load-generator call (``seq -> (ok, instance)``) for a sync transport."""

        def call(_seq: int) -> tuple[bool, str]:
            answer = self.call(service)
            return answer.status == 200, str(answer.body.get("instance", answer.status))

        return call

    def open_loop(self, service: str, rate: float, seconds: float) -> LoadReport:
        """Open-loop GETs at ``rate`` for ``seconds`` (asyncio tasks for the async one)."""
        if self.loop is None:
            return run_open_loop(self.caller(service), rate, seconds, max_workers=64)

        async def call(_seq: int) -> tuple[bool, str]:
            r = await self.client.get(f"http://{service}/")
            return r.status_code == 200, str(r.json().get("instance", r.status_code))

        return self.loop.run(run_open_loop_async(call, rate, seconds), timeout=seconds + 60)

    # -- observing -----------------------------------------------------------------------

    def stats(self) -> ClientStats:
        """The transport's typed stats (read on its loop for the async one)."""
        if self.loop is None:
            return self.owner.stats()

        async def read() -> ClientStats:
            return self.owner.stats()

        return self.loop.run(read())

    def metrics_text(self) -> str:
        """The transport's own Prometheus exposition."""
        from prometheus_client import generate_latest

        return generate_latest(self.owner.metrics_registry).decode()

    def until(self, predicate: Callable[[], Any], timeout: float, what: str) -> Any:
        """Poll ``predicate`` until truthy, or fail naming ``what``."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = predicate()
            if value:
                return value
            time.sleep(0.02)
        raise AssertionError(f"{self.kind}: timed out after {timeout}s waiting for {what}")

    def close(self) -> None:
        """Close the client (and so the transport and what it made); the async one's
        loop stays up for calls after it (``shutdown`` stops it)."""
        if self.loop is None:
            self.client.close()
        else:
            self.loop.run(self.client.aclose())

    def shutdown(self) -> None:
        """Close the client and stop the async one's loop (the fixture's teardown)."""
        self.close()
        if self.loop is not None:
            self.loop.close()


Make = Callable[..., Caller]


@pytest.fixture(scope="module")
def agent() -> Iterator[ConsulAgent]:
    """One dev agent for a module (tests register services under names of their own)."""
    with running_agent() as started:
        yield started


@pytest.fixture(scope="module")
def procs() -> Iterator[list[Backend]]:
    """Three gunicorn processes; tests register instances of their services onto them."""
    backends = [Backend(id=f"proc-{n}", service="unused", port=free_port()) for n in range(3)]
    try:
        for proc in backends:
            proc.start(delay=0.0)
        for proc in backends:
            proc.wait_ready()
        yield backends
    finally:
        for proc in backends:
            proc.stop()


@pytest.fixture(params=TRANSPORTS)
def make(request: pytest.FixtureRequest, agent: ConsulAgent) -> Iterator[Make]:
    """``make(on=agent, **knobs)``: a Caller of this test's transport, closed afterwards
    (``address`` instead of ``on``: Consul at another address, e.g. a proxy)."""
    callers: list[Caller] = []

    def factory(on: ConsulAgent | None = None, address: str | None = None, **knobs: Any) -> Caller:
        caller = Caller(request.param, address or (on or agent).address, **knobs)
        callers.append(caller)
        return caller

    try:
        yield factory
    finally:
        for caller in callers:
            caller.shutdown()


def register(
    agent: ConsulAgent,
    service: str,
    ident: str,
    port: int,
    *,
    status: str = "passing",
    weights: tuple[int, int] | None = None,
    meta: dict[str, str] | None = None,
) -> None:
    """An instance of ``service`` at 127.0.0.1:``port`` with a TTL check (``status``)."""
    body: dict[str, Any] = {
        "ID": ident, "Name": service, "Address": "127.0.0.1", "Port": port,
        "Check": {"CheckID": f"service:{ident}", "TTL": "1h", "Status": status},
    }  # fmt: skip
    if meta is not None:
        body["Meta"] = meta
    if weights is not None:
        body["Weights"] = {"Passing": weights[0], "Warning": weights[1]}
    requests.put(f"{agent.url}/v1/agent/service/register", json=body, timeout=5).raise_for_status()


def set_ttl(agent: ConsulAgent, ident: str, status: str) -> None:
    """Drive an instance's TTL check: passing, warning or critical."""
    verb = {"passing": "pass", "warning": "warn", "critical": "fail"}[status]
    requests.put(f"{agent.url}/v1/agent/check/{verb}/service:{ident}", timeout=5).raise_for_status()
