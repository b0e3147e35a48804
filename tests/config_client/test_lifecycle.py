"""ConfigClient's lifecycle against a real agent: started again after close, and
subscribers added after start hearing only the changes after it."""

from __future__ import annotations

import logging
import threading

from consul_discovery.config import Schema, Setting
from consul_discovery.config.client import ConfigClient
from consul_discovery.connection import ConsulConnection
from tests.config_client.conftest import KV, Recorder, service_name

SCHEMA = Schema(Setting("limit", int, 10))


def _client(kv: KV, name: str) -> ConfigClient:
    connection = ConsulConnection.from_env({}, address=kv.agent.address)
    return ConfigClient(name, connection=connection, schema=SCHEMA)


def test_a_closed_client_started_again_follows_kv(kv: KV) -> None:
    """An ASGI app's lifespan run twice (two TestClient blocks) starts one client twice:
    the second start must watch KV again, not serve the first run's settings frozen."""
    name = service_name()
    kv.put(f"config/{name}/limit", "1")
    client = _client(kv, name).start(fail_fast=True)
    client.close()
    kv.put(f"config/{name}/limit", "2")
    try:
        client.start(fail_fast=True, timeout=10)
        assert client.settings["limit"] == 2  # read again, not the closed client's 1
        recorder = Recorder()
        client.subscribe(recorder)
        kv.put(f"config/{name}/limit", "3")
        assert [c.new for c in recorder.wait(1, timeout=10)[0].changes] == [3]
    finally:
        client.close()


class _SlowChangeLog(logging.Handler):
    """Holds the applier at its 'configuration changed' log until the test has subscribed
    (any real log handler writing to a file or a socket opens the same window)."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.subscribed = threading.Event()

    def emit(self, record: logging.LogRecord) -> None:
        if record.getMessage().startswith("configuration changed"):
            self.subscribed.wait(5)


def test_a_subscriber_added_after_start_does_not_hear_the_first_load(kv: KV) -> None:
    """``consul-config watch --count 1`` subscribes right after start(): the first load
    must not reach it as a change (it would exit before any real change)."""
    name = service_name()
    kv.put(f"config/{name}/limit", "1")
    handler = _SlowChangeLog()
    logger = logging.getLogger("consul_discovery.config.client")
    logger.addHandler(handler)
    old_level = logger.level
    logger.setLevel(logging.INFO)
    client = _client(kv, name)
    try:
        client.start(fail_fast=True)
        recorder = Recorder()
        client.subscribe(recorder)
        handler.subscribed.set()
        kv.put(f"config/{name}/limit", "2")
        updates = recorder.wait(1, timeout=10)
        assert [(c.old, c.new) for u in updates for c in u.changes] == [(1, 2)]
    finally:
        handler.subscribed.set()
        client.close()
        logger.removeHandler(handler)
        logger.setLevel(old_level)
