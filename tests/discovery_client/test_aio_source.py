"""AsyncConsulSource against a real agent: the same answers and the same stale-on-error
and restart behaviour as the threaded ConsulSource (both drive the shared WatchState and
health query), with no thread per watched service and a clean cancel on close."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from functools import partial

import pytest

from consul_discovery.client.aio import AsyncConsulSource
from consul_discovery.client.consul_source import ConsulSource
from consul_discovery.client.errors import ConsulUnavailableError, UnknownServiceError
from consul_discovery.client.instance import Resolution
from tests.harness.agent import ConsulAgent
from tests.harness.backends import Backend, start_backends, wait_until_passing
from tests.harness.waiting import wait_for_async

until = partial(wait_for_async, interval=0.01)  # on the loop, every 10 ms


def ids(resolution: Resolution | None) -> set[str]:
    return {i.id for i in resolution.instances} if resolution else set()


@pytest.fixture
def echo(consul_agent: ConsulAgent) -> Iterator[list[Backend]]:
    with start_backends(consul_agent, "echo", 3) as backends:
        yield backends


def test_async_and_threaded_sources_agree_through_an_outage_and_a_restart(consul_agent, echo):
    async def scenario() -> None:
        threaded = ConsulSource(consul_agent.address, backoff_cap=1.0)
        threads_before = threading.active_count()
        async with AsyncConsulSource(consul_agent.address, backoff_cap=1.0) as source:
            fresh = await source.resolve("echo")
            await source.resolve("consul")
            assert threading.active_count() == threads_before  # no thread per watch
            assert ids(fresh) == ids(threaded.resolve("echo")) == {"echo-0", "echo-1", "echo-2"}
            seen: list[Resolution] = []
            source.subscribe("echo", seen.append)
            assert seen == [fresh]

            # A deregistration reaches the async cache through the blocking query.
            removed = time.monotonic()
            await asyncio.to_thread(echo[2].deregister)
            await until(lambda: ids(source.cached("echo")) == {"echo-0", "echo-1"}, 5, "removal")
            print(f"\nasync watch saw a deregistration after {time.monotonic() - removed:.3f}s")
            assert ids(seen[-1]) == {"echo-0", "echo-1"}

            # Consul goes away: both serve the last-known-good instances, marked stale.
            await asyncio.to_thread(consul_agent.stop)
            stale = await until(lambda: (r := source.cached("echo")).stale and r, 10, "stale")
            other = await until(lambda: (r := threaded.resolve("echo")).stale and r, 10, "stale")
            assert ids(stale) == ids(other) == {"echo-0", "echo-1"}
            # Which error the stop gives is a race (connection refused, or the agent's
            # "500 grpc: the client connection is closing" while it shuts down): both are
            # Consul being unavailable, and that is what both sources must say.
            for error in (stale.error, other.error):
                assert error and error.startswith("ConsulUnavailableError: "), error
            assert stale.fetched_at == seen[-1].fetched_at  # its age keeps growing
            assert seen[-1] is stale  # listeners hear about staleness, once

            # The agent restarts empty: re-registered backends come back in both.
            await asyncio.to_thread(consul_agent.start)
            agent_client = consul_agent.client()
            for backend in echo[:2]:
                await asyncio.to_thread(backend.register, agent_client)
            await asyncio.to_thread(wait_until_passing, agent_client, "echo", 2)
            two = {"echo-0", "echo-1"}
            back = await until(
                lambda: (r := source.cached("echo")) and not r.stale and ids(r) == two and r,
                15,
                "async resume",
            )
            again = await until(
                lambda: (r := threaded.resolve("echo")) and not r.stale and ids(r) == two and r,
                15,
                "sync resume",
            )
            assert ids(back) == ids(again) == two
            assert back.error is None and back.fetched_at > stale.fetched_at
            tasks = [t for t in asyncio.all_tasks() if t.get_name().startswith("consul-watch-")]
            assert len(tasks) == 2
        # Closing cancelled every watch, blocking query in flight or not.
        assert all(t.done() for t in tasks)
        threaded.close()

    asyncio.run(scenario())


def test_errors_match_the_threaded_source(consul_agent, consul_agent_unstarted):
    async def scenario() -> None:
        async with AsyncConsulSource(consul_agent.address) as source:
            with pytest.raises(UnknownServiceError) as info:
                await source.resolve("no-such-service")
            assert "consul" in info.value.known
        async with AsyncConsulSource(consul_agent_unstarted.address) as down:
            with pytest.raises(ConsulUnavailableError) as unreachable:
                await down.resolve("echo", timeout=2.0)
            assert unreachable.value.__cause__ is not None or "unreachable" in str(
                unreachable.value
            )

    asyncio.run(scenario())


def test_close_cancels_a_blocking_query_at_once(consul_agent):
    async def scenario() -> float:
        source = AsyncConsulSource(consul_agent.address, wait=30.0)
        await source.resolve("consul")
        await asyncio.sleep(0.2)  # the watch is now inside a 30 s blocking query
        started = time.monotonic()
        await source.aclose()
        return time.monotonic() - started

    assert asyncio.run(scenario()) < 0.5
