"""The pytest plugin's fixtures against a real agent: register, flip health, maintenance,
restart with and without state; and, through pytester, that the plugin is opt-in, stops
its agent by PID, and fails (never skips) without a Consul binary."""

from __future__ import annotations

import os
import textwrap
import threading
import time

import pytest
import requests

from consul_discovery.connection import ConsulConnection
from consul_discovery.testing import ConsulAgent, ConsulInstances


def health_of(agent: ConsulAgent, service: str) -> dict[str, str]:
    """Instance id -> its aggregated status in Consul's catalog, as a client sees it."""
    entries = requests.get(f"{agent.url}/v1/health/service/{service}", timeout=5).json()
    worst = {"passing": 0, "warning": 1, "critical": 2}
    result = {}
    for entry in entries:
        statuses = [c["Status"] for c in entry["Checks"] if c["ServiceID"]]
        result[entry["Service"]["ID"]] = max(statuses, key=worst.__getitem__, default="passing")
    return result


def test_ttl_instances_flip_through_every_health_and_maintenance(
    consul_agent: ConsulAgent, consul_instances: ConsulInstances
) -> None:
    web = consul_instances.register("web", port=8080, tags=["v1"], weights=(10, 1))
    other = consul_instances.register("web", port=8081)
    assert health_of(consul_agent, "web") == {web.id: "passing", other.id: "passing"}
    assert consul_instances.passing("web") == sorted([web.id, other.id])

    consul_instances.set_health(web, "warning")
    assert health_of(consul_agent, "web")[web.id] == "warning"
    consul_instances.set_health(web, "critical", note="disk full")
    assert consul_instances.passing("web") == [other.id]
    consul_instances.set_health(web, "passing")

    consul_instances.maintenance(other, reason="draining")
    assert consul_instances.passing("web") == [web.id]
    consul_instances.maintenance(other, enable=False)
    assert consul_instances.passing("web") == sorted([web.id, other.id])

    entry = requests.get(f"{consul_agent.url}/v1/agent/service/{web.id}", timeout=5).json()
    assert entry["Weights"] == {"Passing": 10, "Warning": 1}
    assert entry["Tags"] == ["v1"]

    consul_instances.deregister(other)
    assert set(health_of(consul_agent, "web")) == {web.id}


def test_http_checks_ask_a_health_endpoint_whose_answer_the_test_sets(
    consul_agent: ConsulAgent, consul_instances: ConsulInstances
) -> None:
    api = consul_instances.register("api", check="http")
    assert api.http_url == f"http://127.0.0.1:{api.port}/health"
    assert requests.get(api.http_url, timeout=5).status_code == 200
    for health in ("warning", "critical", "passing"):
        started = time.monotonic()
        consul_instances.set_health(api, health)  # waits until Consul's next check saw it
        assert health_of(consul_agent, "api") == {api.id: health}
        assert time.monotonic() - started < 10

    own = consul_instances.register("own", check="http", http_url=api.http_url)
    with pytest.raises(ValueError, match="make that server answer 503"):
        consul_instances.set_health(own, "critical")


def test_instances_are_deregistered_when_the_fixture_closes(consul_agent: ConsulAgent) -> None:
    with ConsulInstances(consul_agent.connection()) as instances:
        instances.register("short-lived", check="http")
        endpoint_port = instances.registered()[0].port
    assert health_of(consul_agent, "short-lived") == {}
    with pytest.raises(requests.ConnectionError):
        requests.get(f"http://127.0.0.1:{endpoint_port}/health", timeout=2)


def test_bad_arguments_name_what_is_wrong(consul_instances: ConsulInstances) -> None:
    with pytest.raises(ValueError, match="health must be one of passing, warning, critical"):
        consul_instances.register("web", health="sick")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="http_url needs check='http'"):
        consul_instances.register("web", http_url="http://127.0.0.1:1/health")
    bare = consul_instances.register("bare", check="none")
    with pytest.raises(ValueError, match="without a check"):
        consul_instances.set_health(bare, "critical")


def test_bad_weights_are_refused_before_a_health_endpoint_is_served(
    consul_instances: ConsulInstances,
) -> None:
    """Consul's own spelling, a mapping, was a KeyError: 0 that left the HTTP check's
    health endpoint serving (a thread and a port) until the process ended."""
    before = {t.ident for t in threading.enumerate() if t.name == "consul-test-health"}
    with pytest.raises(ValueError, match=r"weights must be a \(passing, warning\) pair"):
        consul_instances.register("web", check="http", weights={"Passing": 5, "Warning": 1})  # type: ignore[arg-type]
    after = {t.ident for t in threading.enumerate() if t.name == "consul-test-health"}
    assert after == before
    assert consul_instances.registered() == []


def test_a_dev_agent_restarts_empty(
    consul_agent: ConsulAgent, consul_instances: ConsulInstances
) -> None:
    consul_instances.register("web")
    pid = consul_agent.pid
    consul_agent.restart()
    assert consul_agent.pid not in (None, pid)
    assert health_of(consul_agent, "web") == {}
    with pytest.raises(ValueError, match="dev agent keeps its state in memory"):
        consul_agent.restart(keep_state=True)


def test_a_persistent_agent_restarts_with_its_registrations_and_kv(
    consul_agent_persistent: ConsulAgent,
) -> None:
    agent = consul_agent_persistent
    with ConsulInstances(agent.connection()) as instances:
        web = instances.register("web", ttl="5m")
        assert requests.put(f"{agent.url}/v1/kv/config/web/x", data="1", timeout=5).json()

        agent.restart()
        instances.wait_for_health(web, None)
        assert set(health_of(agent, "web")) == {web.id}
        assert requests.get(f"{agent.url}/v1/kv/config/web/x?raw", timeout=5).text == "1"

        agent.restart(keep_state=False)
        assert health_of(agent, "web") == {}
        assert requests.get(f"{agent.url}/v1/kv/config/web/x", timeout=5).status_code == 404


def test_the_connection_fixture_reaches_the_agent(
    consul_agent: ConsulAgent, consul_connection: ConsulConnection
) -> None:
    assert consul_connection.address == consul_agent.address
    with consul_connection.session() as session:
        leader = session.get(f"{consul_connection.base_url}/v1/status/leader", timeout=5)
    assert leader.json().endswith(f":{consul_agent.ports.server}")


INNER_TEST = """
    import os

    def test_uses_an_agent(consul_agent, tmp_path_factory):
        path = tmp_path_factory.getbasetemp().parent / "agent.pid"
        path.write_text(str(consul_agent.pid))
        assert consul_agent.client().status.leader()
"""


def test_the_plugin_is_opt_in_and_stops_its_agent_by_pid(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_inner=textwrap.dedent(INNER_TEST))

    without = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    without.assert_outcomes(errors=1)
    without.stdout.fnmatch_lines(["*fixture 'consul_agent' not found*"])

    opted_in = pytester.runpytest_subprocess("-p", "consul_discovery.pytest_plugin")
    opted_in.assert_outcomes(passed=1)
    pid = int((pytester.path / "agent.pid").read_text())  # basetemp is under pytester.path
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


def test_without_a_consul_binary_the_test_errors_saying_how_to_get_one(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytester.makepyfile(test_inner=textwrap.dedent(INNER_TEST))
    monkeypatch.setenv("CONSUL_BIN", str(pytester.path / "no-such-consul"))
    # -rN: no short summary, which repeats the message only when the terminal is wide enough
    result = pytester.runpytest_subprocess("-p", "consul_discovery.pytest_plugin", "-rN")
    result.assert_outcomes(errors=1)
    assert "skipped" not in result.stdout.str()
    result.stdout.fnmatch_lines(["*CONSUL_BIN=*no-such-consul is not an executable file*"])
    assert "During handling of the above exception" not in result.stdout.str()
    assert result.stdout.str().count("is not an executable file. Point it") == 1  # said once
