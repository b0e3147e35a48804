"""Cold start without Consul: the sources save each live set and, only when Consul cannot
be reached at start, serve the on-disk snapshot until the first live answer (both
sources; a scripted agent, no sockets)."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import threading
import time
from functools import partial
from pathlib import Path
from typing import Any

import pytest

from consul_discovery.client import cli
from consul_discovery.client.aio import AsyncConsulSource
from consul_discovery.client.cold_start import (
    ColdStart,
    SnapshotWriter,
    store_from_env,
    target_key,
)
from consul_discovery.client.config import ServiceConfig
from consul_discovery.client.consul_source import ConsulSource
from consul_discovery.client.errors import (
    ConsulPermissionError,
    ConsulUnavailableError,
    UnknownServiceError,
)
from consul_discovery.client.instance import Instance, Resolution
from consul_discovery.client.snapshot_store import SnapshotError, SnapshotStore
from consul_discovery.client.source import WatchKey
from consul_discovery.client.target import Target
from consul_discovery.connection.exchange import Response
from tests.discovery_client.fake_consul import REFUSED, FakeAgent, entry
from tests.harness.socket_server import closed_port
from tests.harness.waiting import wait_for

wait_until = partial(wait_for, interval=0.01)  # polls every 10 ms

KEY = WatchKey.of("web", lambda _n: ServiceConfig())
SAVED = (
    Instance("web-a", "web", "10.0.0.1", 8080, node="n1", datacenter="dc1", zone="a"),
    Instance("web-b", "web", "10.0.0.2", 8080, node="n2", datacenter="dc1", zone="b"),
)
FAST = {"wait": 0.2, "min_interval": 0.05, "backoff_base": 0.05, "backoff_cap": 0.1}


def saved_store(directory: Path, age: float = 120.0, **kwargs: Any) -> SnapshotStore:
    """A store holding SAVED for ``web``, saved ``age`` seconds ago."""
    then = time.time() - age
    SnapshotStore(directory, clock=lambda: then).save("web", target_key(KEY), 41, SAVED)
    return SnapshotStore(directory, **kwargs)


def ids(resolution: Resolution | None) -> set[str]:
    return {i.id for i in resolution.instances} if resolution else set()


def vouched(resolution: Resolution | None) -> set[str]:
    """The ids Consul vouches for: without those held on trust (self-preservation keeps
    the snapshot's instances that Consul's first answer after the outage forgot)."""
    return ids(resolution) - set(resolution.held) if resolution else set()


@pytest.fixture
def down() -> FakeAgent:
    agent = FakeAgent({"web": [entry("web-live", "passing")]})
    agent.error = REFUSED
    return agent


# -- used only when Consul cannot be reached at start ----------------------------------


def test_an_unreachable_consul_at_start_is_answered_from_the_snapshot(tmp_path, down, caplog):
    store = saved_store(tmp_path)
    seen: list[Resolution] = []
    with (
        caplog.at_level(logging.WARNING),
        ConsulSource("127.0.0.1:8500", send=down, snapshots=store, **FAST) as source,
    ):
        source.subscribe("web", seen.append)
        first = source.resolve("web", timeout=2.0)
        assert first.from_snapshot and first.stale and ids(first) == {"web-a", "web-b"}
        assert first.index == 41 and first.instances[0].zone == "a"
        assert first.age(time.monotonic()) == pytest.approx(120.0, abs=5.0)
        assert first.error is not None and first.error.startswith("from snapshot, 120s old")
        assert "unreachable" in first.error
        assert source.cached("web") is first  # the same, no disk read
        stats = source.watch_stats("web")
        assert stats is not None and stats.from_snapshot
        assert stats.snapshot_age == pytest.approx(120.0, abs=5.0)
        assert any("from the snapshot saved 120s ago" in r.getMessage() for r in caplog.records)

        down.error = None  # Consul answers: the first live answer replaces the snapshot
        live = wait_until(lambda: seen and seen[-1], 5.0, "the live answer")
        assert vouched(live) == {"web-live"} and not live.from_snapshot and not live.stale
        # The first answer after an outage is suspect (an agent restarted empty): what
        # the snapshot had and Consul forgot is held on trust for the grace window.
        assert set(live.held) == {"web-a", "web-b"}
        assert vouched(source.resolve("web")) == {"web-live"}
        stats = source.watch_stats("web")
        assert stats is not None and not stats.from_snapshot and stats.snapshot_age is None
        assert any("replaces the snapshot" in r.getMessage() for r in caplog.records)


def test_a_snapshot_file_of_bad_types_is_refused_not_raised_from_calls(tmp_path, caplog):
    """A file edited or written by another tool (a weight as a string): the client with
    Consul down says Consul is unreachable, as without a snapshot, and logs why the file
    was refused; before, the file was served and every call raised a bare TypeError."""
    from consul_discovery.client.client import ServiceClient

    path = saved_store(tmp_path).path_for("web", target_key(KEY))
    body = json.loads(path.read_text())
    body["instances"][0]["weight_passing"] = "10"
    path.write_text(json.dumps(body))
    consul = f"127.0.0.1:{closed_port()}"
    with (
        caplog.at_level(logging.INFO),
        ConsulSource(consul, snapshots=SnapshotStore(tmp_path), **FAST) as source,
        ServiceClient(source=source, resolve_timeout=2.0) as client,
        pytest.raises(ConsulUnavailableError),
    ):
        client.get("web", "/")
    assert any("bad weight_passing '10'" in r.getMessage() for r in caplog.records)


def test_the_async_source_uses_the_snapshot_the_same_way(tmp_path, down):
    store = saved_store(tmp_path)

    async def main() -> tuple[Resolution, Resolution]:
        async with AsyncConsulSource(
            "127.0.0.1:8500", send=down.asend, snapshots=store, **FAST
        ) as source:
            first = await source.resolve("web", timeout=2.0)
            down.error = None
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline:
                live = source.cached("web")
                if live is not None and not live.from_snapshot:
                    return first, live
                await asyncio.sleep(0.02)
            raise AssertionError("no live answer")

    first, live = asyncio.run(main())
    assert first.from_snapshot and ids(first) == {"web-a", "web-b"}
    assert vouched(live) == {"web-live"} and set(live.held) == {"web-a", "web-b"}


@pytest.mark.parametrize(
    ("answer", "error"),
    [
        (Response(403, {}, b"Permission denied"), ConsulPermissionError),
        (Response(200, {"X-Consul-Index": "3"}, b"[]"), UnknownServiceError),
    ],
)
def test_consul_answering_no_is_not_an_outage_and_gets_no_snapshot(tmp_path, answer, error):
    agent = FakeAgent({})
    agent.error = answer
    with ConsulSource("127.0.0.1:8500", send=agent, snapshots=saved_store(tmp_path)) as source:
        with pytest.raises(error):
            source.resolve("web", timeout=2.0)
        assert source.cached("web") is None


def test_a_snapshot_older_than_the_limit_is_never_used(tmp_path, down, caplog):
    store = saved_store(tmp_path, age=3600.0, max_age=1800.0)
    with (
        caplog.at_level(logging.INFO),
        ConsulSource("127.0.0.1:8500", send=down, snapshots=store, **FAST) as source,
        pytest.raises(ConsulUnavailableError, match="unreachable"),
    ):
        source.resolve("web", timeout=2.0)
    assert any("max_age 1800s" in r.getMessage() for r in caplog.records)


def test_a_watch_that_had_a_live_answer_keeps_its_own_stale_set(tmp_path):
    agent = FakeAgent({"web": [entry("web-live", "passing")]})
    store = saved_store(tmp_path)
    with ConsulSource("127.0.0.1:8500", send=agent, snapshots=store, **FAST) as source:
        assert ids(source.resolve("web", timeout=2.0)) == {"web-live"}
        agent.error = REFUSED
        stale = wait_until(lambda: (r := source.cached("web")) and r.stale and r, 5.0, "stale")
        assert ids(stale) == {"web-live"} and not stale.from_snapshot


def test_a_watch_serving_a_snapshot_outlives_its_unresolved_ttl(tmp_path, down):
    """Its callers never resolve again (they hold the snapshot): it must not stop."""
    store = saved_store(tmp_path)
    with ConsulSource(
        "127.0.0.1:8500", send=down, snapshots=store, unresolved_ttl=0.1, **FAST
    ) as source:
        assert source.resolve("web", timeout=2.0).from_snapshot
        polled = len(down.health_requests())
        time.sleep(0.6)  # several backoff steps past the ttl
        assert len(down.health_requests()) > polled + 2
        down.error = None
        wait_until(lambda: vouched(source.cached("web")) == {"web-live"}, 5.0, "the live answer")


# -- written after each new live Resolution, off the watch's path -------------------------


def test_each_new_live_set_is_saved_and_unchanged_polls_write_nothing(tmp_path):
    agent = FakeAgent({"web": [entry("web-1", "passing")]})
    store = SnapshotStore(tmp_path)
    with ConsulSource("127.0.0.1:8500", send=agent, snapshots=store, **FAST) as source:
        source.resolve("web", timeout=2.0)
        writer = source._table.cold.writer  # type: ignore[union-attr]
        wait_until(lambda: writer.writes == 1, 5.0, "the first save")
        polls = len(agent.health_requests())
        wait_until(lambda: len(agent.health_requests()) > polls + 3, 5.0, "unchanged polls")
        assert writer.writes == 1
        agent.services["web"].append(entry("web-2", "passing"))
        agent.index += 1
        wait_until(lambda: writer.writes == 2, 5.0, "the change saved")
        agent.error = REFUSED  # a stale mark is not saved
        wait_until(lambda: (r := source.cached("web")) is not None and r.stale, 5.0, "stale")
    assert writer.writes == 2
    snapshot = store.load("web", target_key(KEY))
    assert snapshot is not None and {i.id for i in snapshot.instances} == {"web-1", "web-2"}
    body = json.loads(store.path_for("web", target_key(KEY)).read_text())
    assert body["service"] == "web" and "token" not in json.dumps(body).lower()


def test_the_writer_coalesces_a_flapping_target_and_bounds_its_rate(tmp_path):
    writer = SnapshotWriter(SnapshotStore(tmp_path), min_interval=0.2)
    key = target_key(KEY)
    started = time.monotonic()
    n = 0
    while time.monotonic() - started < 0.5:
        n += 1
        writer.submit(key, Resolution("web", SAVED[: 1 + n % 2], n, 0.0))
        time.sleep(0.005)
    writer.close()
    assert n > 50 and 2 <= writer.writes <= 5  # one per 0.2 s, and the last one at close
    saved = SnapshotStore(tmp_path).load("web", key)
    assert saved is not None and saved.index == n  # the latest wins


def test_an_unsafe_directory_turns_writing_off_with_one_error(tmp_path, caplog):
    shared = tmp_path / "shared"
    shared.mkdir(mode=0o777)
    shared.chmod(0o777)
    writer = SnapshotWriter(SnapshotStore(shared), min_interval=0.0)
    with caplog.at_level(logging.ERROR):
        for n in range(3):
            writer.submit(f"k{n}", Resolution("web", SAVED, n, 0.0))
            writer.flush()
        writer.close()
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1 and "may be written by others" in errors[0].getMessage()
    assert writer.writes == 0


def test_an_unsafe_directory_is_reported_once_when_the_thread_and_a_flush_both_fail(
    tmp_path, caplog
):
    """The writer thread and ``flush`` (``close``) write at once: both refused, one error."""
    both = threading.Barrier(2, timeout=5.0)

    class Refusing(SnapshotStore):
        def save(self, *args: Any, **kwargs: Any) -> Path:
            both.wait()  # the two writes are in flight together
            raise SnapshotError(f"snapshot directory {self.directory} may be written by others")

    writer = SnapshotWriter(Refusing(tmp_path), min_interval=0.0)
    with caplog.at_level(logging.ERROR):
        threads = [
            threading.Thread(target=writer._write, args=(f"k{n}", Resolution("web", SAVED, n, 0.0)))
            for n in range(2)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(5.0)
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1, [r.getMessage() for r in errors]


def test_a_snapshot_resolution_is_never_written_back(tmp_path):
    cold = ColdStart(saved_store(tmp_path))
    loaded = cold.load(KEY, "refused", time.monotonic())
    assert loaded is not None
    cold.live(KEY, loaded)  # a listener's echo of the snapshot itself
    cold.close()
    assert cold.writer.writes == 0 and cold.serving(KEY) is not None


def test_each_target_has_its_own_file():
    other = WatchKey.of(Target("web", datacenter="dc2"), lambda _n: ServiceConfig())
    assert target_key(KEY) != target_key(other)
    assert json.loads(target_key(other))["datacenter"] == "dc2"


# -- opt-in -----------------------------------------------------------------------------


def test_snapshots_are_off_unless_a_directory_is_named(tmp_path, monkeypatch):
    assert store_from_env({}) is None
    store = store_from_env({"DISCOVERY_SNAPSHOT_DIR": str(tmp_path)})
    assert store is not None and store.directory == tmp_path and store.max_age == 86400
    limited = store_from_env(
        {"DISCOVERY_SNAPSHOT_DIR": str(tmp_path), "DISCOVERY_SNAPSHOT_MAX_AGE": "600"}
    )
    assert limited is not None and limited.max_age == 600
    with pytest.raises(ValueError, match=r"^DISCOVERY_SNAPSHOT_MAX_AGE: 'x' is not a duration"):
        store_from_env({"DISCOVERY_SNAPSHOT_DIR": str(tmp_path), "DISCOVERY_SNAPSHOT_MAX_AGE": "x"})
    with pytest.raises(ValueError, match=r"^DISCOVERY_SNAPSHOT_MAX_AGE: '0' is not more than 0"):
        store_from_env({"DISCOVERY_SNAPSHOT_DIR": str(tmp_path), "DISCOVERY_SNAPSHOT_MAX_AGE": "0"})
    hours = store_from_env(
        {"DISCOVERY_SNAPSHOT_DIR": str(tmp_path), "DISCOVERY_SNAPSHOT_MAX_AGE": "12h"}
    )
    assert hours is not None and hours.max_age == 12 * 3600
    monkeypatch.setenv("DISCOVERY_SNAPSHOT_DIR", str(tmp_path))
    with ConsulSource("127.0.0.1:8500", send=FakeAgent({})) as source:
        assert source._table.cold is not None
    with ConsulSource("127.0.0.1:8500", send=FakeAgent({}), snapshots=None) as source:
        assert source._table.cold is None  # explicitly off
    monkeypatch.delenv("DISCOVERY_SNAPSHOT_DIR")
    with ConsulSource("127.0.0.1:8500", send=FakeAgent({})) as source:
        assert source._table.cold is None


def test_a_peek_at_a_target_still_resolving_does_not_load_the_snapshot(tmp_path):
    agent = FakeAgent({"web": [entry("web-live", "passing")]})
    agent.block = threading.Event()  # Consul is slow, not unreachable
    with ConsulSource("127.0.0.1:8500", send=agent, snapshots=saved_store(tmp_path)) as source:
        with pytest.raises(ConsulUnavailableError, match=r"within 0\.0s"):
            source.resolve("web", timeout=0.0)  # what ServiceClient.stats() does
        assert source.cached("web") is None
        agent.block.set()
        assert ids(source.resolve("web", timeout=5.0)) == {"web-live"}


def test_the_cli_says_the_set_is_from_the_snapshot_and_how_old(tmp_path, monkeypatch):
    saved_store(tmp_path, age=300.0)
    monkeypatch.setenv("DISCOVERY_SNAPSHOT_DIR", str(tmp_path))
    out, err = io.StringIO(), io.StringIO()
    consul = f"127.0.0.1:{closed_port()}"
    assert cli.main(["--consul", consul, "--timeout", "3", "resolve", "web"], out, err) == 0
    first = out.getvalue().splitlines()[0]
    assert first.startswith("web: 2 instance(s) at index 41 [stale, from snapshot, age 30")
    out = io.StringIO()
    assert cli.main(["--consul", consul, "--json", "resolve", "web"], out, err) == 0
    data = json.loads(out.getvalue())
    assert data["from_snapshot"] and data["stale"] and data["age_seconds"] >= 299
