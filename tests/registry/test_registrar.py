"""The Registrar on its own, in-process, against a real agent (no web server needed)."""

from __future__ import annotations

import random
import time

from consul_discovery.registry import HealthChecks, Registrar, Registration, State
from tests.registry.conftest import in_maintenance, instance_status, wait_until


def registration(agent, **settings: str) -> Registration:  # type: ignore[no-untyped-def]
    env = {
        "SERVICE_NAME": "inproc",
        "SERVICE_ID": "inproc-1",
        "SERVICE_PORT": "9",
        "CONSUL_HTTP_ADDR": agent.address,
        **settings,
    }
    return Registration.from_env(env)


def test_ttl_heartbeat_calls_the_health_function_directly(consul_agent, consul_client):
    checks = HealthChecks()
    healthy = {"ok": True}
    checks.add("dependency", lambda: healthy["ok"])
    reg = registration(
        consul_agent, SERVICE_CHECK="ttl", SERVICE_CHECK_INTERVAL="2s", SERVICE_TAGS="a,b"
    )
    registrar = Registrar(reg, health=checks.evaluate, rng=random.Random(3)).start()
    try:
        assert registrar.wait_registered(5)
        assert registrar.state is State.REGISTERED
        wait_until(lambda: instance_status(consul_client, "inproc", "inproc-1") == "passing", 2)
        service = consul_client.agent.services()["inproc-1"]
        assert (service["Port"], service["Tags"]) == (9, ["a", "b"])
        healthy["ok"] = False
        wait_until(lambda: instance_status(consul_client, "inproc", "inproc-1") == "critical", 2)
        output = consul_client.agent.checks()["service:inproc-1"]["Output"]
        assert "dependency" in output
        healthy["ok"] = True
        wait_until(lambda: instance_status(consul_client, "inproc", "inproc-1") == "passing", 2)
    finally:
        registrar.close()
    assert registrar.state is State.STOPPED
    wait_until(lambda: instance_status(consul_client, "inproc", "inproc-1") is None, 2, 0.05)


def test_drain_enters_maintenance_and_waits_with_injected_sleep(consul_agent, consul_client):
    slept: list[float] = []
    reg = registration(consul_agent, SERVICE_CHECK="tcp", SERVICE_DRAIN_SECONDS="7")
    registrar = Registrar(reg, sleep=slept.append).start()
    try:
        assert registrar.wait_registered(5)
        began = time.monotonic()
        registrar.drain()
        assert time.monotonic() - began < 1  # the injected sleep did the waiting
        assert slept == [7.0]
        assert registrar.state is State.DRAINING
        wait_until(lambda: in_maintenance(consul_client, "inproc", "inproc-1"), 2, 0.05)
        registrar.drain()  # idempotent
    finally:
        registrar.close()
        registrar.close()  # idempotent
    wait_until(lambda: instance_status(consul_client, "inproc", "inproc-1") is None, 2, 0.05)


def test_wan_address_and_locality_reach_the_agent(consul_agent, consul_client):
    """SERVICE_WAN_ADDRESS (TaggedAddresses wan and wan_ipv4) and SERVICE_REGION/ZONE
    (Locality) are in the registration Consul holds, not only in the definition."""
    reg = registration(
        consul_agent,
        SERVICE_CHECK="ttl",
        SERVICE_WAN_ADDRESS="198.51.100.7:8443",
        SERVICE_REGION="eu",
        SERVICE_ZONE="eu-1b",
    )
    registrar = Registrar(reg, health=HealthChecks().evaluate, rng=random.Random(3)).start()
    try:
        assert registrar.wait_registered(5)
        service = consul_client.agent.services()["inproc-1"]
        wan = {"Address": "198.51.100.7", "Port": 8443}
        assert service["TaggedAddresses"]["wan"] == wan
        assert service["TaggedAddresses"]["wan_ipv4"] == wan
        assert service["Locality"] == {"Region": "eu", "Zone": "eu-1b"}
    finally:
        registrar.close()
