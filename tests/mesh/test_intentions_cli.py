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
import requests

from consul_discovery.connection import ConsulConnection
from consul_discovery.mesh import Authorizer, RequestView, SpiffeId
from consul_discovery.mesh.intentions_cli import list_intentions, main
from tests.harness.acl import MANAGEMENT_TOKEN, create_token
from tests.harness.agent import ConsulAgent
from tests.harness.connect import connect_agent
from tests.harness.ports import free_port
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


def test_deleting_a_pair_with_no_intention_says_nothing_was_deleted(
    acl_agent: ConsulAgent, capsys: pytest.CaptureFixture[str]
) -> None:
    # Consul's DELETE answers 200 for a pair it never had: before, "deleted nobody -> orders".
    admin = connection(acl_agent, create_token(acl_agent, rules=MESH_ADMIN_RULES))
    assert main(["delete", "nobody", "orders"], admin) == 1
    captured = capsys.readouterr()
    assert "error: no intention nobody -> orders: nothing deleted" in captured.err
    assert "deleted" not in captured.out


def test_a_name_consul_knows_no_service_by_is_written_with_a_warning(
    acl_agent: ConsulAgent, capsys: pytest.CaptureFixture[str]
) -> None:
    admin = connection(acl_agent, create_token(acl_agent, rules=MESH_ADMIN_RULES))
    register = requests.put(
        f"{acl_agent.url}/v1/agent/service/register",
        headers={"X-Consul-Token": MANAGEMENT_TOKEN},
        json={"Name": "known-dest", "Port": 1},
        timeout=5,
    )
    register.raise_for_status()
    assert main(["allow", "known-dest", "known-dest"], admin) == 0
    assert "warning" not in capsys.readouterr().err
    assert main(["allow", "gatewya", "known-dest"], admin) == 0  # a typo of the source
    err = capsys.readouterr().err
    assert "warning: Consul knows no service 'gatewya'" in err, err
    assert "known-dest" not in err
    assert main(["allow", "*", "ordres"], admin) == 0  # '*' is never unknown
    err = capsys.readouterr().err
    assert "'ordres'" in err and "'*'" not in err, err
    for source, destination in (("known-dest", "known-dest"), ("gatewya", "known-dest"),
                                ("*", "ordres")):  # fmt: skip
        assert main(["delete", source, destination], admin) == 0


def test_an_empty_list_under_acls_says_the_token_may_not_see_them(
    acl_agent: ConsulAgent, capsys: pytest.CaptureFixture[str]
) -> None:
    admin = connection(acl_agent, create_token(acl_agent, rules=MESH_ADMIN_RULES))
    assert main(["allow", "gateway", "hidden"], admin) == 0
    capsys.readouterr()
    try:
        # A service's own token may read no intention of "hidden": Consul lists nothing.
        own = connection(acl_agent, create_token(acl_agent, services=["other"]))
        assert main(["list"], own) == 0
        captured = capsys.readouterr()
        assert "Consul lists only what the token may read" in captured.err, captured
        assert "intention:read" in captured.err
    finally:
        assert main(["delete", "gateway", "hidden"], admin) == 0


@pytest.mark.parametrize("name", ["a b", "x*y", " a"])
def test_a_name_with_space_or_a_partial_wildcard_is_refused_locally(
    acl_agent: ConsulAgent, capsys: pytest.CaptureFixture[str], name: str
) -> None:
    admin = connection(acl_agent, create_token(acl_agent, rules=MESH_ADMIN_RULES))
    assert main(["allow", name, "orders"], admin) == 1
    assert f"source {name!r} is not a service name (or '*')" in capsys.readouterr().err


def test_an_unreachable_consul_is_named_by_its_address(
    capsys: pytest.CaptureFixture[str],
) -> None:
    port = free_port()  # nothing listens there
    conn = ConsulConnection.from_env({}, address=f"127.0.0.1:{port}")
    assert main(["list"], conn) == 1
    assert f"error: Consul at 127.0.0.1:{port} unreachable: ConnectionError" in (
        capsys.readouterr().err
    )


def test_help_is_not_a_usage_error() -> None:
    shown = subprocess.run(
        [sys.executable, "-m", "consul_discovery.mesh", "--help"],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert shown.returncode == 0 and "intentions list|allow|deny|delete" in shown.stdout
