"""Tokens: the leaf needs service:write on the service, the intentions intention:read.

Against an agent with ACLs on (default deny): a token without the permission gets an
error that names it (and the policy rule that grants it), never an empty or a hanging
answer, and never shows the token; a service identity token has both.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import Iterator

import pytest

from consul_discovery.mesh import Authorizer, MeshPermissionError, ServiceIdentity
from tests.harness.acl import create_token
from tests.harness.agent import ConsulAgent
from tests.harness.connect import REPO_ROOT, connect_agent
from tests.harness.ports import free_port
from tests.mesh.conftest import FAST, connection


@pytest.fixture(scope="module")
def acl_agent() -> Iterator[ConsulAgent]:
    with connect_agent(acl=True) as agent:
        yield agent


def test_a_token_without_service_write_cannot_get_the_leaf(acl_agent: ConsulAgent) -> None:
    token = create_token(acl_agent, rules='service "web" { policy = "read" }')
    ident = ServiceIdentity("web", connection(acl_agent, token), timing=FAST).start()
    try:
        with pytest.raises(MeshPermissionError) as caught:
            ident.wait_ready(10)
    finally:
        ident.close()
    message = str(caught.value)
    assert caught.value.permission == "service:write"
    assert "lacks 'service:write' on 'web'" in message
    assert 'service "web" { policy = "write" }' in message
    assert token not in message


def test_a_token_without_intention_read_cannot_read_the_intentions(acl_agent: ConsulAgent) -> None:
    token = create_token(
        acl_agent, rules='service "web" { policy = "write"\n intentions = "deny" }'
    )
    auth = Authorizer("web", connection(acl_agent, token), timing=FAST).start()
    try:
        with pytest.raises(MeshPermissionError) as caught:
            auth.wait_ready(10)
    finally:
        auth.close()
    assert caught.value.permission == "intention:read"
    assert "lacks 'intention:read' on 'web'" in str(caught.value)
    assert 'service "web" { intentions = "read" }' in str(caught.value)
    assert token not in str(caught.value)


def test_a_service_identity_token_has_what_the_mesh_needs(acl_agent: ConsulAgent) -> None:
    token = create_token(acl_agent, services=["web"])
    conn = connection(acl_agent, token)
    with ServiceIdentity("web", conn, timing=FAST) as ident:
        assert ident.spiffe_id.service == "web"
    auth = Authorizer("web", conn, timing=FAST).start().wait_ready(10)
    try:
        # ACLs default deny and no intention: the default is deny, as the agent says.
        assert auth._snapshot is not None and auth._snapshot.default_allow is False
    finally:
        auth.close()


def test_a_gunicorn_worker_without_the_permission_stops_the_server_naming_it(
    acl_agent: ConsulAgent, tmp_path: object
) -> None:
    # A service no other test asked a leaf for: Consul 1.22.3 checks service:write when it
    # signs a leaf, and serves one its agent already caches without asking again.
    token = create_token(acl_agent, rules='service "web-unsigned" { policy = "read" }')
    code, output = _gunicorn_output(acl_agent, "web-unsigned", token)
    assert code != 0, output
    assert "lacks 'service:write' on 'web-unsigned'" in output, output
    assert token not in output


def test_a_token_without_service_write_cannot_authorize(acl_agent: ConsulAgent) -> None:
    # intention:read but no service:write: the intentions come, the authorize calls are
    # refused; before, wait_ready passed with a warning and every caller was decided
    # without the agent.
    token = create_token(
        acl_agent, rules='service "web-noauth" { policy = "read"\n intentions = "read" }'
    )
    auth = Authorizer("web-noauth", connection(acl_agent, token), timing=FAST).start()
    try:
        with pytest.raises(MeshPermissionError) as caught:
            auth.wait_ready(10)
    finally:
        auth.close()
    assert caught.value.permission == "service:write"
    assert "lacks 'service:write' on 'web-noauth'" in str(caught.value)
    assert token not in str(caught.value)


def test_a_worker_stops_without_service_write_even_when_the_agent_caches_the_leaf(
    acl_agent: ConsulAgent,
) -> None:
    # Consul 1.22.3 hands a leaf its agent caches to any token (see the README): another
    # instance's rightful token has the leaf cached; this one only reads. Before, gunicorn
    # served (registration refused, the worker up, decisions local).
    rightful = create_token(acl_agent, services=["web-cached"])
    with ServiceIdentity("web-cached", connection(acl_agent, rightful), timing=FAST):
        pass  # the agent now caches web-cached's leaf
    token = create_token(
        acl_agent, rules='service "web-cached" { policy = "read"\n intentions = "read" }'
    )
    code, output = _gunicorn_output(acl_agent, "web-cached", token)
    assert code != 0, output
    assert "worker cannot join the mesh" in output, output
    assert "lacks 'service:write' on 'web-cached'" in output, output
    assert token not in output and rightful not in output


def _gunicorn_output(agent: ConsulAgent, service: str, token: str) -> tuple[int, str]:
    """Run a mesh gunicorn of ``service`` with ``token`` until it stops (60 s at most)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SERVICE_", "CONSUL_"))}
    env.update(
        PYTHONPATH=str(REPO_ROOT), CONSUL_HTTP_ADDR=agent.address, CONSUL_HTTP_TOKEN=token,
        SERVICE_NAME=service, SERVICE_PORT=str(free_port()), SERVICE_ADDRESS="127.0.0.1",
        SERVICE_CONNECT="native", MESH_READY_TIMEOUT="10",
    )  # fmt: skip
    server = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "-c", "python:consul_discovery.mesh.gunicorn_conf",
         "tests.mesh.apps:create_app()"],
        cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        start_new_session=True,
    )  # fmt: skip
    try:
        output, _ = server.communicate(timeout=60)
    except subprocess.TimeoutExpired as exc:
        raise AssertionError(f"gunicorn kept running: {exc.output}") from None
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(server.pid, signal.SIGKILL)  # workers too, if any were left
        server.wait(10)
    return server.returncode, output
