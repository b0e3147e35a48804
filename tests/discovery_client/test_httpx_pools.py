"""A pool per instance for the httpx transports: made on first use, idle ones closed."""

from __future__ import annotations

import asyncio

import httpx

from consul_discovery.client.httpx_pools import AsyncPerInstanceTransport, PerInstanceTransport
from tests.discovery_client.fakes import FakeClock, http_backend, ok


def test_each_instance_gets_its_own_pool_and_idle_ones_are_closed():
    clock = FakeClock()
    with http_backend(ok("a")) as a, http_backend(ok("b")) as b:
        transport = PerInstanceTransport(idle_after=60.0, clock=clock)
        with httpx.Client(transport=transport) as http:
            for _ in range(3):
                assert http.get(f"http://127.0.0.1:{a.port}/").text == "a"
                assert http.get(f"http://127.0.0.1:{b.port}/").text == "b"
            assert len(transport.pools) == 2
            first = transport.pools.get(httpx.URL(f"http://127.0.0.1:{a.port}/"))[0]
            clock.advance(61)  # b idle for a minute: closed at the next use of another
            assert http.get(f"http://127.0.0.1:{a.port}/").text == "a"
            assert len(transport.pools) == 1
            assert transport.pools.get(httpx.URL(f"http://127.0.0.1:{a.port}/"))[0] is first
            assert http.get(f"http://127.0.0.1:{b.port}/").text == "b"  # made again
            assert len(transport.pools) == 2
        assert len(transport.pools) == 0  # closing the client closed every pool


def test_the_async_transport_pools_per_instance_too():
    async def scenario() -> int:
        with http_backend(ok("a")) as a, http_backend(ok("b")) as b:
            transport = AsyncPerInstanceTransport()
            async with httpx.AsyncClient(transport=transport) as http:
                for backend in (a, b, a):
                    await http.get(f"http://127.0.0.1:{backend.port}/")
                return len(transport.pools)

    assert asyncio.run(scenario()) == 2
