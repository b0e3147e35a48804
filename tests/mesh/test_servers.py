"""gunicorn (sync, gthread) and uvicorn serve mTLS with the leaf; intentions come first.

Each server kind runs one Connect-native instance of tests.mesh.apps against an agent
whose default intention policy is deny (production's), registered with a TTL check that
its own mTLS self-probe (gunicorn master) or in-process checks (uvicorn) feed.
"""

from __future__ import annotations

import contextlib
import json
import re
import socket
import ssl
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from consul_discovery.mesh import ServiceIdentity
from tests.harness.agent import ConsulAgent
from tests.harness.connect import MeshServer, set_protocol, start_mesh_server, write_intentions
from tests.mesh.conftest import identity, mesh_session

KINDS = {"sync": ("gunicorn", 1), "gthread": ("gunicorn", 4), "uvicorn": ("uvicorn", 1)}


@pytest.fixture(scope="module")
def log_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("mesh-servers")


@pytest.fixture(scope="module", params=list(KINDS))
def server(
    request: pytest.FixtureRequest, deny_agent: ConsulAgent, log_dir: Path
) -> Iterator[MeshServer]:
    kind, threads = KINDS[request.param]
    service = f"web-{request.param}"
    set_protocol(deny_agent.url, service, "http")
    write_intentions(deny_agent.url, service, [{"Name": "api", "Action": "allow"}])
    instance = start_mesh_server(deny_agent, service, log_dir, server=kind, threads=threads)
    try:
        yield instance
    finally:
        instance.stop()


@pytest.fixture(scope="module")
def api(deny_agent: ConsulAgent) -> Iterator[ServiceIdentity]:
    with identity(deny_agent, "api") as ident:
        yield ident


def _url(server: MeshServer, path: str = "/hello") -> str:
    return f"https://127.0.0.1:{server.port}{path}"


def test_an_allowed_caller_reaches_the_app_with_its_identity(
    server: MeshServer, api: ServiceIdentity
) -> None:
    session = mesh_session(api, server.service)
    for _ in range(3):  # kept-alive or not, each request is authorized
        answer = session.get(_url(server), timeout=5)
        assert answer.status_code == 200, answer.text
        assert answer.json()["caller"] == api.spiffe_id.uri
        assert answer.json()["service"] == server.service


def test_without_a_client_certificate_the_tls_handshake_is_refused(
    server: MeshServer, api: ServiceIdentity
) -> None:
    session = mesh_session(api, server.service)
    served = session.get(_url(server), timeout=5).json()["served"]
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    with (
        socket.create_connection(("127.0.0.1", server.port), timeout=5) as raw,
        pytest.raises((ssl.SSLError, ConnectionError)),
        context.wrap_socket(raw) as tls,
    ):
        # TLS 1.3: the server checks our (missing) certificate after its Finished, so the
        # refusal arrives as an alert on the first read.
        tls.sendall(b"GET /hello HTTP/1.1\r\nHost: x\r\n\r\n")
        if not tls.recv(100):
            raise ConnectionError("closed without an answer")
    # Nothing reached the app: the next request is the one after ours.
    assert session.get(_url(server), timeout=5).json()["served"] == served + 1


def test_an_answer_comes_in_one_tls_record(server: MeshServer, api: ServiceIdentity) -> None:
    """The head and the body of a small answer are one TLS record (mesh/one_record.py):
    once both are surely in, a single read (Python's ssl reads one record at most) has
    the whole answer. gunicorn and uvicorn would otherwise write them apart."""
    context = api.client_tls.context_for(server.service)
    with contextlib.ExitStack() as connections:
        tls: ssl.SSLSocket | None = None
        for path in ("/hello", "/again"):  # a connection's first answer, and a kept-alive one
            if tls is None:  # gunicorn's sync worker closes after each answer
                raw = connections.enter_context(
                    socket.create_connection(("127.0.0.1", server.port), timeout=5)
                )
                tls = connections.enter_context(
                    context.wrap_socket(raw, server_hostname="127.0.0.1")
                )
            tls.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
            time.sleep(0.3)
            head, _, body = tls.recv(65536).partition(b"\r\n\r\n")
            length = re.search(rb"(?im)^content-length: *(\d+)", head)
            assert head.startswith(b"HTTP/1.1 200") and length is not None, head
            assert len(body) == int(length.group(1)), (head, body)
            assert json.loads(body)["path"] == path
            if re.search(rb"(?im)^connection: *close", head):
                tls = None


def test_plain_http_gets_no_answer(server: MeshServer) -> None:
    with pytest.raises(requests.ConnectionError):
        requests.get(f"http://127.0.0.1:{server.port}/hello", timeout=5)


def test_another_services_valid_certificate_without_an_intention_gets_403(
    server: MeshServer, deny_agent: ConsulAgent
) -> None:
    with identity(deny_agent, "intruder") as intruder:
        session = mesh_session(intruder, server.service)
        for _ in range(3):
            answer = session.get(_url(server), timeout=5)
            assert answer.status_code == 403
            body = answer.json()
            assert body["caller"] == "intruder" and body["error"] == "forbidden"
            assert answer.headers["Content-Type"] == "application/json"
    time.sleep(0.3)
    assert server.log().count(f"denied intruder -> {server.service}") == 1  # once per caller


def test_l7_permissions_decide_each_request(server: MeshServer, deny_agent: ConsulAgent) -> None:
    write_intentions(
        deny_agent.url,
        server.service,
        [
            {"Name": "api", "Action": "allow"},
            {"Name": "reader", "Permissions": [
                {"Action": "deny", "HTTP": {"PathPrefix": "/public/secret"}},
                {"Action": "allow", "HTTP": {"PathPrefix": "/public", "Methods": ["GET"]}},
                {"Action": "allow", "HTTP": {"PathExact": "/team",
                                             "Header": [{"Name": "X-Team", "Exact": "blue"}]}},
            ]},
        ],
    )  # fmt: skip
    with identity(deny_agent, "reader") as reader:
        session = mesh_session(reader, server.service)
        expectations = [
            ("GET", "/public/page", {}, 200),
            ("POST", "/public/page", {}, 403),  # no permission matches: default deny
            ("GET", "/public/secret/x", {}, 403),  # the first match is terminal
            ("GET", "/private", {}, 403),
            ("GET", "/team", {"X-Team": "blue"}, 200),
            ("GET", "/team", {"X-Team": "red"}, 403),
        ]
        deadline = time.monotonic() + 5
        while session.get(_url(server, "/public/page"), timeout=5).status_code != 200:
            assert time.monotonic() < deadline, "the L7 intention never took effect"
            time.sleep(0.05)
        for method, path, headers, status in expectations:
            answer = session.request(method, _url(server, path), headers=headers, timeout=5)
            assert answer.status_code == status, (method, path, headers, answer.text)


def test_consul_sees_a_connect_native_instance_passing_on_a_ttl_check(
    server: MeshServer, deny_agent: ConsulAgent
) -> None:
    entries = requests.get(
        f"{deny_agent.url}/v1/health/connect/{server.service}", params={"passing": "1"}, timeout=5
    ).json()
    assert [e["Service"]["ID"] for e in entries] == [server.service_id]
    assert entries[0]["Service"]["Connect"]["Native"] is True
    checks = [c for c in entries[0]["Checks"] if c["ServiceID"] == server.service_id]
    assert [c["Type"] for c in checks] == ["ttl"]  # no HTTP check: no other path to the app
    definition = requests.get(
        f"{deny_agent.url}/v1/agent/service/{server.service_id}", timeout=5
    ).json()
    assert json.dumps(definition).count(str(server.port)) >= 1
    assert "http://" not in json.dumps(checks)


def _stalled_handshake(port: int) -> socket.socket:
    """A connection that sends a ClientHello, then nothing (a peer gone silent)."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = context.wrap_bio(incoming, outgoing)
    with pytest.raises(ssl.SSLWantReadError):
        tls.do_handshake()
    raw = socket.create_connection(("127.0.0.1", port), timeout=5)
    raw.sendall(outgoing.read())
    return raw


@pytest.mark.parametrize("kind", ["sync", "gthread"])
def test_silent_peers_cannot_pin_the_servers_threads(
    kind: str, deny_agent: ConsulAgent, log_dir: Path, api: ServiceIdentity
) -> None:
    """gunicorn serves TLS on blocking sockets: without MESH_IO_TIMEOUT a peer that sends a
    ClientHello and then nothing holds a thread (or a sync worker) for good."""
    server_kind, threads = KINDS[kind]
    service = f"stall-{kind}"
    write_intentions(deny_agent.url, service, [{"Name": "api", "Action": "allow"}])
    instance = start_mesh_server(deny_agent, service, log_dir, server=server_kind,
                                 threads=threads, env={"MESH_IO_TIMEOUT": "1.5"})  # fmt: skip
    try:
        session = mesh_session(api, service)
        url = f"https://127.0.0.1:{instance.port}/hello"
        assert session.get(url, timeout=5).status_code == 200
        session.close()  # its kept-alive connection would be served first
        stalled = [_stalled_handshake(instance.port) for _ in range(threads)]
        time.sleep(0.3)  # every thread took a stalled connection
        started = time.monotonic()
        answer = mesh_session(api, service).get(url, timeout=8)
        waited = time.monotonic() - started
        assert answer.status_code == 200
        assert waited < 5, f"served only after {waited:.1f}s"
        for raw in stalled:  # each was dropped by the server
            raw.settimeout(3)
            try:
                leftover = raw.recv(65536)
                while leftover:
                    leftover = raw.recv(65536)
            except ConnectionResetError:
                pass
            raw.close()
    finally:
        instance.stop()
