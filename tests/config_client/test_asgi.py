"""The ASGI lifespan helper, driven as a framework would drive it (no framework needed)."""

from __future__ import annotations

import asyncio
import types

from consul_discovery.config import ConfigClient, Layers
from consul_discovery.config.asgi import lifespan
from consul_discovery.connection import ConsulConnection
from tests.config_client.conftest import KV, service_name
from tests.harness.agent import ConsulAgent


def test_lifespan_starts_sets_state_and_stops(kv_agent: ConsulAgent, kv: KV) -> None:
    name = service_name()
    kv.put(f"config/{name}/flag", "on")
    connection = ConsulConnection.from_env({}, address=kv_agent.address)
    client = ConfigClient(Layers(name), connection=connection)
    app = types.SimpleNamespace(state=types.SimpleNamespace())

    async def serve() -> str:
        async with lifespan(client, fail_fast=True)(app):
            return app.state.config.get("flag", bool) and "served"

    assert asyncio.run(serve()) == "served"
    assert client.stats()["ready"] and not client._threads  # stopped afterwards
