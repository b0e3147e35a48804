"""Registrar edge cases: 400/403 fail clearly, no lock or fork guard across slow work,
the client's session is closed, and an outage is two log lines, not one per second."""

from __future__ import annotations

import logging
import signal
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import pytest
import requests

from consul_discovery.connection import acl_denial
from consul_discovery.registry import ConsulRejected, HealthReport, Registrar, Registration, State
from consul_discovery.registry.forksafe import _guard
from consul_discovery.registry.meta import meta_problem
from consul_discovery.registry.outage import OutageLog
from tests.harness.acl import MANAGEMENT_TOKEN, create_token, running_acl_agent
from tests.harness.agent import ConsulAgent
from tests.registry.conftest import wait_until


def registration(address: str, **settings: str) -> Registration:
    env = {
        "SERVICE_NAME": "edge",
        "SERVICE_ID": "edge-1",
        "SERVICE_PORT": "9",
        "CONSUL_HTTP_ADDR": address,
        **settings,
    }
    return Registration.from_env(env)


# -- 400 and 403 from a real agent ---------------------------------------------------


def test_a_400_fails_once_and_clearly_instead_of_retrying(
    consul_agent: ConsulAgent, caplog: pytest.LogCaptureFixture
) -> None:
    # from_env refuses such meta (registry.meta): only a Registration made by hand has it
    reg = replace(registration(consul_agent.address), meta={"k" * 200: "v"})
    registrar = Registrar(reg).start()
    try:
        wait_until(lambda: registrar.error is not None, 5)
        error = registrar.error
        assert isinstance(error, ConsulRejected) and error.status == 400
        assert "register edge-1" in str(error) and "too long" in str(error).lower()
        time.sleep(0.5)
        assert not registrar.wait_registered(0)
        failures = [r for r in caplog.records if "register edge-1" in r.getMessage()]
        assert len(failures) == 1, [r.getMessage() for r in failures]
        assert failures[0].levelno == logging.ERROR
    finally:
        registrar.close()


def _agent_answer(agent: ConsulAgent, meta: dict[str, str]) -> tuple[int, str]:
    body = {"ID": f"meta-{uuid.uuid4().hex[:8]}", "Name": "meta", "Port": 9, "Meta": meta}
    answer = requests.put(f"{agent.url}/v1/agent/service/register", json=body, timeout=5)
    if answer.status_code == 200:
        requests.put(f"{agent.url}/v1/agent/service/deregister/{body['ID']}", timeout=5)
    return answer.status_code, answer.text


@pytest.mark.parametrize(
    ("meta", "agent_says"),
    [
        ({"a b": "1"}, "Key contains invalid characters"),
        ({"é": "1"}, "Key contains invalid characters"),
        ({"k" * 129: "1"}, "Key is too long"),
        ({"consul-x": "1"}, "reserved for internal use"),
        ({"k": "é" * 257}, "Value is too long"),
        ({f"k{n}": "v" for n in range(65)}, "cannot contain more than 64"),
    ],
)
def test_the_meta_the_settings_refuse_is_what_the_agent_refuses(
    consul_agent: ConsulAgent, meta: dict[str, str], agent_says: str
) -> None:
    """registry.meta's rules are the agent's: what it refuses the agent refuses, and the
    largest meta it accepts the agent registers."""
    assert meta_problem(meta) is not None
    status, text = _agent_answer(consul_agent, meta)
    assert status == 400 and agent_says in text, (status, text)
    largest = {f"k{n}": "v" for n in range(63)} | {"K_-9" * 32: "é" * 256}
    assert meta_problem(largest) is None
    assert _agent_answer(consul_agent, largest)[0] == 200


@pytest.fixture(scope="module")
def acl_agent() -> Iterator[tuple[ConsulAgent, str, str]]:
    """A dev agent with ACLs on, default deny; yields it, a token with no policy and the
    management token."""
    with running_acl_agent() as agent:
        yield agent, create_token(agent), MANAGEMENT_TOKEN


def test_a_403_names_the_permission_and_the_call_never_the_token(
    acl_agent: tuple[ConsulAgent, str, str], caplog: pytest.LogCaptureFixture
) -> None:
    agent, secret, _management = acl_agent
    caplog.set_level(logging.DEBUG)
    registrar = Registrar(registration(agent.address, CONSUL_HTTP_TOKEN=secret)).start()
    try:
        wait_until(lambda: registrar.error is not None, 5)
        error = registrar.error
        assert isinstance(error, ConsulRejected) and error.status == 403
        assert error.permission == "service:write"
        assert str(error).startswith("register edge-1: Consul refused it (403")
        assert "the ACL token lacks 'service:write' on 'edge'" in str(error)
    finally:
        registrar.close()
    assert secret not in caplog.text and secret not in repr(error)
    assert caplog.text.count("lacks 'service:write'") == 1  # the give-up line, once


def test_an_unknown_token_is_named_as_the_clis_name_it(
    acl_agent: tuple[ConsulAgent, str, str], caplog: pytest.LogCaptureFixture
) -> None:
    """Consul answers a token it does not know with 403 "ACL not found": the registrar
    says so in the CLIs' words (consul_connection.refusals), not "lacks a permission"."""
    agent, _secret, _management = acl_agent
    unknown = str(uuid.uuid4())
    caplog.set_level(logging.DEBUG)
    registrar = Registrar(registration(agent.address, CONSUL_HTTP_TOKEN=unknown)).start()
    try:
        wait_until(lambda: registrar.error is not None, 5)
        error = registrar.error
    finally:
        registrar.close()
    assert isinstance(error, ConsulRejected) and error.status == 403
    assert error.permission is None
    shared = acl_denial("ACL not found", "register edge-1")
    assert (
        str(error) == f"register edge-1: Consul refused it (403 permission denied): {shared.reason}"
    )
    assert "does not know the ACL token (ACL not found; check CONSUL_HTTP_TOKEN" in str(error)
    gave_up = [r.getMessage() for r in caplog.records if "giving up on edge-1" in r.getMessage()]
    assert len(gave_up) == 1 and "does not know the ACL token" in gave_up[0], gave_up
    assert "lacks" not in caplog.text and unknown not in caplog.text


@pytest.mark.parametrize("server", ["uvicorn", "gunicorn"])
def test_sigterm_after_a_refused_registration_says_nothing_was_registered(
    acl_agent: tuple[ConsulAgent, str, str], start_service: Any, server: str
) -> None:
    """The registrar gave up (403): no drain, no maintenance, and no 'deregistered' for
    an instance the agent never had (py-consul answers its 404 with False)."""
    agent, secret, _management = acl_agent
    svc = start_service(
        agent.address, server=server, drain_seconds=5, extra_env={"CONSUL_HTTP_TOKEN": secret}
    )
    wait_until(lambda: "registry: giving up on" in svc.log(), 10)
    sent = time.monotonic()
    svc.signal(signal.SIGTERM)
    assert svc.wait_exit(15) in (0, -signal.SIGTERM), svc.log()
    assert time.monotonic() - sent < 4, svc.log()  # no 5 s drain
    log = svc.log()
    assert f"{svc.service_id} was never registered: nothing to drain" in log, log
    assert f"{svc.service_id} was not registered (the agent does not know it)" in log, log
    assert "in maintenance" not in log and "draining for" not in log, log
    assert f"deregistered {svc.service_id}" not in log, log


def _set_policy(agent: ConsulAgent, management: str, token_id: str, rules: str | None) -> None:
    """Give the token ``token_id`` a policy of ``rules`` (None: no policy at all)."""
    headers = {"X-Consul-Token": management}
    policies = []
    if rules is not None:
        made = requests.put(
            f"{agent.url}/v1/acl/policy",
            json={"Name": f"p-{uuid.uuid4().hex[:8]}", "Rules": rules},
            headers=headers,
            timeout=5,
        )
        made.raise_for_status()
        policies = [{"ID": made.json()["ID"]}]
    updated = requests.put(
        f"{agent.url}/v1/acl/token/{token_id}",
        json={"Policies": policies},
        headers=headers,
        timeout=5,
    )
    updated.raise_for_status()


def test_a_403_after_the_token_worked_is_retried_not_given_up(
    acl_agent: tuple[ConsulAgent, str, str], caplog: pytest.LogCaptureFixture
) -> None:
    """Seen in the agentless drill: a server restarted under a registrar answered 403 to
    the token it had accepted; the registrar gave up and never heartbeated again."""
    agent, _secret, management = acl_agent
    made = requests.put(
        f"{agent.url}/v1/acl/token",
        json={"Description": "edge"},
        headers={"X-Consul-Token": management},
        timeout=5,
    )
    made.raise_for_status()
    token_id, secret = made.json()["AccessorID"], made.json()["SecretID"]
    rules = 'service "edge" { policy = "write" }\nnode_prefix "" { policy = "read" }'
    _set_policy(agent, management, token_id, rules)
    reg = registration(agent.address, CONSUL_HTTP_TOKEN=secret, SERVICE_CHECK_INTERVAL="1s")
    registrar = Registrar(reg).start()
    try:
        assert registrar.wait_registered(10)
        _set_policy(agent, management, token_id, None)  # refused from now on
        wait_until(lambda: "the same token was accepted before" in caplog.text, 10)
        assert registrar.error is None and registrar.state is State.REGISTERED
        _set_policy(agent, management, token_id, rules)  # the operator puts it back
        wait_until(lambda: "back" in caplog.text.split("accepted before")[-1], 15)
        assert registrar.error is None
    finally:
        registrar.close()
    assert secret not in caplog.text


# -- locks, the fork guard and the session, with an agent that blocks on demand -------


class SlowAgent:
    """A py-consul stand-in whose register blocks until ``release`` is set."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.registering = threading.Event()
        self.calls: list[str] = []  # appended by the registrar's threads
        self.http = type("Http", (), {"session": requests.Session()})()
        self.agent = self
        self.service = self
        self.check = self

    def register(self, *_a: Any, **_k: Any) -> bool:
        self.registering.set()
        self.release.wait(10)
        self.calls.append("register")
        return True

    def maintenance(self, *_a: Any, **_k: Any) -> bool:
        self.calls.append("maintenance")
        return True

    def deregister(self, *_a: Any, **_k: Any) -> bool:
        self.calls.append("deregister")
        return True

    def services(self, *_a: Any, **_k: Any) -> dict[str, Any]:
        return {"edge-1": {}}

    def ttl_pass(self, *_a: Any, **_k: Any) -> bool:
        self.calls.append("ttl")
        return True

    ttl_fail = ttl_pass


def test_sigterm_path_never_waits_on_an_agent_call_and_follows_up() -> None:
    slow = SlowAgent()
    registrar = Registrar(registration("127.0.0.1:1", SERVICE_CHECK="tcp"), client=slow).start()
    assert slow.registering.wait(5)  # the worker is inside a register call
    began = time.monotonic()
    registrar.begin_drain()  # SIGTERM: must not wait for the register
    assert time.monotonic() - began < 0.5
    assert registrar.state is State.DRAINING
    assert slow.calls == []  # nothing registered yet: nothing to put in maintenance
    slow.release.set()
    # The register landed after the drain began: it is put in maintenance then.
    wait_until(lambda: slow.calls == ["register", "maintenance"], 5)
    registrar.close()
    assert slow.calls[-1] == "deregister"


def test_the_ttl_self_probe_runs_outside_the_fork_guard() -> None:
    slow = SlowAgent()
    slow.release.set()
    guard_free: list[bool] = []
    probed = threading.Event()

    def health() -> HealthReport:
        # Another thread (os.fork's hook) can take the guard while the probe runs.
        got: list[bool] = []

        def try_guard() -> None:
            if _guard.acquire(timeout=1):
                got.append(True)
                _guard.release()
            else:
                got.append(False)

        t = threading.Thread(target=try_guard)
        t.start()
        t.join()
        guard_free.append(got[0])
        probed.set()
        return HealthReport("passing")

    reg = registration("127.0.0.1:1", SERVICE_CHECK="ttl", SERVICE_CHECK_INTERVAL="3s")
    registrar = Registrar(reg, health=health, client=slow).start()
    try:
        assert probed.wait(5)
    finally:
        registrar.close()
    assert guard_free and all(guard_free)


def test_stop_closes_the_session_of_the_client_it_made(consul_agent: ConsulAgent) -> None:
    registrar = Registrar(registration(consul_agent.address, SERVICE_CHECK="tcp")).start()
    assert registrar.wait_registered(5)
    session = registrar._client.http.session
    adapter = session.get_adapter("http://")
    assert len(adapter.poolmanager.pools) == 1
    registrar.close()
    assert len(adapter.poolmanager.pools) == 0  # Session.close() cleared its pools


# -- an outage is two warnings ---------------------------------------------------------


def test_an_outage_is_one_warning_going_and_one_coming_back(
    caplog: pytest.LogCaptureFixture,
) -> None:
    now = [100.0]
    outage = OutageLog(logging.getLogger("test.outage"), "the agent", clock=lambda: now[0])
    caplog.set_level(logging.DEBUG, logger="test.outage")
    outage.ok()
    for n in range(30):
        outage.failed(f"refused {n}")
        now[0] += 1.0
    outage.ok()
    outage.ok()
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings == [
        "the agent is unavailable: refused 0",
        "the agent is back after 30.0s (30 failed attempts)",
    ]
    assert sum(r.levelno == logging.DEBUG for r in caplog.records) == 29


def test_the_registrar_logs_a_consul_outage_twice(
    consul_agent_unstarted: ConsulAgent, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="consul_discovery.registry")
    reg = registration(consul_agent_unstarted.address, SERVICE_CHECK="tcp")
    registrar = Registrar(reg, max_backoff=0.2).start()
    try:
        time.sleep(2.0)  # several failed attempts while the agent is down
        consul_agent_unstarted.start()
        assert registrar.wait_registered(15)
    finally:
        registrar.close()
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 2, warnings
    assert "is unavailable" in warnings[0]
    assert "is back after" in warnings[1] and "failed attempts" in warnings[1]


def test_https_to_a_plain_http_agent_is_named_not_reported_as_down(
    consul_agent: ConsulAgent, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="consul_discovery.registry")
    reg = registration(f"https://{consul_agent.address}", SERVICE_CHECK="tcp")
    registrar = Registrar(reg, max_backoff=0.2).start()
    try:
        wait_until(lambda: registrar.consul_errors >= 1, 5)
    finally:
        registrar.close()
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert warnings, caplog.text
    assert (
        f"register edge-1: the agent at https://{consul_agent.address} does not speak TLS"
    ) in warnings[0], warnings
    assert "Max retries" not in caplog.text  # no raw urllib3 text


def test_a_header_the_http_library_refuses_is_logged_without_its_value(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """requests' InvalidHeader quotes the header's value; the registrar's line must not.
    (The connection refuses such a token; this client's session is changed behind its back.)"""
    caplog.set_level(logging.DEBUG)
    reg = registration("127.0.0.1:9", SERVICE_CHECK="tcp")
    client = reg.consul.py_consul()
    client.http.session.headers["X-Consul-Token"] = "LEAKME-tok\n"
    registrar = Registrar(reg, client=client, max_backoff=0.2).start()
    try:
        wait_until(lambda: registrar.consul_errors >= 2, 5)
    finally:
        registrar.close()
    client.http.session.close()
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert "a header's value has characters HTTP forbids" in warnings[0], warnings
    assert "LEAKME" not in caplog.text


def test_a_drain_during_an_outage_is_not_reported_as_the_agent_coming_back(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="consul_discovery.registry")
    reg = registration("127.0.0.1:1", SERVICE_CHECK="tcp")
    registrar = Registrar(reg, max_backoff=0.2).start()
    wait_until(lambda: registrar.consul_errors >= 2, 5)
    registrar.begin_drain()
    time.sleep(0.6)  # the register loop notices the drain and ends
    registrar.close(timeout=2)
    assert "is back after" not in caplog.text, caplog.text
