"""The CLI against a real Consul agent and real gunicorn backends."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from collections.abc import Iterator

import pytest

from consul_discovery.client.cli import format_table, main
from tests.harness.agent import ConsulAgent, running_agent
from tests.harness.backends import REPO_ROOT, Backend, start_backends


def run(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = main(list(argv), out=out, err=err)
    return code, out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def consul_agent() -> Iterator[ConsulAgent]:
    """One agent for the whole module (the CLI only reads; each test resets the backends)."""
    with running_agent() as agent:
        yield agent


@pytest.fixture(scope="module")
def backends(consul_agent: ConsulAgent) -> Iterator[list[Backend]]:
    with start_backends(consul_agent, "echo", 3, check="ttl") as started:
        yield started


@pytest.fixture
def echo(backends: list[Backend]) -> list[Backend]:
    """Three TTL-checked backends of ``echo``: passing, warning, critical."""
    for backend, health in zip(backends, ("passing", "warning", "critical"), strict=True):
        backend.set_ttl(health)
        backend.control(fail=0, delay=0)
    return backends


def test_services_table_and_json(consul_agent, echo):
    code, out, _ = run("--consul", consul_agent.address, "services")
    assert code == 0
    lines = out.splitlines()
    assert lines[0].split() == ["SERVICE", "PASSING", "WARNING", "CRITICAL", "TOTAL"]
    assert ["echo", "1", "1", "1", "3"] in [line.split() for line in lines]
    code, out, _ = run("--consul", consul_agent.address, "--json", "services")
    data = {s["name"]: s for s in json.loads(out)}
    assert data["echo"] == {"name": "echo", "passing": 1, "warning": 1, "critical": 1, "total": 3}
    assert "consul" in data


def test_instances_lists_every_health(consul_agent, echo):
    code, out, _ = run("--consul", consul_agent.address, "--json", "instances", "echo")
    assert code == 0
    health = {i["id"]: i["health"] for i in json.loads(out)}
    assert health == {"echo-0": "passing", "echo-1": "warning", "echo-2": "critical"}
    code, out, _ = run("--consul", consul_agent.address, "instances", "echo")
    assert code == 0 and out.splitlines()[0].split()[:3] == ["ID", "ADDRESS", "HEALTH"]
    assert len(out.splitlines()) == 4


def test_resolve_shows_the_balanced_set(consul_agent, echo):
    code, out, _ = run("--consul", consul_agent.address, "--json", "resolve", "echo")
    assert code == 0
    data = json.loads(out)
    assert [i["id"] for i in data["instances"]] == ["echo-0", "echo-1"]
    assert data["stale"] is False and data["panic"] is False and data["index"] > 0
    assert data["instances"][0]["url"] == echo[0].url
    code, out, _ = run("--consul", consul_agent.address, "resolve", "echo")
    assert code == 0 and out.startswith("echo: 2 instance(s) at index")


def test_call_goes_through_the_service_client(consul_agent, echo):
    code, out, _ = run(
        "--consul", consul_agent.address, "--json", "call", "echo", "POST", "/",
        "-d", '{"x": 1}', "-H", "X-Test: yes",
    )  # fmt: skip
    assert code == 0
    data = json.loads(out)
    assert data["status"] == 200 and data["body"]["instance"] in {"echo-0", "echo-1"}
    client = data["client"]  # what the client saw: the typed stats, as JSON
    assert client["target"]["service"] == "echo" and client["requests"] == 1
    assert sum(i["picks"] for i in client["instances"]) == 1
    echo[0].control(fail=503)
    echo[1].control(fail=503)
    code, out, _ = run("--consul", consul_agent.address, "call", "echo", "GET", "/")
    assert code == 1 and out.startswith("HTTP 503")


def test_errors_are_one_line_and_non_zero(consul_agent, echo):
    code, out, err = run("--consul", consul_agent.address, "resolve", "nope")
    assert code == 1 and out == ""
    assert err.count("\n") == 1 and "unknown service 'nope'" in err and "echo" in err
    code, _, err = run("--consul", consul_agent.address, "call", "echo", "GET", "/", "-H", "bad")
    assert code == 1 and "bad header" in err


@pytest.mark.parametrize("command", [("chain",), ("route", "GET", "/")])
def test_chain_and_route_of_an_unknown_service_fail_in_one_line(consul_agent, echo, command):
    name, *rest = command
    code, out, err = run("--consul", consul_agent.address, name, "nope", *rest)
    assert code == 1 and out == ""
    assert err.count("\n") == 1 and "unknown service 'nope'" in err and "echo" in err
    code, out, _ = run("--consul", consul_agent.address, name, "echo", *rest)
    assert code == 0 and out  # a known service with Consul's default chain


@pytest.mark.parametrize(
    "command", [("services",), ("chain", "echo"), ("route", "echo", "GET", "/")]
)
def test_unreachable_consul_is_one_line(consul_agent_unstarted, command):
    code, _, err = run("--consul", consul_agent_unstarted.address, "--timeout", "2", *command)
    assert code == 1 and err.count("\n") == 1 and "unreachable" in err


def test_module_entry_point(consul_agent, echo):
    done = subprocess.run(
        [sys.executable, "-m", "consul_discovery.client", "--consul", consul_agent.address,
         "--json", "resolve", "echo"],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert len(json.loads(done.stdout)["instances"]) == 2


def test_format_table_aligns_columns():
    assert format_table(("A", "BB"), [("xxx", 1)]) == "A    BB\nxxx  1"
