"""ConfigClient against a real agent: propagation, deletes, new keys, bad values, atomicity."""

from __future__ import annotations

import logging
import statistics
import threading
import time

import pytest

from consul_discovery.config import ABSENT, ConfigError, Schema, Setting, between
from consul_discovery.config.client import DEFAULT_TIMING, ConfigClient
from consul_discovery.connection import ConsulConnection
from tests.config_client.conftest import KV, service_name

SCHEMA = Schema(Setting("retry.budget", float, 0.2, between(0, 1)), Setting("limit", int, 10))


def test_layers_merge_most_specific_wins(kv: KV, start_client) -> None:
    name = service_name()
    kv.put("config/application/log/level", "info")
    kv.put("config/application/retry/budget", "0.1")
    kv.put(f"config/{name}/data", "retry:\n  budget: 0.3\nlimit: 20\n")
    kv.put(f"config/{name}/limit", "25")
    client, _ = start_client(name, schema=SCHEMA)
    assert dict(client.settings) == {"log.level": "info", "retry.budget": 0.3, "limit": 25}
    kv.delete("config/application", recurse=True)


def test_a_put_propagates_within_100ms_p99(kv: KV, start_client) -> None:
    name = service_name()
    kv.put(f"config/{name}/limit", "0")
    client, recorder = start_client(name, schema=SCHEMA)
    latencies = []
    for value in range(1, 41):
        sent = time.monotonic()
        kv.put(f"config/{name}/limit", str(value))
        recorder.wait(value + 1)
        latencies.append(recorder.updates[-1][0] - sent)
        assert client.settings["limit"] == value
    p99 = sorted(latencies)[int(0.99 * len(latencies)) - 1]
    print(
        f"propagation: median {statistics.median(latencies) * 1000:.1f} ms, p99 {p99 * 1000:.1f} ms"
    )
    assert p99 <= 0.100


def test_delete_and_new_key_both_refresh_with_old_and_new_values(kv: KV, start_client) -> None:
    name = service_name()
    kv.put(f"config/{name}/limit", "5")
    client, recorder = start_client(name, schema=SCHEMA)
    kv.put(f"config/{name}/feature/new_checkout", "true")
    change = recorder.wait(2)[-1].changes
    assert [(c.key, c.old, c.new) for c in change] == [("feature.new_checkout", ABSENT, "true")]
    kv.delete(f"config/{name}/limit")
    update = recorder.wait(3)[-1]
    assert [(c.key, c.old, c.new) for c in update.changes] == [("limit", 5, ABSENT)]
    assert client.get("limit") == 10  # the declared default again
    kv.delete(f"config/{name}", recurse=True)  # the whole layer gone: a real delete
    assert [c.key for c in recorder.wait(4)[-1].changes] == ["feature.new_checkout"]
    assert dict(client.settings) == {}


def test_a_malformed_value_keeps_the_last_good_config_and_logs_one_error(
    kv: KV, start_client, caplog: pytest.LogCaptureFixture
) -> None:
    name = service_name()
    kv.put(f"config/{name}/retry/budget", "0.5")
    client, recorder = start_client(name, schema=SCHEMA)
    caplog.set_level(logging.ERROR, logger="consul_discovery.config")
    for bad in ("lots", "lots"):  # the same bad value twice: still one error
        kv.put(f"config/{name}/retry/budget", bad)
        _wait(lambda: client.last_error is not None)
    kv.put(f"config/{name}/other", "x")  # more news while the bad value stays
    time.sleep(0.3)
    assert client.settings["retry.budget"] == 0.5
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1, errors
    assert "retry.budget: 'lots' is not a valid float" in errors[0].getMessage()
    kv.put(f"config/{name}/data", "a: [1")  # a broken document names its KV key
    _wait(lambda: client.last_error is not None and "data" in str(client.last_error))
    assert f"config/{name}/data: not valid YAML" in str(client.last_error)
    kv.delete(f"config/{name}/data")
    kv.put(f"config/{name}/retry/budget", "0.7")  # fixed: applied, error cleared
    _wait(lambda: client.settings.get("retry.budget") == 0.7)
    assert client.last_error is None and len(recorder.updates) == 2


def test_the_first_read_says_which_layers_held_keys(
    kv: KV, start_client, caplog: pytest.LogCaptureFixture
) -> None:
    """A service name typed wrong (``ordrs``) reads none of its own layers: said once, at
    INFO, as the service's keys are for a name that is right."""
    caplog.set_level(logging.INFO, logger="consul_discovery.config")
    name, typo = service_name(), service_name()
    kv.put(f"config/{name}/limit", "5")
    kv.put(f"config/{name}/retry/budget", "0.5")
    start_client(name, schema=SCHEMA)
    start_client(typo, schema=SCHEMA)
    said = [r.getMessage() for r in caplog.records if r.getMessage().startswith("configuration of")]
    (right,) = [line for line in said if line.startswith(f"configuration of {name}:")]
    assert f"config/{name}/ (2)" in right and "none under" not in right, right
    (wrong,) = [line for line in said if line.startswith(f"configuration of {typo}:")]
    assert f"none under config/{typo}/, its own" in wrong, wrong
    assert f"(is '{typo}' the service's name in KV?)" in wrong, wrong


def test_fail_fast_first_read(kv: KV, start_client) -> None:
    name = service_name()
    kv.put(f"config/{name}/limit", "many")
    with pytest.raises(ConfigError, match="limit: 'many' is not a valid int"):
        start_client(name, schema=SCHEMA)
    down = ConsulConnection.from_env({}, address="127.0.0.1:1", connect_timeout=0.2)
    with pytest.raises(ConfigError, match="unreachable"):
        ConfigClient(name, connection=down).start(fail_fast=True, timeout=5)
    lenient = ConfigClient(name, connection=down, schema=SCHEMA).start(timeout=0.3)
    assert lenient.get("limit") == 10  # defaults while Consul is unreachable
    lenient.close()


def test_readers_never_see_half_an_update(kv: KV, start_client) -> None:
    """A document changes two settings together; readers always see a matching pair."""
    name = service_name()
    kv.put(f"config/{name}/data", "a: 0\nb: 0\n")
    client, recorder = start_client(name)
    torn: list[tuple[object, object]] = []
    stop = threading.Event()

    def read() -> None:
        while not stop.is_set():
            settings = client.settings
            if settings.get("a") != settings.get("b"):
                torn.append((settings.get("a"), settings.get("b")))

    reader = threading.Thread(target=read)
    reader.start()
    for value in range(1, 21):
        kv.put(f"config/{name}/data", f"a: {value}\nb: {value}\n")
        time.sleep(0.01)
    _wait(lambda: client.settings.get("a") == 20)
    stop.set()
    reader.join()
    assert torn == []
    for update in recorder.wait(2)[1:]:
        assert {c.key for c in update.changes} == {"a", "b"}


def test_a_burst_is_debounced_into_few_updates(kv: KV, start_client) -> None:
    name = service_name()
    kv.put(f"config/{name}/n", "0")
    from consul_discovery.config import Debounce

    client, recorder = start_client(name, debounce=Debounce(quiet=0.2, max_wait=1.0))
    for value in range(1, 11):
        kv.put(f"config/{name}/n", str(value))
    _wait(lambda: client.settings.get("n") == "10")
    time.sleep(0.3)
    assert len(recorder.updates) <= 3  # the first configuration plus one or two bursts


def _wait(condition, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.005)


def test_stop_is_the_deprecated_name_of_close(kv: KV) -> None:
    name = service_name()
    kv.put(f"config/{name}/limit", "3")
    client = ConfigClient(
        name, connection=ConsulConnection.from_env({}, address=kv.agent.address)
    ).start(fail_fast=True)
    with pytest.warns(DeprecationWarning, match=r"use close\(\)"):
        client.stop()
    assert client._threads == []


def test_close_ends_the_watches_blocking_reads_at_once(kv: KV, start_client) -> None:
    """Before, each watch thread stayed in its blocking read until Consul answered it (up
    to the wait, 30 s by default); closing the store now cuts the read short."""
    name = service_name()
    kv.put(f"config/{name}/limit", "1")
    timing = DEFAULT_TIMING.__class__(wait=30.0, min_interval=0.2, min_change_interval=0.0)
    client, _ = start_client(name, schema=SCHEMA, timing=timing)
    in_use = client._store._interrupter._in_use  # the connections of reads in progress
    _wait(lambda: len(in_use) == len(client.layers.prefixes))  # every watch in its long poll

    def watches() -> list[threading.Thread]:
        ours = f"config-watch config/{name}"
        return [t for t in threading.enumerate() if t.name.startswith(ours)]

    assert watches()
    started = time.monotonic()
    client.close()
    _wait(lambda: not watches())
    assert time.monotonic() - started < 2.0
    assert client.settings["limit"] == 1  # the last settings stay readable
