"""The two Consul sources behave alike, against a real agent (each case runs through both).

The drift issue 16 found, one test each: a failed first resolve keeps its watch and is
cached with backoff (N concurrent callers cost one query) and watch errors are counted;
closing a source is not an outage (no warning, nothing stale, also for the CLI); a watch
of a service Consul does not know stops once nobody asks for it; a source created before
a fork (``gunicorn --preload``) keeps watching in the child; the async source also keeps
watching from a new event loop.
"""

from __future__ import annotations

import asyncio
import logging
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from functools import partial
from typing import Any

import pytest

from consul_discovery.client.aio import AsyncConsulSource
from consul_discovery.client.consul_source import ConsulSource
from consul_discovery.client.errors import UnknownServiceError
from consul_discovery.client.instance import Resolution
from tests.discovery_client.loop_tasks import watch_tasks
from tests.harness.agent import ConsulAgent
from tests.harness.backends import REPO_ROOT, Backend, start_backends
from tests.harness.forking import in_child
from tests.harness.waiting import wait_for, wait_for_async

wait_until = partial(wait_for, interval=0.01)  # polls every 10 ms
until = partial(wait_for_async, interval=0.01)  # on the loop, every 10 ms

SOURCES = ("threaded", "asyncio")


def ids(resolution: Resolution | None) -> set[str]:
    return {i.id for i in resolution.instances} if resolution else set()


def register(agent: ConsulAgent, service: str, ident: str) -> None:
    """A check-less instance (passing as soon as it is registered)."""
    agent.client().agent.service.register(service, service_id=ident, address="127.0.0.1", port=9)


# -- a failed first resolve is cached with backoff, and counted ------------------------


@pytest.mark.parametrize("kind", SOURCES)
def test_concurrent_callers_of_an_unknown_service_cost_one_query(kind, consul_agent):
    callers = 20
    options = {"backoff_base": 30.0, "backoff_cap": 30.0}  # no second poll in this test

    def check(errors: list[BaseException], stats: Any) -> None:
        assert len(errors) == 2 * callers
        assert all(isinstance(e, UnknownServiceError) for e in errors), errors
        assert "consul" in errors[0].known  # type: ignore[attr-defined]
        assert (stats.requests, stats.errors) == (1, 1)  # one poll, one error, kept

    if kind == "threaded":
        with ConsulSource(consul_agent.address, **options) as source:

            def call() -> BaseException:
                with pytest.raises(UnknownServiceError) as info:
                    source.resolve("ghost", timeout=5)
                return info.value

            results: list[BaseException] = []
            threads = [
                threading.Thread(target=lambda: results.append(call())) for _ in range(callers)
            ]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(10)
            results += [call() for _ in range(callers)]  # later callers: the cached error
            check(results, source.watch_stats("ghost"))
        return

    async def scenario() -> None:
        async with AsyncConsulSource(consul_agent.address, **options) as source:
            first = await asyncio.gather(
                *(source.resolve("ghost", timeout=5) for _ in range(callers)),
                return_exceptions=True,
            )
            later = await asyncio.gather(
                *(source.resolve("ghost", timeout=5) for _ in range(callers)),
                return_exceptions=True,
            )
            check([*first, *later], source.watch_stats("ghost"))  # type: ignore[list-item]

    asyncio.run(scenario())


# -- closing is not an outage --------------------------------------------------------------


@pytest.mark.parametrize("kind", SOURCES)
def test_closing_a_source_is_not_an_outage(kind, consul_agent, caplog):
    caplog.set_level(logging.DEBUG, logger="consul_discovery")
    seen: list[Resolution] = []
    if kind == "threaded":
        source = ConsulSource(consul_agent.address)
        source.resolve("consul")
        source.subscribe("consul", seen.append)
        wait_until(lambda: source.watch_stats("consul").requests >= 2, 5, "the long poll")
        time.sleep(0.1)  # inside its blocking query now
        closing = time.monotonic()
        source.close()
        assert time.monotonic() - closing < 1.0
    else:

        async def scenario() -> None:
            async with AsyncConsulSource(consul_agent.address) as source:
                await source.resolve("consul")
                source.subscribe("consul", seen.append)
                await until(lambda: source.watch_stats("consul").requests >= 2, 5, "long poll")
                await asyncio.sleep(0.1)

        asyncio.run(scenario())
    loud = [r for r in caplog.records if r.levelno > logging.DEBUG]
    assert loud == [], [r.getMessage() for r in loud]
    assert seen and not any(r.stale for r in seen)


@pytest.fixture
def echo(consul_agent: ConsulAgent) -> Iterator[list[Backend]]:
    with start_backends(consul_agent, "echo", 1) as backends:
        yield backends


def test_the_cli_says_nothing_on_stderr_when_consul_is_up(consul_agent, echo):
    env = {**os.environ, "CONSUL_HTTP_ADDR": consul_agent.address}
    for argv in (["resolve", "echo"], ["call", "echo", "GET", "/"]):
        done = subprocess.run(
            [sys.executable, "-m", "consul_discovery.client", *argv],
            cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        assert done.stderr == "", f"{argv}: {done.stderr}"
        assert "echo" in done.stdout


# -- an unknown service's watch does not poll forever ------------------------------------


@pytest.mark.parametrize("kind", SOURCES)
def test_an_unknown_services_watch_stops_when_nobody_asks_and_resolve_restarts_it(
    kind, consul_agent
):
    options = {"unresolved_ttl": 0.5, "backoff_base": 0.05, "backoff_cap": 0.1}

    def scenario_threaded() -> None:
        with ConsulSource(consul_agent.address, **options) as source:
            with pytest.raises(UnknownServiceError):
                source.resolve("late", timeout=5)
            wait_until(
                lambda: "consul-watch-late" not in watch_tasks(source),
                5,
                "the unasked watch to stop",
            )
            stopped = source.watch_stats("late").requests
            assert stopped >= 2  # it retried with backoff while the ttl ran
            time.sleep(0.5)
            assert source.watch_stats("late").requests == stopped  # no more polls
            register(consul_agent, "late", "late-1")
            resolution = source.resolve("late", timeout=5)  # a new watch, at once
            assert ids(resolution) == {"late-1"}

    async def scenario_async() -> None:
        async with AsyncConsulSource(consul_agent.address, **options) as source:
            with pytest.raises(UnknownServiceError):
                await source.resolve("late", timeout=5)
            await until(
                lambda: not [t for t in asyncio.all_tasks() if t.get_name() == "consul-watch-late"],
                5,
                "the unasked watch to stop",
            )
            stopped = source.watch_stats("late").requests
            assert stopped >= 2
            await asyncio.sleep(0.5)
            assert source.watch_stats("late").requests == stopped
            await asyncio.to_thread(register, consul_agent, "late", "late-1")
            assert ids(await source.resolve("late", timeout=5)) == {"late-1"}

    if kind == "threaded":
        scenario_threaded()
    else:
        asyncio.run(scenario_async())


# -- fork safety ----------------------------------------------------------------------------


def test_a_threaded_source_created_before_a_fork_keeps_watching_in_the_child(consul_agent):
    register(consul_agent, "forked", "forked-a")
    with ConsulSource(consul_agent.address) as source:
        assert ids(source.resolve("forked")) == {"forked-a"}
        heard: list[Resolution] = []
        source.subscribe("forked", heard.append)

        def child() -> bool:
            deadline = time.monotonic() + 15
            while time.monotonic() < deadline:
                if ids(source.cached("forked")) == {"forked-a", "forked-b"}:
                    return ids(heard[-1]) == {"forked-a", "forked-b"}  # listeners too
                time.sleep(0.01)
            return False

        def parent() -> None:
            time.sleep(0.2)  # the child runs its restarted watch by now
            register(consul_agent, "forked", "forked-b")

        in_child(child, parent, 20.0, "the child saw a frozen set")
        wait_until(lambda: len(ids(source.cached("forked"))) == 2, 5, "the parent's own watch")


def test_an_async_source_resolved_before_a_fork_keeps_watching_in_the_child(consul_agent):
    register(consul_agent, "forked", "forked-a")
    source = AsyncConsulSource(consul_agent.address)
    assert ids(asyncio.run(source.resolve("forked"))) == {"forked-a"}  # that loop is gone

    def child() -> bool:
        async def watch() -> bool:
            await until(lambda: len(ids(source.cached("forked"))) == 2, 15, "the new instance")
            await source.aclose()
            return True

        return asyncio.run(watch())

    def parent() -> None:
        time.sleep(0.5)
        register(consul_agent, "forked", "forked-b")

    in_child(child, parent, 20.0, "the child saw a frozen set")

    async def again() -> None:  # the parent itself, from yet another loop
        await until(lambda: len(ids(source.cached("forked"))) == 2, 5, "a new loop's watch")
        await source.aclose()

    asyncio.run(again())
