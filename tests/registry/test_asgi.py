"""ASGI apps under uvicorn (and gunicorn with uvicorn workers) register, reflect /health
in Consul, and drain on SIGTERM before uvicorn stops accepting: 0 failed requests."""

from __future__ import annotations

import signal
import threading
import time
from pathlib import Path

import requests

from bench.loadgen import run_open_loop
from consul_discovery.client import ServiceClient
from tests.registry.conftest import in_maintenance, instance_status, passing_ids, wait_until


def _passing(consul_client, svc) -> None:  # type: ignore[no-untyped-def]
    wait_until(
        lambda: instance_status(consul_client, "regtest", svc.service_id) == "passing", 15, 0.05
    )


def _slow_in_flight(svc, seconds: float, result: dict[str, int]) -> threading.Thread:  # type: ignore[no-untyped-def]
    def run() -> None:
        r = requests.get(f"{svc.url}/slow", params={"s": seconds}, timeout=seconds + 15)
        result["status"] = r.status_code

    thread = threading.Thread(target=run)
    thread.start()
    return thread


def test_uvicorn_fastapi_health_in_consul_and_drain_under_load(
    consul_agent, consul_client, start_service, tmp_path: Path
):
    drain = 2.0
    control = tmp_path / "health"
    a = start_service(
        consul_agent.address, server="uvicorn", drain_seconds=drain,
        extra_env={"HEALTH_CONTROL": str(control)},
    )  # fmt: skip
    b = start_service(consul_agent.address, server="uvicorn", drain_seconds=drain)
    _passing(consul_client, a)
    _passing(consul_client, b)
    body = requests.get(f"{a.url}/health", timeout=2).json()
    assert body == {"status": "passing", "checks": {"control": {"status": "passing"}}}

    # /health's verdict, from the same check functions, is what Consul shows.
    control.write_text("fail")
    assert requests.get(f"{a.url}/health", timeout=2).status_code == 503
    wait_until(lambda: instance_status(consul_client, "regtest", a.service_id) == "critical", 10)
    control.write_text("ok")
    _passing(consul_client, a)

    # Open-loop load through the discovery client while b gets SIGTERM.
    client = ServiceClient(consul_agent.address)
    slow: dict[str, int] = {}
    marks: dict[str, float] = {}

    def call(seq: int) -> tuple[bool, str]:
        r = client.get("regtest", "/hello", timeout=(1.0, 5.0))
        return r.status_code == 200, f"{r.status_code} {r.text[:100]}"

    def terminate() -> None:
        time.sleep(1.5)
        marks["sent"] = time.monotonic()
        b.signal(signal.SIGTERM)
        marks["slow"] = 0.0
        slow_thread = _slow_in_flight(b, drain + 0.5, slow)
        wait_until(lambda: in_maintenance(consul_client, "regtest", b.service_id), 1.0, 0.02)
        marks["maintenance"] = time.monotonic() - marks["sent"]
        while time.monotonic() - marks["sent"] < drain - 0.3:
            assert b.answers(), "stopped answering during the drain"
            time.sleep(0.1)
        wait_until(
            lambda: instance_status(consul_client, "regtest", b.service_id) is None, 10, 0.05
        )
        marks["gone"] = time.monotonic() - marks["sent"]
        slow_thread.join(20)

    errors: list[BaseException] = []

    def guarded() -> None:
        try:
            terminate()
        except BaseException as exc:
            errors.append(exc)

    killer = threading.Thread(target=guarded)
    try:
        client.get("regtest", "/hello")
        killer.start()
        report = run_open_loop(call, rate=50.0, duration=8.0)
        killer.join(30)
    finally:
        client.close()
    assert not errors, f"{errors!r}\n{b.log()}"
    assert report.failures == [], report.failures[:5]
    assert len(report.outcomes) == 400
    assert slow.get("status") == 200, "the in-flight request was cut off"
    assert marks["gone"] <= drain + 3, marks
    assert b.wait_exit(15) in (0, -signal.SIGTERM), b.log()
    assert passing_ids(consul_client, "regtest") == {a.service_id}
    print(f"uvicorn drain: maintenance {marks['maintenance']:.2f}s, gone {marks['gone']:.2f}s")


def test_gunicorn_uvicorn_workers_register_once_in_the_master_and_drain(
    consul_agent, consul_client, start_service
):
    drain = 2.0
    svc = start_service(
        consul_agent.address, server="gunicorn-uvicorn", workers=2, drain_seconds=drain
    )
    _passing(consul_client, svc)
    services = consul_client.agent.services()
    assert [s for s in services.values() if s["Service"] == "regtest"] == [services[svc.service_id]]
    registered = [line for line in svc.log().splitlines() if "registry: registered" in line]
    assert len(registered) == 1 and f"[{svc.pid}]" in registered[0], registered

    slow: dict[str, int] = {}
    sent = time.monotonic()
    svc.signal(signal.SIGTERM)
    slow_thread = _slow_in_flight(svc, drain + 0.5, slow)
    wait_until(lambda: in_maintenance(consul_client, "regtest", svc.service_id), 1.0, 0.02)
    while time.monotonic() - sent < drain - 0.3:
        assert svc.answers(), f"stopped answering {time.monotonic() - sent:.1f}s into the drain"
        time.sleep(0.1)
    wait_until(lambda: instance_status(consul_client, "regtest", svc.service_id) is None, 10, 0.05)
    slow_thread.join(20)
    assert slow.get("status") == 200, "the in-flight request was cut off"
    assert svc.wait_exit(15) == 0, svc.log()


def test_plain_asgi_wrapper_registers_the_bound_port_and_drains(
    consul_agent, consul_client, start_service
):
    # SERVICE_PORT unset: the port comes from the socket uvicorn bound.
    svc = start_service(
        consul_agent.address, server="uvicorn", app="tests.registry.asgi_apps:plain_app",
        drain_seconds=1.0, extra_env={"SERVICE_PORT": ""},
    )  # fmt: skip
    _passing(consul_client, svc)
    registered = consul_client.agent.services()[svc.service_id]
    assert registered["Port"] == svc.port
    assert requests.get(f"{svc.url}/health", timeout=2).json()["status"] == "passing"
    assert requests.head(f"{svc.url}/health", timeout=2).status_code == 200
    svc.signal(signal.SIGTERM)
    wait_until(lambda: in_maintenance(consul_client, "regtest", svc.service_id), 1.0, 0.02)
    assert svc.answers()
    wait_until(lambda: instance_status(consul_client, "regtest", svc.service_id) is None, 10, 0.05)
    assert svc.wait_exit(15) in (0, -signal.SIGTERM), svc.log()


def test_wrapped_app_silent_on_lifespan_under_root_path_is_served_and_deregistered(
    consul_agent, consul_client, start_service
):
    # An inner app that just returns for a lifespan scope left the instance registered
    # for good after SIGTERM (nobody ran the lifespan shutdown), and under --root-path
    # /api wrap() compared "/api/health" with "/health": the inner app answered it (404).
    svc = start_service(
        consul_agent.address, server="uvicorn", app="tests.registry.asgi_apps:quiet_app",
        drain_seconds=1.0, extra_args=["--root-path", "/api"],
    )  # fmt: skip
    _passing(consul_client, svc)
    health = requests.get(f"{svc.url}/health", timeout=2)
    assert health.status_code == 200 and health.json()["status"] == "passing", health.text
    svc.signal(signal.SIGTERM)
    wait_until(lambda: in_maintenance(consul_client, "regtest", svc.service_id), 2.0, 0.02)
    wait_until(lambda: instance_status(consul_client, "regtest", svc.service_id) is None, 10, 0.05)
    assert svc.wait_exit(15) in (0, -signal.SIGTERM), svc.log()


def _refused(svc) -> str:  # type: ignore[no-untyped-def]
    code = svc.wait_exit(20)
    log = svc.log()
    assert code != 0, log
    lines = [line for line in log.splitlines() if "registry: bad configuration" in line]
    assert len(lines) == 1, log
    return lines[0]


def test_uvicorn_uds_is_refused_before_serving_unless_a_forwarded_port_is_named(
    consul_agent, consul_client, start_service, tmp_path: Path
):
    # Was: no SERVICE_PORT bound the socket, then failed after startup and exited 0;
    # SERVICE_PORT=N registered N silently (a port nothing listens on: critical).
    sock = str(tmp_path / "app.sock")
    uds = ["--uds", sock]
    unset = start_service(
        consul_agent.address, server="uvicorn", wait=False, extra_args=uds,
        extra_env={"SERVICE_PORT": ""},
    )  # fmt: skip
    line = _refused(unset)
    assert "SERVICE_PORT: required: uvicorn --uds" in line and "SERVICE_PORT_FORWARDED" in line
    assert "Uvicorn running" not in unset.log()
    port_only = start_service(consul_agent.address, server="uvicorn", wait=False, extra_args=uds)
    assert "listens on a unix socket" in _refused(port_only)
    assert consul_client.agent.services() == {}
    forwarded = start_service(
        consul_agent.address, server="uvicorn", wait=False, extra_args=uds,
        extra_env={"SERVICE_PORT_FORWARDED": "true"},
    )  # fmt: skip
    wait_until(lambda: forwarded.service_id in consul_client.agent.services(), 15)
    assert consul_client.agent.services()[forwarded.service_id]["Port"] == forwarded.port
    forwarded.signal(signal.SIGINT)
    wait_until(lambda: consul_client.agent.services() == {}, 10, 0.05)


def test_uvicorn_several_workers_is_refused(consul_agent, consul_client, start_service):
    # Was: each worker registered the one id; a SIGHUP restart drained and deregistered
    # it while the other worker served (gone from Consul until a reconcile).
    svc = start_service(
        consul_agent.address, server="uvicorn", wait=False, extra_args=["--workers", "2"]
    )
    svc.wait_exit(20)  # uvicorn's parent exits 0 when its workers fail to start (its own)
    lines = [line for line in svc.log().splitlines() if "registry: bad configuration" in line]
    assert lines, svc.log()
    line = lines[0]
    assert "uvicorn --workers: 2: each worker process would register" in line, line
    assert "uvicorn_worker.UvicornWorker --workers 2" in line
    assert consul_client.agent.services() == {}


def test_uvicorn_reload_restarts_without_a_drain_and_deregisters_at_the_end(
    consul_agent, consul_client, start_service, tmp_path: Path
):
    # uvicorn --reload stops its server process with SIGTERM on every change: each
    # reload drained (maintenance, SERVICE_DRAIN_SECONDS of waiting) before restarting.
    watched = tmp_path / "watched"
    watched.mkdir()
    (watched / "mod.py").write_text("x = 1\n")
    svc = start_service(
        consul_agent.address, server="uvicorn", drain_seconds=5,
        extra_args=["--reload", "--reload-dir", str(watched)],
    )  # fmt: skip
    _passing(consul_client, svc)
    time.sleep(1.0)  # the reloader's first scan
    (watched / "mod.py").write_text("x = 2\n")
    touched = time.monotonic()
    wait_until(lambda: svc.log().count("registry: registered") == 2, 15, 0.05)
    took = time.monotonic() - touched
    assert "draining" not in svc.log(), svc.log()
    assert took < 4.0, f"reloaded in {took:.1f}s"
    _passing(consul_client, svc)
    svc.signal(signal.SIGTERM)
    wait_until(lambda: instance_status(consul_client, "regtest", svc.service_id) is None, 10, 0.05)
    svc.wait_exit(15)
