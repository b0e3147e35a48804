"""Workers share their master's watches (gunicorn, 4 workers, a real TLS agent).

The gunicorn master (the registry's hooks) runs the relay; each worker's ConsulSource
asks it instead of Consul. Pinned here: the whole application holds one HTTP/2
connection for its watches (plus the registrar's) whatever its worker count; every
worker sees a check flip; the workers' watch counters are the master's; and when the
master is killed, each worker says so once and watches Consul by itself, still seeing
changes.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from bench.budget_env import established
from tests.harness.binary import REPO_ROOT
from tests.harness.ports import free_port
from tests.harness.tls_agent import TlsDevAgent

WORKERS = 4
HOOKS = "python:consul_discovery.registry.gunicorn_conf"
SERVICES = [f"relay-{n}" for n in range(5)]


@pytest.fixture(scope="module")
def agent() -> Iterator[TlsDevAgent]:
    tls_agent = TlsDevAgent(name="relay")
    try:
        tls_agent.start()
        client = tls_agent.client()
        for name in SERVICES:
            for n in range(2):
                client.agent.service.register(
                    name, service_id=f"{name}-{n}", address="127.0.0.1", port=20000 + n,
                    check={"TTL": "1h", "Status": "passing"},
                )  # fmt: skip
        client.http.session.close()
        yield tls_agent
    finally:
        tls_agent.cleanup()


class App:
    """gunicorn -w 4 of tests.discovery_client.relay_app, in its own process group."""

    def __init__(self, agent: TlsDevAgent, log_path: Path) -> None:
        self.port = free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith(("SERVICE_", "CONSUL_"))}
        env.pop("REGISTRY_MANAGED_BY", None)
        env.update(
            PYTHONPATH=str(REPO_ROOT),
            CONSUL_HTTP_ADDR=agent.https_url,
            CONSUL_CACERT=str(agent.ca_file),
            SERVICE_NAME="relay-app",
            SERVICE_ID=f"relay-app-{self.port}",
            SERVICE_PORT=str(self.port),
            SERVICE_ADDRESS="127.0.0.1",
            SERVICE_CHECK_INTERVAL="1s",
            SERVICE_DRAIN_SECONDS="0.5",
            RELAY_APP_SERVICES=",".join(SERVICES),
        )
        self.log_path = log_path
        self._log = log_path.open("wb")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "-c", HOOKS, "-w", str(WORKERS), "--timeout", "120",
             "tests.discovery_client.relay_app:create_app()"],
            cwd=REPO_ROOT, env=env, stdout=self._log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip

    def seen(self) -> dict[str, Any] | None:
        try:
            answer = requests.get(f"http://127.0.0.1:{self.port}/seen", timeout=2)
        except requests.RequestException:
            return None
        return answer.json() if answer.status_code == 200 else None

    def every_worker(self, wanted: Callable[[dict[str, Any]], bool], timeout: float) -> dict:
        """Ask until WORKERS distinct workers answered with ``wanted`` true: by pid."""
        found: dict[int, dict[str, Any]] = {}
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and len(found) < WORKERS:
            seen = self.seen()
            if seen is not None and wanted(seen):
                found[seen["pid"]] = seen
            time.sleep(0.02)
        assert len(found) == WORKERS, f"{len(found)} worker(s) within {timeout}s\n{self.log()}"
        return found

    def log(self, tail: int = 4000) -> str:
        return self.log_path.read_text(errors="replace")[-tail:]

    def stopped(self, timeout: float) -> int:
        """The exit code of a master told to stop; if it is still up after ``timeout``,
        fail with the log and every worker thread's stack (relay_app's faulthandler)."""
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGUSR1)  # the master: reopen its logs
            time.sleep(1.0)
            pytest.fail(f"gunicorn still up {timeout:g} s after SIGTERM\n{self.log(30000)}")

    def cleanup(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(10)
        self._log.close()


@pytest.fixture
def app(agent: TlsDevAgent, tmp_path: Path) -> Iterator[App]:
    started = App(agent, tmp_path / "gunicorn.log")
    try:
        yield started
    finally:
        started.cleanup()


def test_workers_share_the_masters_watches(agent, app):
    workers = app.every_worker(
        lambda s: s["relayed"] and all(len(s["current"][n]) == 2 for n in SERVICES), 60
    )
    # 4 workers × 5 services = 20 long polls wanted; the agent sees the master's one
    # HTTP/2 connection (and the registrar's), not one per worker or per watch.
    time.sleep(0.5)
    assert established(agent.https_port) <= 2
    # Every worker's counters are the master's watch's (one watch per target).
    indexes = {tuple(s["stats"][n][2] for n in SERVICES) for s in workers.values()}
    assert len(indexes) == 1, indexes

    ttl = agent.client().agent.check
    started = time.monotonic()
    ttl.ttl_fail("service:relay-2-1")
    flipped = app.every_worker(lambda s: s["current"]["relay-2"] == ["relay-2-0"], 10)
    print(f"\nflip seen by all {WORKERS} workers within {time.monotonic() - started:.3f}s")
    assert set(flipped) == set(workers) and all(s["relayed"] for s in flipped.values())
    ttl.ttl_pass("service:relay-2-1")

    line = next(line for line in app.log().splitlines() if "discovery relay for" in line)
    directory = Path(line.split(" at ")[1].strip()).parent
    assert directory.stat().st_mode & 0o777 == 0o700
    assert (directory / "relay.sock").stat().st_mode & 0o777 == 0o600
    app.process.send_signal(signal.SIGTERM)  # a graceful stop removes the relay's socket
    assert app.stopped(30) == 0, app.log()
    assert not directory.exists()
    assert "Traceback" not in app.log(), app.log()


def test_workers_fall_back_to_their_own_watches_when_the_master_dies(agent, tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONSUL_")}
    env.update(
        PYTHONPATH=str(REPO_ROOT),
        CONSUL_HTTP_ADDR=agent.https_url,
        CONSUL_CACERT=str(agent.ca_file),
    )
    log_path = tmp_path / "forks.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "tests.discovery_client.relay_forks", "2", "relay-3,relay-4"],
            cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, stderr=log, text=True,
            start_new_session=True,
        )  # fmt: skip
    states: dict[int, dict[str, Any]] = {}
    started: dict[str, Any] = {}
    try:
        assert process.stdout is not None
        started = json.loads(process.stdout.readline())

        def until(wanted: Callable[[dict[str, Any]], bool], what: str) -> None:
            deadline = time.monotonic() + 20
            while not (len(states) == 2 and all(wanted(s) for s in states.values())):
                assert time.monotonic() < deadline, f"{what}: {states}\n{log_path.read_text()}"
                state = json.loads(process.stdout.readline())
                states[state["pid"]] = state

        until(lambda s: s["relayed"] and len(s["current"]["relay-3"]) == 2, "relayed")
        assert set(states) == set(started["workers"])
        os.kill(started["master"], signal.SIGKILL)
        until(lambda s: not s["relayed"], "fell back")
        agent.client().agent.check.ttl_fail("service:relay-3-0")
        until(lambda s: s["current"]["relay-3"] == ["relay-3-1"], "a flip after the fallback")
        said = [line for line in log_path.read_text().splitlines() if "directly" in line]
        assert len(said) == 2, said  # once per worker, not once per watch
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(10)
        agent.client().agent.check.ttl_pass("service:relay-3-0")
        if started:  # a killed master cannot remove its socket's directory: we do
            shutil.rmtree(Path(started["socket"]).parent, ignore_errors=True)


def test_a_new_relay_removes_the_directories_of_killed_masters(tmp_path):
    from consul_discovery.client.relay_server import _sweep

    dead = tmp_path / "consul-discovery-relay-999999999-x"  # no such pid
    alive = tmp_path / f"consul-discovery-relay-{os.getpid()}-y"
    other = tmp_path / "unrelated-999999999"
    for path in (dead, alive, other):
        path.mkdir()
    _sweep(tmp_path)
    assert not dead.exists() and alive.exists() and other.exists()
