"""The server-neutral lifecycle on its own: checks, drain, and who may close."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time

import pytest

from consul_discovery.registry import RegistryConfigError, State
from consul_discovery.registry.lifecycle import (
    MANAGED_BY_ENV,
    Lifecycle,
    Listener,
    Role,
    serving_role,
    startup_error,
)
from tests.harness.ports import free_port
from tests.registry.conftest import instance_status, wait_until

BASE = {"SERVICE_NAME": "life", "SERVICE_ADDRESS": "127.0.0.1", "SERVICE_ID": "life-1"}


def test_check_stands_in_for_a_port_not_bound_yet() -> None:
    lifecycle = Lifecycle(environ={**BASE, "CONSUL_HTTP_ADDR": "127.0.0.1:1"})
    assert lifecycle.check(Listener("127.0.0.1", (0,), "uvicorn --port")).port == 1
    assert lifecycle.check(Listener("127.0.0.1", (8000,), "uvicorn --port")).port == 8000


def test_the_health_route_is_where_consuls_check_goes_and_is_checked_first() -> None:
    """Both adapters take the route's path from ``health_route`` (one check, before the
    framework sees it) and register the HTTP check on that same path."""
    from flask import Flask

    from consul_discovery.registry.asgi import ConsulRegistry as AsgiRegistry
    from consul_discovery.registry.flask import ConsulRegistry as FlaskRegistry

    env = {**BASE, "SERVICE_PORT": "8001", "CONSUL_HTTP_ADDR": "127.0.0.1:1"}
    asgi = AsgiRegistry(environ=env, health_path="/hz")
    assert asgi.health_path == "/hz"
    assert asgi._lifecycle.check().check.path == "/hz"
    app = Flask(__name__)
    FlaskRegistry(app, environ={**env, "SERVICE_HEALTH_PATH": "/ready"})
    assert {r.rule for r in app.url_map.iter_rules()} >= {"/ready"}
    for make in (AsgiRegistry, lambda **kw: FlaskRegistry(Flask(__name__), **kw)):
        with pytest.raises(SystemExit) as caught:
            make(environ={**env, "SERVICE_HEALTH_PATH": "health"})
        assert caught.value.code == startup_error(
            RegistryConfigError("SERVICE_HEALTH_PATH", "'health' must start with '/'")
        )


@pytest.mark.parametrize(
    ("env", "listener", "message"),
    [
        (
            {"SERVICE_PORT": "8001"},
            Listener("127.0.0.1", (8002,), "uvicorn --port"),
            "SERVICE_PORT: 8001, but uvicorn --port listens on 8002",
        ),
        (
            {"SERVICE_PORT": "8001"},
            Listener("127.0.0.1", (0,), "gunicorn -b"),
            "SERVICE_PORT: 8001, but gunicorn -b listens on a free port (0)",
        ),
        (
            {"SERVICE_PORT": "8001", "SERVICE_PORT_FORWARDED": "perhaps"},
            Listener("127.0.0.1", (8002,), "uvicorn --port"),
            "SERVICE_PORT_FORWARDED: 'perhaps' is not true or false",
        ),
    ],
)
def test_check_refuses_what_cannot_work(
    env: dict[str, str], listener: Listener, message: str
) -> None:
    lifecycle = Lifecycle(environ={**BASE, **env})
    with pytest.raises(RegistryConfigError) as caught:
        lifecycle.check(listener)
    assert str(caught.value).startswith(message), str(caught.value)
    assert startup_error(caught.value) == f"registry: bad configuration: {caught.value}"


def test_a_port_keyword_other_than_the_listeners_is_named_as_given() -> None:
    lifecycle = Lifecycle(environ=BASE, overrides={"port": 8001})
    with pytest.raises(RegistryConfigError) as caught:
        lifecycle.check(Listener("127.0.0.1", (8002,), "uvicorn --port"))
    text = str(caught.value)
    assert text.startswith("port: 8001, but uvicorn --port listens on 8002"), text
    assert "Drop port=" in text and "Unset SERVICE_PORT" not in text


def test_several_listeners_agree_when_one_is_the_service_port() -> None:
    env = {**BASE, "SERVICE_PORT": "8002", "SERVICE_PORT_FORWARDED": ""}
    assert Lifecycle(environ=env).check(Listener("127.0.0.1", (8001, 8002), "gunicorn -b"))
    forwarded = {**env, "SERVICE_PORT_FORWARDED": "true"}
    reg = Lifecycle(environ=forwarded).check(Listener("127.0.0.1", (9000,), "uvicorn --port"))
    assert reg.port == 8002


def test_serving_role_from_the_hooks_mark() -> None:
    assert serving_role({MANAGED_BY_ENV: "gunicorn"}) is Role.GUNICORN


def test_drain_hands_over_at_once_before_start() -> None:
    handed: list[str] = []
    Lifecycle(environ=BASE).drain_then(lambda: handed.append("stop"))
    assert handed == ["stop"]


def test_an_instance_never_registered_is_not_drained() -> None:
    """Nothing can be routing to it (the agent was never reached): the server's stop
    comes at once, not after SERVICE_DRAIN_SECONDS."""
    env = {**BASE, "SERVICE_PORT": "9", "CONSUL_HTTP_ADDR": f"127.0.0.1:{free_port()}"}
    lifecycle = Lifecycle(environ={**env, "SERVICE_DRAIN_SECONDS": "30"})
    registrar = lifecycle.start()
    handed: list[float] = []
    began = time.monotonic()
    try:
        lifecycle.drain_then(lambda: handed.append(time.monotonic()))
        assert registrar.state is State.DRAINING  # it stopped trying to register
    finally:
        lifecycle.close()
    assert len(handed) == 1 and handed[0] - began < 1, handed


def test_a_second_signal_cuts_the_drain_short(consul_agent) -> None:
    env = {**BASE, "SERVICE_PORT": "9", "SERVICE_CHECK": "tcp", "SERVICE_DRAIN_SECONDS": "30"}
    lifecycle = Lifecycle(environ={**env, "CONSUL_HTTP_ADDR": consul_agent.address})
    registrar = lifecycle.start()
    assert registrar.wait_registered(5)
    cut = threading.Event()
    ticks: list[float] = []
    handed: list[float] = []
    threading.Timer(0.3, cut.set).start()
    began = time.monotonic()
    try:
        lifecycle.drain_then(
            lambda: handed.append(time.monotonic()), cut_short=cut, tick=lambda: ticks.append(1)
        )
    finally:
        lifecycle.close()
    assert registrar.state is State.STOPPED
    assert len(handed) == 1 and handed[0] - began < 2, handed
    assert ticks, "the server's tick never ran during the drain"


def test_a_forked_child_never_deregisters_its_parents_instance(consul_agent, consul_client) -> None:
    env = {**BASE, "SERVICE_PORT": "9", "SERVICE_CHECK": "tcp"}
    lifecycle = Lifecycle(environ={**env, "CONSUL_HTTP_ADDR": consul_agent.address})
    registrar = lifecycle.start()
    try:
        assert registrar.wait_registered(5)
        pid = os.fork()
        if pid == 0:  # a gunicorn worker exiting runs the master's atexit handlers
            code = 0 if lifecycle.registrar is None else 3
            lifecycle.close()
            os._exit(code)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        time.sleep(0.5)
        assert instance_status(consul_client, "life", "life-1") is not None
        assert lifecycle.registrar is registrar and registrar.state is State.REGISTERED
    finally:
        lifecycle.close()
    wait_until(lambda: instance_status(consul_client, "life", "life-1") is None, 5)


def test_the_asgi_adapter_imports_no_flask() -> None:
    code = (
        "import sys, consul_discovery.registry.asgi, consul_discovery.registry.lifecycle, "
        "consul_discovery.registry.gunicorn_conf; "
        "print(sorted(m for m in sys.modules if m == 'flask' or m.startswith('flask.')))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert result.stdout.strip() == "[]", result.stdout
