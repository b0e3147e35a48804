"""ASGI apps (Starlette, FastAPI, any framework with a lifespan): start and stop a client.

Nothing here imports a framework. ``lifespan(client)`` is a lifespan function::

    app = Starlette(lifespan=consul_discovery.config.asgi.lifespan(client))
    # in a handler: request.app.state.config.settings.get("retry.budget", float, 0.2)

and ``started(client)`` the same as a plain async context manager, for an app that
composes its own lifespan (another package's registration, say). Starting runs in a
worker thread, so the event loop never blocks on Consul.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

from consul_discovery.config.client import ConfigClient


@asynccontextmanager
async def started(
    client: ConfigClient, *, fail_fast: bool = False, timeout: float = 5.0
) -> AsyncIterator[ConfigClient]:
    """The client started (off the event loop) for the body, stopped afterwards."""
    await asyncio.to_thread(client.start, fail_fast=fail_fast, timeout=timeout)
    try:
        yield client
    finally:
        await asyncio.to_thread(client.close)


def lifespan(
    client: ConfigClient, *, fail_fast: bool = False, timeout: float = 5.0
) -> Callable[[Any], AbstractAsyncContextManager[None]]:
    """A lifespan function: starts ``client``, sets ``app.state.config`` when there is one."""

    @asynccontextmanager
    async def run(app: Any) -> AsyncIterator[None]:
        async with started(client, fail_fast=fail_fast, timeout=timeout):
            state = getattr(app, "state", None)
            if state is not None:
                state.config = client
            yield

    return run
