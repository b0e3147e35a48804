"""A module-scoped real Consul agent, a KV writer, and a started-client factory."""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import requests

from consul_discovery.config import ConfigClient, Debounce, Layers, Schema, Update
from consul_discovery.config.client import DEFAULT_TIMING
from consul_discovery.connection import ConsulConnection
from tests.harness.agent import ConsulAgent, running_agent

_names = itertools.count(1)


@pytest.fixture(scope="module")
def kv_agent() -> Iterator[ConsulAgent]:
    """One dev agent shared by a module's tests (each uses its own service name)."""
    with running_agent() as agent:
        yield agent


class KV:
    """Writes an agent's KV over plain HTTP (what an operator or the UI would do)."""

    def __init__(self, agent: ConsulAgent, token: str | None = None) -> None:
        self.agent = agent
        self.headers = {"X-Consul-Token": token} if token else {}

    def put(self, key: str, value: str) -> None:
        url = f"{self.agent.url}/v1/kv/{key}"
        response = requests.put(url, data=value.encode(), headers=self.headers, timeout=5)
        assert response.json() is True, response.text

    def delete(self, key: str, recurse: bool = False) -> None:
        params = {"recurse": "true"} if recurse else {}
        url = f"{self.agent.url}/v1/kv/{key}"
        requests.delete(url, params=params, headers=self.headers, timeout=5).raise_for_status()

    def get(self, key: str) -> str | None:
        url = f"{self.agent.url}/v1/kv/{key}"
        response = requests.get(url, params={"raw": "true"}, headers=self.headers, timeout=5)
        return None if response.status_code == 404 else response.text


@pytest.fixture
def kv(kv_agent: ConsulAgent) -> KV:
    """A KV writer for the module's agent."""
    return KV(kv_agent)


def service_name() -> str:
    """A service name no other test of the session uses."""
    return f"svc{next(_names)}"


class Recorder:
    """Collects a client's updates; ``wait`` blocks until a condition holds."""

    def __init__(self) -> None:
        self.updates: list[tuple[float, Update]] = []
        self._cond = threading.Condition()

    def __call__(self, update: Update) -> None:
        with self._cond:
            self.updates.append((time.monotonic(), update))
            self._cond.notify_all()

    def wait(self, count: int, timeout: float = 5.0) -> list[Update]:
        with self._cond:
            ok = self._cond.wait_for(lambda: len(self.updates) >= count, timeout)
        assert ok, f"{len(self.updates)} update(s) after {timeout}s, wanted {count}"
        return [u for _, u in self.updates]


@pytest.fixture
def start_client(kv_agent: ConsulAgent) -> Iterator[Callable[..., tuple[ConfigClient, Recorder]]]:
    """Build, start and (afterwards) stop ConfigClients on the module's agent."""
    clients: list[ConfigClient] = []

    def start(service: str, *, schema: Schema | None = None, **kw: Any):
        kw.setdefault(
            "timing", DEFAULT_TIMING.__class__(wait=5.0, min_interval=0.2, min_change_interval=0.0)
        )
        kw.setdefault("debounce", Debounce(quiet=0.01, max_wait=0.05))
        fail_fast = kw.pop("fail_fast", True)
        connection = kw.pop("connection", None) or ConsulConnection.from_env(
            {}, address=kv_agent.address
        )
        client = ConfigClient(Layers(service), connection=connection, schema=schema, **kw)
        recorder = Recorder()
        client.subscribe(recorder)
        clients.append(client)
        client.start(fail_fast=fail_fast, timeout=10)
        return client, recorder

    yield start
    for client in clients:
        client.close()
