"""``python -m consul_discovery.mesh intentions``: list, allow, deny, delete, and refusals.

Against an ACL agent: the policy the secure profile gives its mesh admin token
(``services/cluster/secure.py``: intentions write on every service) may do everything;
a service's own token may not write, and the CLI says why without showing the token;
an intention the CLI writes is what the Authorizer then enforces.
"""

from __future__ import annotations

import subprocess
import sys
import uuid
from collections.abc import Iterator

import pytest

from consul_discovery.mesh import Authorizer, RequestView, SpiffeId
from consul_discovery.mesh.intentions_cli import list_intentions, main
from tests.harness.acl import MANAGEMENT_TOKEN, create_token
from tests.harness.agent import ConsulAgent
from tests.harness.connect import connect_agent
from tests.mesh.conftest import FAST, connection

MESH_ADMIN_RULES = 'service_prefix "" { policy = "read" intentions = "write" }'


@pytest.fixture(scope="module")
def acl_agent() -> Iterator[ConsulAgent]:
    """An agent with ACLs (default deny) and Connect."""
    with connect_agent(acl=True) as running:
        yield running


def test_allow_deny_list_delete_with_the_mesh_admin_token(
    acl_agent: ConsulAgent, capsys: pytest.CaptureFixture[str]
) -> None:
    admin = connection(acl_agent, create_token(acl_agent, rules=MESH_ADMIN_RULES))
    assert main(["allow", "gateway", "orders"], admin) == 0
    assert main(["deny", "users", "orders"], admin) == 0
    assert main(["list", "orders"], admin) == 0
    out = capsys.readouterr().out
    assert "gateway" in out and "allow" in out and "users" in out and "deny" in out
    rows = {(r["SourceName"], r["Action"]) for r in list_intentions(admin, "orders")}
    assert rows == {("gateway", "allow"), ("users", "deny")}
    # What the CLI wrote is what the destination's authorizer enforces.
    orders = connection(acl_agent, create_token(acl_agent, services=["orders"]))
    authz = Authorizer("orders", orders, timing=FAST).start().wait_ready()
    try:
        gateway = SpiffeId("x.consul", "default", "dc1", "gateway")
        users = SpiffeId("x.consul", "default", "dc1", "users")
        assert authz.decide(gateway, RequestView("GET", "/")).allowed
        assert not authz.decide(users, RequestView("GET", "/")).allowed
    finally:
        authz.close()
    assert main(["deny", "gateway", "orders"], admin) == 0  # replaces the pair's action
    assert main(["delete", "users", "orders"], admin) == 0
    rows = {(r["SourceName"], r["Action"]) for r in list_intentions(admin, "orders")}
    assert rows == {("gateway", "deny")}
    assert main(["delete", "gateway", "orders"], admin) == 0


def test_a_token_without_intention_write_is_refused_naming_why(
    acl_agent: ConsulAgent, capsys: pytest.CaptureFixture[str]
) -> None:
    token = create_token(acl_agent, services=["orders"])
    assert main(["allow", "gateway", "orders"], connection(acl_agent, token)) == 1
    err = capsys.readouterr().err
    assert "403" in err and "intention:write" in err, err
    assert token not in err and MANAGEMENT_TOKEN not in err


def test_an_unknown_token_is_named_as_unknown_not_as_lacking_a_permission(
    acl_agent: ConsulAgent, capsys: pytest.CaptureFixture[str]
) -> None:
    unknown = str(uuid.uuid4())
    assert main(["list", "orders"], connection(acl_agent, unknown)) == 1
    err = capsys.readouterr().err
    assert "(403): it does not know the ACL token (ACL not found; check" in err, err
    assert "needs" not in err and unknown not in err


def test_bad_names_and_usage_are_clear_errors(
    acl_agent: ConsulAgent, capsys: pytest.CaptureFixture[str]
) -> None:
    admin = connection(acl_agent, create_token(acl_agent, rules=MESH_ADMIN_RULES))
    assert main(["allow", "a/b", "orders"], admin) == 1
    assert "source 'a/b' is not a service name" in capsys.readouterr().err
    usage = subprocess.run(
        [sys.executable, "-m", "consul_discovery.mesh"], capture_output=True, text=True, timeout=30
    )
    assert usage.returncode == 2 and "intentions list|allow|deny|delete" in usage.stderr
