"""Pure logic: backoff, health evaluation, the Flask /health route, non-blocking start,
the reading of a 403."""

from __future__ import annotations

import random
import time

import consul.exceptions
import pytest
from flask import Flask
from tenacity import RetryCallState

from consul_discovery.connection import acl_denial
from consul_discovery.registry import ConsulRejected, HealthChecks, Registrar, Registration, State
from consul_discovery.registry.agent_errors import agent_error
from consul_discovery.registry.backoff import CappedJitterBackoff
from consul_discovery.registry.flask import ConsulRegistry
from tests.harness.ports import free_port


def retry_state(attempt: int) -> RetryCallState:
    state = RetryCallState(None, None, (), {})
    state.attempt_number = attempt
    return state


def test_backoff_is_capped_exponential_with_equal_jitter() -> None:
    backoff = CappedJitterBackoff(initial=0.2, cap=3.0, rng=random.Random(7))
    assert [backoff.step(n) for n in (1, 2, 3, 4, 5, 6, 100)] == [0.2, 0.4, 0.8, 1.6, 3.0, 3.0, 3.0]
    for attempt in range(1, 30):
        wait = backoff(retry_state(attempt))
        step = backoff.step(attempt)
        assert step / 2 <= wait <= step <= 3.0
    # injected random source: same seed, same waits
    again = CappedJitterBackoff(initial=0.2, cap=3.0, rng=random.Random(7))
    first = CappedJitterBackoff(initial=0.2, cap=3.0, rng=random.Random(7))
    assert [again(retry_state(n)) for n in range(1, 8)] == [
        first(retry_state(n)) for n in range(1, 8)
    ]


def test_health_checks_evaluate_none_true_false_and_raise() -> None:
    checks = HealthChecks()
    checks.add("none", lambda: None)
    checks.add("true", lambda: True)
    assert checks.evaluate().passing
    checks.add("false", lambda: False)
    checks.add("boom", lambda: 1 / 0)
    report = checks.evaluate()
    assert report.status == "critical"
    assert report.checks["none"] == {"status": "passing"}
    assert report.checks["false"]["status"] == "critical"
    assert "ZeroDivisionError" in report.checks["boom"]["error"]
    assert "boom" in report.output()


def test_flask_health_route_reflects_checks() -> None:
    app = Flask(__name__)
    ext = ConsulRegistry(app, environ={})
    healthy = {"db": True}
    ext.add_check("db", lambda: healthy["db"])
    client = app.test_client()
    ok = client.get("/health")
    assert ok.status_code == 200
    assert ok.get_json() == {"status": "passing", "checks": {"db": {"status": "passing"}}}
    healthy["db"] = False
    bad = client.get("/health")
    assert bad.status_code == 503
    assert bad.get_json()["status"] == "critical"
    assert ext.registrar is None  # not serving: nothing registered


def test_flask_extension_stays_quiet_in_gunicorn_workers() -> None:
    app = Flask(__name__)
    original_run = app.run
    ConsulRegistry(app, environ={"REGISTRY_MANAGED_BY": "gunicorn"})
    assert app.run == original_run  # the master registers; the worker never will


def test_start_returns_at_once_when_consul_is_down() -> None:
    dead = f"127.0.0.1:{free_port()}"
    reg = Registration.from_env(
        {"SERVICE_NAME": "x", "SERVICE_PORT": "1", "CONSUL_HTTP_ADDR": dead}
    )
    registrar = Registrar(reg, rng=random.Random(1))
    began = time.monotonic()
    registrar.start()
    assert time.monotonic() - began < 0.1
    assert not registrar.wait_registered(0.5)
    assert registrar.state is State.REGISTERING
    registrar.close(timeout=2)
    assert registrar.state is State.STOPPED


def test_ttl_registration_needs_a_health_function() -> None:
    reg = Registration.from_env({"SERVICE_NAME": "x", "SERVICE_PORT": "1", "SERVICE_CHECK": "ttl"})
    with pytest.raises(ValueError, match="health"):
        Registrar(reg)


@pytest.mark.parametrize(
    "body",
    [
        "ACL not found",
        "Permission denied",
        "Permission denied: token with AccessorID 'a1' lacks permission 'service:write' "
        'on "users"',
    ],
)
def test_a_403_is_read_by_the_shared_mapping(body: str) -> None:
    """The registrar words a 403 as the CLIs do: ``AclDenial.reason``, one mapping."""
    error = agent_error("register users-1", consul.exceptions.ACLPermissionDenied(body))
    shared = acl_denial(body, "register users-1")
    assert isinstance(error, ConsulRejected) and error.status == 403
    assert (error.detail, error.permission) == (shared.reason, shared.permission)
