"""Connect targets through the one client core, for all three transports.

``ServiceConfig(connect=True)``: the core asks ``/v1/health/connect/<name>`` (native
instances and sidecar proxies, each with the port to dial) and dials them over mutual
TLS as the caller's identity (``Dial.ssl_context`` from ``ClientTLS.context_for``).
Against a real Connect agent, two Connect-native servers from part 1 (gunicorn and
uvicorn, guarded by intentions) and a plain service behind Consul's built-in sidecar:

- every instance kind answers, and each server saw the caller's SPIFFE ID;
- keep-alive connections are reused: one connection per instance for many calls;
- a new identity (renewal/rotation) re-dials: new pools with the new context, the old
  ones dropped, nothing fails;
- a caller whose identity is not in force yet waits for it, bounded by the deadline;
- a Connect target's pools trust the mesh roots only (no CA bundle loaded into them);
- a server whose valid mesh certificate names another service is refused in the
  handshake (no request reaches it); a closed client stops following the identity.
"""

from __future__ import annotations

import ssl
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import requests

from consul_discovery.client import AllAttemptsFailedError, NoHealthyInstanceError, ServiceConfig
from consul_discovery.client.connect import ConnectIdentityError, ConnectRequiredError
from consul_discovery.mesh import ServiceIdentity
from tests.discovery_client.conformance.conftest import Caller, Make
from tests.harness.agent import ConsulAgent
from tests.harness.connect import (
    connect_agent,
    sidecar_proxy,
    start_mesh_server,
    write_intentions,
)
from tests.mesh.conftest import FAST, connection, identity

SERVICE = "cweb"
CALLER = "capi"
CONNECT = {SERVICE: ServiceConfig(connect=True, policy="round_robin")}


@pytest.fixture(scope="module")
def agent() -> Iterator[ConsulAgent]:
    """A Connect agent whose default intention policy is deny (only capi -> cweb allowed)."""
    with connect_agent(default_intention_policy="deny") as running:
        write_intentions(running.url, SERVICE, [{"Name": CALLER, "Action": "allow"}])
        yield running


class Plain(BaseHTTPRequestHandler):
    """A plain HTTP service behind the built-in sidecar."""

    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        body = b'{"service": "cweb", "pid": 0, "caller": "sidecar"}'
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *_args: object) -> None:
        pass


@pytest.fixture(scope="module")
def instances(agent: ConsulAgent, tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    """cweb: gunicorn (gthread: keep-alive) and uvicorn Connect-native, and a plain
    server behind a sidecar."""
    log_dir = Path(tmp_path_factory.mktemp("connect-logs"))
    plain = ThreadingHTTPServer(("127.0.0.1", 0), Plain)
    threading.Thread(target=plain.serve_forever, daemon=True).start()
    started: list[Any] = []
    try:
        started.append(start_mesh_server(agent, SERVICE, log_dir, threads=4))
        started.append(start_mesh_server(agent, SERVICE, log_dir, server="uvicorn"))
        started.append(sidecar_proxy(agent, SERVICE, plain.server_address[1], log_dir))
        yield len(started)
    finally:
        for process in started:
            process.stop()
        plain.shutdown()
        plain.server_close()


@pytest.fixture(scope="module")
def caller_identity(agent: ConsulAgent) -> Iterator[ServiceIdentity]:
    """The calling service's identity (capi)."""
    with identity(agent, CALLER) as ident:
        yield ident


def _mesh_pools(caller: Caller) -> dict[tuple[str, int | None], tuple[ssl.SSLContext, int]]:
    """Each mesh pool of the caller: (host, port) -> (its context, connections it made)."""
    pools: dict[tuple[str, int | None], tuple[ssl.SSLContext, int]] = {}
    if caller.kind == "requests":
        container = caller.client.session.get_adapter("https://x/").pools
        for key in list(container.keys()):
            if key.key_ssl_context is not None:
                pool = container[key]
                pools[(key.key_host, key.key_port)] = (key.key_ssl_context, pool.num_connections)
        return pools
    inner = caller.owner.inner.pools._pools
    for (host, port, context), transport in list(inner.items()):
        if context is not None:
            pools[(host, port)] = (context, len(transport._pool.connections))
    return pools


def _call_all(caller: Caller, n: int) -> list[dict[str, Any]]:
    bodies = []
    for _ in range(n):
        answer = caller.call(SERVICE, path="/hello")
        assert answer.status == 200, answer
        bodies.append(answer.body)
    return bodies


def test_a_connect_target_reaches_native_and_sidecar_instances_over_mtls(
    make: Make, instances: int, caller_identity: ServiceIdentity
) -> None:
    caller = make(services=CONNECT, identity=caller_identity)
    bodies = _call_all(caller, 3 * instances)
    callers = {b["caller"] for b in bodies}
    # The native servers saw our SPIFFE ID; the sidecar's backend answers for itself.
    assert any(c and c.endswith(f"/svc/{CALLER}") for c in callers), callers
    assert "sidecar" in callers
    pools = _mesh_pools(caller)
    assert len(pools) == instances  # every kind dialled over TLS, one pool each
    # Keep-alive: one connection per instance for all those calls.
    assert all(made == 1 for _, made in pools.values()), pools


def test_a_new_identity_redials_new_pools_and_drops_the_old(
    make: Make, instances: int, caller_identity: ServiceIdentity
) -> None:
    caller = make(services=CONNECT, identity=caller_identity)
    _call_all(caller, instances)
    before = _mesh_pools(caller)
    generation = caller_identity.client_tls.generation
    leaf, roots = caller_identity.leaf, caller_identity.roots
    assert leaf is not None and roots is not None
    caller_identity.client_tls.update(leaf, roots)  # what a renewal or a rotation does
    assert caller_identity.client_tls.generation == generation + 1
    _call_all(caller, 2 * instances)
    after = _mesh_pools(caller)
    current = caller_identity.client_tls.context_for(SERVICE)
    assert set(after) == set(before)  # the same instances, one pool each: old ones dropped
    assert all(context is current for context, _ in after.values()), after
    assert all(before[k][0] is not current for k in before)


def test_a_caller_without_an_identity_yet_waits_for_it(
    make: Make, agent: ConsulAgent, instances: int
) -> None:
    late = ServiceIdentity(CALLER, connection(agent), timing=FAST)
    caller = make(services=CONNECT, identity=late, resolve_timeout=10.0)
    timer = threading.Timer(0.5, late.start)
    started = time.monotonic()
    timer.start()
    try:
        answer = caller.call(SERVICE, path="/late")
        assert answer.status == 200
        assert time.monotonic() - started >= 0.5
    finally:
        timer.cancel()
        late.close()


def test_a_caller_whose_identity_never_comes_fails_within_the_deadline(
    make: Make, agent: ConsulAgent, instances: int
) -> None:
    never = ServiceIdentity(CALLER, connection(agent), timing=FAST)  # never started
    caller = make(services=CONNECT, identity=never, resolve_timeout=0.5)
    started = time.monotonic()
    with pytest.raises(ConnectIdentityError, match="capi"):
        caller.call(SERVICE)
    assert time.monotonic() - started < 2.0


def test_a_plain_call_to_connect_native_instances_says_to_use_connect(
    make: Make, instances: int
) -> None:
    # Before: every attempt's TLS-only server dropped the plain request, and the call
    # failed with "all 3 attempts to 'cweb' failed: ... Connection aborted".
    caller = make(services={SERVICE: ServiceConfig(policy="round_robin")})
    started = time.monotonic()
    with pytest.raises(ConnectRequiredError) as caught:
        caller.call(SERVICE)
    message = str(caught.value)
    assert "is Connect-native (serves mTLS only)" in message, message
    assert "call 'cweb' with ServiceConfig(connect=True)" in message, message
    assert time.monotonic() - started < 2.0


def test_connect_to_a_plain_service_says_it_has_no_connect_capable_instance(
    make: Make, agent: ConsulAgent, caller_identity: ServiceIdentity
) -> None:
    # Before: "no healthy instance of 'cplain': Consul reports no passing instance", of a
    # service whose one instance was passing (plain: /v1/health/connect lists nothing).
    requests.put(
        f"{agent.url}/v1/agent/service/register",
        json={"Name": "cplain", "Address": "127.0.0.1", "Port": 9},
        timeout=5,
    ).raise_for_status()
    caller = make(
        services={"cplain": ServiceConfig(connect=True)}, identity=caller_identity,
        resolve_timeout=2.0,
    )  # fmt: skip
    with pytest.raises(NoHealthyInstanceError) as caught:
        caller.call("cplain")
    message = str(caught.value)
    assert "no passing Connect-capable instance" in message, message
    assert "call it without connect=True" in message, message


def test_mesh_pools_trust_the_mesh_roots_only(
    make: Make, instances: int, caller_identity: ServiceIdentity
) -> None:
    caller = make(services=CONNECT, identity=caller_identity)
    _call_all(caller, instances)
    mesh_roots = len(caller_identity.roots.roots)  # type: ignore[union-attr]
    for context, _ in _mesh_pools(caller).values():
        # requests' CA bundle (hundreds of roots) never reached the shared context.
        assert context.cert_store_stats()["x509_ca"] == mesh_roots


def test_a_closed_client_stops_following_the_identity(
    make: Make, agent: ConsulAgent, instances: int, caller_identity: ServiceIdentity
) -> None:
    kind = make().kind  # this test's transport
    listeners = len(caller_identity.client_tls._listeners)
    caller = Caller(kind, agent.address, services=CONNECT, identity=caller_identity)
    try:
        assert caller.call(SERVICE).status == 200
        assert len(caller_identity.client_tls._listeners) == listeners + 1
    finally:
        caller.shutdown()
    assert len(caller_identity.client_tls._listeners) == listeners
    assert caller_identity.ready  # a given identity stays its owner's


class _Impostor(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    served = 0

    def do_GET(self) -> None:
        type(self).served += 1
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, *_args: object) -> None:
        pass


@pytest.fixture(scope="module")
def impostor(agent: ConsulAgent) -> Iterator[type[_Impostor]]:
    """A server with a valid mesh certificate of *another* service (cother), registered
    as the only Connect-native instance of cfake: its SPIFFE ID does not name cfake."""
    from consul_discovery.mesh import ServerTLS

    handler = type("Impostor", (_Impostor,), {"served": 0})
    with identity(agent, "cother") as other:
        tls = ServerTLS()
        tls.update(other.leaf, other.roots)  # type: ignore[arg-type]
        server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        server.socket = tls.front_context().wrap_socket(server.socket, server_side=True)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        body = {
            "ID": "cfake-1", "Name": "cfake", "Address": "127.0.0.1",
            "Port": server.server_address[1], "Connect": {"Native": True},
        }  # fmt: skip
        requests.put(
            f"{agent.url}/v1/agent/service/register", json=body, timeout=5
        ).raise_for_status()
        try:
            yield handler
        finally:
            server.shutdown()
            server.server_close()


def test_a_server_whose_certificate_names_another_service_is_refused_in_the_handshake(
    make: Make, impostor: type[_Impostor], caller_identity: ServiceIdentity
) -> None:
    services = {"cfake": ServiceConfig(connect=True)}
    caller = make(services=services, identity=caller_identity)
    with pytest.raises(AllAttemptsFailedError) as failed:
        caller.call("cfake")
    causes = " ".join(
        f"{err!r} {err.__cause__!r} {err.__context__!r}" for _, err in failed.value.attempts
    )
    assert "mesh server identity mismatch" in causes, causes
    assert "/svc/cfake, got " in causes and causes.count("/svc/cother") >= 1, causes
    assert impostor.served == 0  # no request ever reached it
