"""The mesh's own settings (MESH_IO_TIMEOUT, MESH_READY_TIMEOUT) and the servers' options:
a bad value stops a server before it binds, with one line naming it.

Before: gunicorn bound, registered, then waited 10 s for an identity that was never
applied ("new identity ... not applied, keeping the old: MESH_IO_TIMEOUT ...") and died
with an ``IdentityNotReady`` traceback; a bad MESH_READY_TIMEOUT was a ``ValueError``
traceback in the worker; uvicorn waited 15 s and said "no Connect identity".
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from consul_discovery.mesh import MeshService
from consul_discovery.mesh.errors import MeshConfigError
from consul_discovery.mesh.settings import DEFAULT_READY_TIMEOUT, check_env, ready_timeout
from tests.harness.agent import ConsulAgent
from tests.harness.connect import REPO_ROOT, connect_agent, start_mesh_server
from tests.harness.ports import free_port


def test_ready_timeout_default_and_value() -> None:
    assert ready_timeout({}) == DEFAULT_READY_TIMEOUT == 15.0
    assert ready_timeout({"MESH_READY_TIMEOUT": " 2.5 "}) == 2.5


@pytest.mark.parametrize("setting", ["MESH_IO_TIMEOUT", "MESH_READY_TIMEOUT"])
@pytest.mark.parametrize(
    ("raw", "problem"),
    [("abc", "'abc' is not a duration (e.g. '10s', '1m30s', '500ms', or a number of seconds)"),
     ("0", "'0' is not more than 0 seconds"),
     ("-1", "'-1' is negative"),
     ("nan", "'nan' is not a finite duration"),
     ("inf", "'inf' is not a finite duration")],
)  # fmt: skip
def test_check_env_names_the_bad_setting(setting: str, raw: str, problem: str) -> None:
    with pytest.raises(MeshConfigError) as info:
        check_env({setting: raw})
    assert info.value.setting == setting
    assert str(info.value) == f"{setting}: {problem}"


def test_mesh_timeouts_take_durations_as_the_registry_settings_do() -> None:
    """One rule for every duration setting (``consul_discovery.connection.durations``):
    MESH_IO_TIMEOUT=10s was refused while SERVICE_CHECK_INTERVAL=10s was the example."""
    assert ready_timeout({"MESH_READY_TIMEOUT": "1m30s"}) == 90.0
    assert ready_timeout({"MESH_READY_TIMEOUT": "500ms"}) == 0.5


def test_mesh_service_from_env_refuses_a_bad_io_timeout_before_anything_starts() -> None:
    env = {"SERVICE_NAME": "web", "CONSUL_HTTP_ADDR": "127.0.0.1:1", "MESH_IO_TIMEOUT": "10x"}
    with pytest.raises(MeshConfigError, match="MESH_IO_TIMEOUT"):
        MeshService.from_env(env)


@pytest.fixture(scope="module")
def agent() -> Iterator[ConsulAgent]:
    with connect_agent() as running:
        yield running


def _run(agent: ConsulAgent, command: list[str], **env: str) -> tuple[int, str, float]:
    """Run a server that should refuse to start: (exit status, output, seconds)."""
    environment = {
        k: v for k, v in os.environ.items() if not k.startswith(("SERVICE_", "CONSUL_", "MESH_"))
    }
    environment.update(
        PYTHONPATH=str(REPO_ROOT), CONSUL_HTTP_ADDR=agent.address, SERVICE_ADDRESS="127.0.0.1",
        SERVICE_CONNECT="native",
    )  # fmt: skip
    environment.update(env)
    started = time.monotonic()
    server = subprocess.Popen(
        command, cwd=REPO_ROOT, env=environment, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True, start_new_session=True,
    )  # fmt: skip
    try:
        output, _ = server.communicate(timeout=60)
    except subprocess.TimeoutExpired as exc:
        raise AssertionError(f"the server kept running: {exc.output}") from None
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(server.pid, signal.SIGKILL)  # workers too, if any were left
        server.wait(10)
    return server.returncode, output, time.monotonic() - started


GUNICORN = [sys.executable, "-m", "gunicorn", "-c", "python:consul_discovery.mesh.gunicorn_conf",
            "tests.mesh.apps:create_app()"]  # fmt: skip
UVICORN = [sys.executable, "-m", "consul_discovery.mesh.uvicorn", "--factory",
           "tests.mesh.apps:create_asgi_app"]  # fmt: skip


@pytest.mark.parametrize("setting", ["MESH_IO_TIMEOUT", "MESH_READY_TIMEOUT"])
def test_gunicorn_refuses_a_bad_mesh_setting_before_it_binds(
    agent: ConsulAgent, setting: str
) -> None:
    port = free_port()
    code, output, took = _run(
        agent, GUNICORN, SERVICE_NAME="web-bad-setting", SERVICE_PORT=str(port), **{setting: "abc"}
    )
    assert code == 1, output
    assert f"mesh: bad configuration: {setting}: 'abc' is not a duration" in output
    assert "Listening at" not in output and "registered" not in output, output
    assert "Traceback" not in output, output
    assert took < 10, (took, output)


def test_uvicorn_refuses_a_bad_io_timeout_at_once(agent: ConsulAgent) -> None:
    code, output, took = _run(
        agent, [*UVICORN, "--port", str(free_port())], SERVICE_NAME="asgi-bad-setting",
        MESH_IO_TIMEOUT="abc",
    )  # fmt: skip
    assert code == 3, output
    assert "mesh: cannot serve in the mesh: MESH_IO_TIMEOUT: 'abc' is not a duration" in output
    assert took < 10, (took, output)


def test_uvicorn_reads_mesh_ready_timeout_and_refuses_a_bad_one(agent: ConsulAgent) -> None:
    code, output, _ = _run(
        agent, [*UVICORN, "--port", str(free_port())], SERVICE_NAME="asgi-bad-ready",
        MESH_READY_TIMEOUT="-1",
    )  # fmt: skip
    assert code == 3, output
    assert "MESH_READY_TIMEOUT: '-1' is negative" in output


def test_uvicorn_names_a_bad_service_port_and_a_bad_ready_timeout_option(
    agent: ConsulAgent,
) -> None:
    code, output, _ = _run(agent, UVICORN, SERVICE_NAME="asgi-bad-port", SERVICE_PORT="abc")
    assert code == 3, output
    assert "mesh: cannot serve in the mesh: SERVICE_PORT: 'abc' is not a port" in output
    assert "Traceback" not in output, output
    code, output, _ = _run(agent, [*UVICORN, "--ready-timeout", "-1"], SERVICE_NAME="asgi-bad-port")
    assert code == 2, output
    assert "argument --ready-timeout: '-1' is negative" in output


def test_uvicorn_names_an_http_protocol_it_cannot_load(agent: ConsulAgent) -> None:
    # Before: a ModuleNotFoundError traceback (e.g. --http httptools without httptools).
    code, output, _ = _run(
        agent, [*UVICORN, "--port", str(free_port()), "--http", "nosuchmod:Protocol"],
        SERVICE_NAME="asgi-bad-http",
    )  # fmt: skip
    assert code == 3, output
    assert "mesh: cannot serve in the mesh: --http: 'nosuchmod:Protocol' cannot be loaded" in output
    assert "Traceback" not in output, output


@pytest.mark.parametrize("server", ["gunicorn", "uvicorn"])
def test_a_mesh_server_without_service_connect_registers_connect_native(
    agent: ConsulAgent, tmp_path: Path, server: str
) -> None:
    # Before: registered plain, with an HTTP check that could never pass over mTLS
    # (gunicorn logged "Invalid request ... http request" at every interval) and nothing
    # in /v1/health/connect: no caller could ever reach it.
    instance = start_mesh_server(
        agent, f"web-unset-{server}", tmp_path, server=server, env={"SERVICE_CONNECT": ""}
    )
    try:
        entries = requests.get(
            f"{agent.url}/v1/health/connect/web-unset-{server}", params={"passing": "1"}, timeout=5
        ).json()
        assert [e["Service"]["ID"] for e in entries] == [instance.service_id]
        assert entries[0]["Service"]["Connect"] == {"Native": True}
    finally:
        instance.stop()


@pytest.mark.parametrize("command", [GUNICORN, UVICORN], ids=["gunicorn", "uvicorn"])
def test_a_mesh_server_refuses_service_connect_other_than_native(
    agent: ConsulAgent, command: list[str]
) -> None:
    code, output, _ = _run(
        agent, command, SERVICE_NAME="web-none", SERVICE_PORT=str(free_port()),
        SERVICE_CONNECT="none",
    )  # fmt: skip
    assert code in (1, 3), output
    assert "SERVICE_CONNECT: 'none' under a mesh server, which serves mTLS only" in output
    assert "registered" not in output and "Traceback" not in output, output
