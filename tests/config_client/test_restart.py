"""A Consul restart (a dev agent comes back with empty KV): no spurious refresh, no lost change."""

from __future__ import annotations

import time

from consul_discovery.config import ConfigClient, Debounce, Layers
from consul_discovery.config.kv import KVStore, Write
from consul_discovery.connection import ConsulConnection
from consul_discovery.connection.blocking import WatchTiming
from tests.config_client.conftest import Recorder
from tests.harness.agent import running_agent

TIMING = WatchTiming(wait=5.0, min_interval=0.2, min_change_interval=0.0, backoff_cap=0.5)


def test_restart_refires_nothing_for_the_same_data_and_once_for_a_change() -> None:
    with running_agent() as agent:
        connection = ConsulConnection.from_env({}, address=agent.address)
        store = KVStore(connection)
        data = {"config/orders/a": "1", "config/orders/b": "2"}
        store.apply(Write(k, v) for k, v in data.items())
        client = ConfigClient(
            Layers("orders"), connection=connection, timing=TIMING, debounce=Debounce(0.01, 0.05)
        )
        recorder = Recorder()
        client.subscribe(recorder)
        try:
            client.start(fail_fast=True)
            recorder.wait(1)

            agent.restart()  # comes back with an empty KV store
            _wait(lambda: "config/orders/" in client.stats()["held"])
            assert dict(client.settings) == {"a": "1", "b": "2"}  # held, not wiped
            store.apply(Write(k, v) for k, v in data.items())  # the same data, re-put
            _wait(lambda: not client.stats()["held"])
            time.sleep(0.3)
            assert len(recorder.updates) == 1, "a re-put of the same data refreshed"

            agent.stop()
            agent.start()  # while our watch backs off, the data comes back changed
            store.apply(Write(k, v) for k, v in {**data, "config/orders/b": "3"}.items())
            update = recorder.wait(2, timeout=15)[-1]
            assert [(c.key, c.old, c.new) for c in update.changes] == [("b", "2", "3")]
            time.sleep(0.3)
            assert len(recorder.updates) == 2
            assert dict(client.settings) == {"a": "1", "b": "3"}
        finally:
            client.close()
            store.close()


def _wait(condition, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.01)
