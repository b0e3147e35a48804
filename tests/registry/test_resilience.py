"""Staying registered: Consul down at startup, agent restart, TTL health, flapping, crash."""

from __future__ import annotations

import time

import pytest
import requests

from tests.registry.conftest import instance_status, wait_until


def status_of(client, svc):  # type: ignore[no-untyped-def]
    return instance_status(client, "regtest", svc.service_id)


def test_starts_while_consul_down_and_registers_when_it_comes_up(
    consul_agent_unstarted, start_service
):
    agent = consul_agent_unstarted
    svc = start_service(agent.address, check_interval="1s")
    # Consul is down: the service still serves, for 5 s
    started = time.monotonic()
    while time.monotonic() - started < 5:
        assert svc.answers(), "service stopped answering while Consul was down"
        time.sleep(0.25)
    agent.start()  # returns once a leader is elected and the node is in the catalog
    elected = time.monotonic()
    client = agent.client()
    wait_until(lambda: status_of(client, svc) is not None, 5.0)
    took = time.monotonic() - elected
    assert took <= 5.0
    wait_until(lambda: status_of(client, svc) == "passing", 3.0)
    print(f"registered {took:.2f}s after leader election")


def test_agent_restart_without_state_reregisters(consul_agent, start_service):
    interval = 1.0
    svc = start_service(consul_agent.address, check_interval="1s")
    client = consul_agent.client()
    wait_until(lambda: status_of(client, svc) == "passing", 5.0)
    pid = svc.pid
    consul_agent.restart()  # dev agent: comes back empty
    back = time.monotonic()
    check_id = f"service:{svc.service_id}"

    def agent_passing() -> bool:
        return client.agent.checks().get(check_id, {}).get("Status") == "passing"

    # the agent (which owns the instance) has it back and passing within interval + 2 s
    wait_until(agent_passing, interval + 2, 0.05)
    on_agent = time.monotonic() - back
    # consumers read the catalog, which the agent's anti-entropy updates a little later
    wait_until(lambda: status_of(client, svc) == "passing", interval + 4, 0.05)
    in_catalog = time.monotonic() - back
    assert svc.pid == pid and svc.process.poll() is None, "service was restarted"
    print(f"agent restart: passing on the agent {on_agent:.2f}s, in catalog {in_catalog:.2f}s")


def test_ttl_mode_reports_real_health(consul_agent, consul_client, start_service, tmp_path):
    ttl = 3.0
    control = tmp_path / "health"
    control.write_text("ok")
    svc = start_service(
        consul_agent.address,
        check="ttl",
        check_interval="3s",
        extra_env={"HEALTH_CONTROL": str(control)},
    )
    wait_until(lambda: status_of(consul_client, svc) == "passing", ttl + 2)
    control.write_text("fail")
    failed = time.monotonic()
    wait_until(lambda: status_of(consul_client, svc) == "critical", ttl, 0.05)
    to_critical = time.monotonic() - failed
    checks = consul_client.agent.checks()
    assert "forced failure" in checks[f"service:{svc.service_id}"]["Output"]
    control.write_text("ok")
    recovered = time.monotonic()
    wait_until(lambda: status_of(consul_client, svc) == "passing", ttl, 0.05)
    to_passing = time.monotonic() - recovered
    print(f"TTL {ttl}s: critical after {to_critical:.2f}s, passing again after {to_passing:.2f}s")


def test_ttl_mode_reregisters_when_agent_forgets(consul_agent, consul_client, start_service):
    svc = start_service(consul_agent.address, check="ttl", check_interval="3s")
    wait_until(lambda: status_of(consul_client, svc) == "passing", 5)
    first = _create_index(consul_client, svc)
    consul_client.agent.service.deregister(svc.service_id)  # agent forgets: next TTL update 404s
    gone = time.monotonic()
    # Registered anew (a later CreateIndex: not the old entry still in the catalog) and
    # passing within a heartbeat (half the 3 s TTL) plus slack.
    wait_until(
        lambda: (
            (_create_index(consul_client, svc) or 0) > first
            and status_of(consul_client, svc) == "passing"
        ),
        1.5 + 3,
        0.05,
    )
    print(f"TTL re-registered {time.monotonic() - gone:.2f}s after being forgotten")


def _create_index(client, svc) -> int | None:  # type: ignore[no-untyped-def]
    """The catalog entry's CreateIndex (None: absent): a new one means a new registration."""
    _, nodes = client.catalog.service("regtest")
    return next((n["CreateIndex"] for n in nodes if n["ServiceID"] == svc.service_id), None)


def test_flapping_health_never_turns_critical(consul_agent, consul_client, start_service, tmp_path):
    control = tmp_path / "health"
    control.write_text("alternate")
    svc = start_service(
        consul_agent.address,
        check_interval="1s",
        failures_before_critical=3,
        extra_env={"HEALTH_CONTROL": str(control)},
    )
    wait_until(lambda: status_of(consul_client, svc) == "passing", 5)
    seen = set()
    watch_until = time.monotonic() + 8
    while time.monotonic() < watch_until:
        seen.add(status_of(consul_client, svc))
        time.sleep(0.1)
    assert seen == {"passing"}, seen
    failures = requests.get(f"{svc.url}/stats", timeout=2).json()["health_failures"]
    assert failures >= 3, "the health endpoint did not actually flap"


@pytest.mark.slow
def test_kill9_goes_critical_then_is_removed(consul_agent, consul_client, start_service):
    interval = 1.0
    svc = start_service(consul_agent.address, check_interval="1s", deregister_after="1m")
    wait_until(lambda: status_of(consul_client, svc) == "passing", 5)
    svc.kill_group()
    killed = time.monotonic()
    wait_until(lambda: status_of(consul_client, svc) == "critical", interval + 1.5, 0.05)
    to_critical = time.monotonic() - killed
    wait_until(lambda: status_of(consul_client, svc) is None, 60 + 45, 0.5)
    removed = time.monotonic() - killed
    assert removed >= 55, f"removed after {removed:.0f}s, before DeregisterCriticalServiceAfter"
    print(f"kill -9: critical after {to_critical:.2f}s, removed after {removed:.1f}s")
