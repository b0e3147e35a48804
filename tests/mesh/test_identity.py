"""A service's Connect identity from its own agent (Consul 1.22.3, the pinned binary).

The agent endpoints /v1/agent/connect/ca/leaf/<service> and /v1/agent/connect/ca/roots
are deprecated since Consul 1.16 in favour of proxies; these tests show 1.22.3 still
serves both, blocking queries included, and that a CA rotation reaches the identity and
its TLS contexts without a restart.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import pytest
import requests

from consul_discovery.connection.exchange import Response
from consul_discovery.connection.resource import Poll
from consul_discovery.connection.sending import send_with_session
from consul_discovery.mesh import ServiceIdentity
from consul_discovery.mesh.consul_api import LeafResource, RootsResource
from tests.harness.agent import ConsulAgent
from tests.mesh.conftest import FAST, active_root, connection, identity, rotate_ca


def _wait_for(predicate: object, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():  # type: ignore[operator]
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.02)


def _blocking_read(agent: ConsulAgent, resource: LeafResource | RootsResource) -> tuple[float, int]:
    conn = connection(agent)
    with conn.session() as session:
        first = send_with_session(
            session, conn.base_url, 3.0, resource.request(Poll(0, 1.0, False))
        )
        index = first.index
        assert first.status == 200 and index and index > 0
        started = time.monotonic()
        blocking = resource.request(Poll(index, 1.0, True))
        again: Response = send_with_session(session, conn.base_url, 3.0, blocking)
        assert again.status == 200
        return time.monotonic() - started, index


@pytest.mark.parametrize("resource", [LeafResource("web"), RootsResource()], ids=["leaf", "roots"])
def test_consul_1_22_still_serves_the_agent_endpoints_with_blocking_queries(
    agent: ConsulAgent, resource: LeafResource | RootsResource
) -> None:
    version = requests.get(f"{agent.url}/v1/agent/self", timeout=5).json()["Config"]["Version"]
    assert version == "1.22.3"
    waited, _ = _blocking_read(agent, resource)
    assert 0.9 <= waited < 3.0  # held for the whole wait: nothing changed, it blocked


def test_the_identity_names_the_service_and_its_contexts_load(agent: ConsulAgent) -> None:
    with identity(agent, "web") as ident:
        assert ident.ready
        leaf, roots = ident.leaf, ident.roots
        assert leaf is not None and roots is not None
        assert leaf.service == "web" and ident.spiffe_id.service == "web"
        assert ident.spiffe_id.trust_domain == roots.trust_domain
        assert ident.server_tls.context().verify_mode.name == "CERT_REQUIRED"
        client = ident.client_tls.context_for("orders")
        assert client.check_hostname is False
        assert client.sslsocket_class.mesh_expected.service == "orders"  # type: ignore[attr-defined]
        assert len(client.get_ca_certs()) == len(roots.roots)  # the mesh roots, nothing else


def test_a_ca_rotation_reaches_the_identity_without_a_restart(
    agent: ConsulAgent, tmp_path: Path
) -> None:
    ident = ServiceIdentity("web", connection(agent), timing=FAST, key_dir=str(tmp_path))
    changes: list[tuple[str, int]] = []
    ident.subscribe(lambda leaf, roots: changes.append((leaf.serial, len(roots.roots))))
    with ident.start().wait_ready():
        before_leaf, before_root = ident.leaf, active_root(agent)
        server_generation, client_generation = (
            ident.server_tls.generation,
            ident.client_tls.generation,
        )
        old_context = ident.server_tls.context()
        rotate_ca(agent)
        _wait_for(lambda: ident.roots and ident.roots.active_root_id != before_root, 10)
        # The agent renews a leaf after a rotation at a random moment within 30 s
        # (caChangeJitterWindow, spreading the servers' signing load); until then the old
        # leaf stays valid: its root is still among the roots. A signing request the
        # server rate-limits is retried at a random moment of the *next* 30 s window
        # (agent/leafcert/generate.go), so two windows and some slack.
        _wait_for(lambda: ident.leaf and ident.leaf.serial != before_leaf.serial, 90)
        leaf, roots = ident.leaf, ident.roots
        assert leaf is not None
        assert roots is not None and len(roots.roots) == 2  # the old root stays trusted
        assert ident.server_tls.generation > server_generation
        assert ident.client_tls.generation > client_generation
        assert ident.server_tls.context() is not old_context
        assert "BEGIN CERTIFICATE" in leaf.cert_pem and leaf.cert_pem.count("BEGIN") == 2
    assert list(tmp_path.iterdir()) == []  # every key file came and went


def test_the_private_key_never_reaches_a_log_or_a_repr(
    agent: ConsulAgent, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    with identity(agent, "keyholder") as ident:
        leaf = ident.leaf
        assert leaf is not None
        secret = leaf.private_key.reveal()
        body = secret.split("-----")[2].strip()[:40]  # the base64 of the key itself
        texts = [repr(ident), repr(leaf), str(leaf), repr(ident.roots), caplog.text]
        texts += [str(record.args) for record in caplog.records]
        for text in texts:
            assert body not in text and "PRIVATE KEY" not in text


def test_the_identity_in_force_is_kept_while_the_agent_is_away(agent: ConsulAgent) -> None:
    with identity(agent, "steady") as ident:
        leaf, context = ident.leaf, ident.server_tls.context()
        agent.stop()
        try:
            time.sleep(1.0)
            assert ident.leaf is leaf and ident.server_tls.context() is context
            assert ident.ready
        finally:
            agent.start()
