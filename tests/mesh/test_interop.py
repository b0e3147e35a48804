"""Interoperability with software no one here wrote: Consul's built-in proxy.

``consul connect proxy`` is the one mesh peer available here (Envoy cannot be
installed). (a) A plain HTTP service that knows nothing of Connect sits behind a
built-in sidecar; our Connect-native client code (the mesh's client TLS through
requests, httpx and httpx async) calls it. (b) A plain HTTP client goes through a
built-in proxy's upstream listener to our Connect-native services (gunicorn, uvicorn).
(c) Intentions decide both directions exactly as they decide our own calls, and as the
agent's authorize endpoint says.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
import requests

from consul_discovery.mesh import ServiceIdentity
from tests.harness.agent import ConsulAgent
from tests.harness.connect import (
    BuiltinProxy,
    MeshServer,
    sidecar_proxy,
    start_mesh_server,
    upstream_proxy,
    write_intentions,
)
from tests.mesh.conftest import identity, mesh_session


class PlainService(BaseHTTPRequestHandler):
    """Knows nothing of Connect: answers every GET with its path, over plain HTTP."""

    def do_GET(self) -> None:
        body = json.dumps({"plain": True, "path": self.path}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *_args: object) -> None:
        pass


@pytest.fixture(scope="module")
def log_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("interop")


@pytest.fixture(scope="module")
def sidecar(deny_agent: ConsulAgent, log_dir: Path) -> Iterator[BuiltinProxy]:
    """The plain service "legacy" behind a built-in sidecar proxy (registered)."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), PlainService)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    proxy = sidecar_proxy(deny_agent, "legacy", server.server_address[1], log_dir)
    try:
        yield proxy
    finally:
        proxy.stop()
        server.shutdown()
        server.server_close()


@pytest.fixture(scope="module", params=["gunicorn", "uvicorn"])
def native(
    request: pytest.FixtureRequest, deny_agent: ConsulAgent, log_dir: Path
) -> Iterator[MeshServer]:
    """Our Connect-native service "web-<server>"."""
    service = f"web-{request.param}"
    instance = start_mesh_server(deny_agent, service, log_dir, server=request.param, threads=4)
    try:
        yield instance
    finally:
        instance.stop()


@pytest.fixture(scope="module")
def upstream(deny_agent: ConsulAgent, native: MeshServer, log_dir: Path) -> Iterator[BuiltinProxy]:
    """A built-in proxy for the plain client "legacy-client", upstream: our native service."""
    proxy = upstream_proxy(deny_agent, "legacy-client", native.service, log_dir)
    try:
        yield proxy
    finally:
        proxy.stop()


@pytest.fixture(scope="module")
def api(deny_agent: ConsulAgent) -> Iterator[ServiceIdentity]:
    with identity(deny_agent, "api") as ident:
        yield ident


def _connect_address(agent: ConsulAgent, service: str) -> str:
    """Where Consul says the Connect-capable instance of ``service`` listens."""
    entries = requests.get(
        f"{agent.url}/v1/health/connect/{service}", params={"passing": "1"}, timeout=5
    ).json()
    assert len(entries) == 1, entries
    svc = entries[0]["Service"]
    return f"{svc['Address'] or '127.0.0.1'}:{svc['Port']}"


def _agent_allows(agent: ConsulAgent, source: ServiceIdentity | str, target: str) -> bool:
    uri = source.spiffe_id.uri if isinstance(source, ServiceIdentity) else source
    return bool(
        requests.post(
            f"{agent.url}/v1/agent/connect/authorize",
            json={"Target": target, "ClientCertURI": uri},
            timeout=5,
        ).json()["Authorized"]
    )


def test_a_our_client_calls_a_plain_service_behind_the_builtin_sidecar(
    deny_agent: ConsulAgent, sidecar: BuiltinProxy, api: ServiceIdentity
) -> None:
    write_intentions(deny_agent.url, "legacy", [{"Name": "api", "Action": "allow"}])
    address = _connect_address(deny_agent, "legacy")  # the sidecar, as Consul lists it
    assert address.endswith(f":{sidecar.port}")
    url = f"https://{address}/from-mesh"
    _eventually(lambda: mesh_session(api, "legacy").get(url, timeout=5).status_code == 200)

    assert mesh_session(api, "legacy").get(url, timeout=5).json() == {
        "plain": True,
        "path": "/from-mesh",
    }
    context = api.client_tls.context_for("legacy")
    with httpx.Client(verify=context, trust_env=False) as client:
        assert client.get(url).json()["path"] == "/from-mesh"

    async def call() -> Any:
        async with httpx.AsyncClient(verify=context, trust_env=False) as client:
            return (await client.get(url)).json()

    assert asyncio.run(call())["plain"] is True


def test_a_the_sidecar_must_present_the_target_services_identity(
    deny_agent: ConsulAgent, sidecar: BuiltinProxy, api: ServiceIdentity
) -> None:
    url = f"https://127.0.0.1:{sidecar.port}/"
    with pytest.raises(requests.exceptions.SSLError) as caught:
        mesh_session(api, "payments").get(url, timeout=5)  # we expect another service there
    assert "mesh server identity mismatch" in str(caught.value) and "svc/legacy" in str(
        caught.value
    )
    with (
        httpx.Client(verify=api.client_tls.context_for("payments"), trust_env=False) as client,
        pytest.raises(httpx.ConnectError) as caught_httpx,
    ):
        client.get(url)
    assert "mesh server identity mismatch" in str(caught_httpx.value)


def test_b_a_plain_client_through_a_builtin_upstream_reaches_our_native_service(
    deny_agent: ConsulAgent, native: MeshServer, upstream: BuiltinProxy
) -> None:
    write_intentions(deny_agent.url, native.service, [{"Name": "legacy-client", "Action": "allow"}])
    url = f"http://127.0.0.1:{upstream.port}/through-proxy"
    _eventually(lambda: requests.get(url, timeout=5).status_code == 200)
    answer = requests.get(url, timeout=5).json()
    assert answer["service"] == native.service and answer["path"] == "/through-proxy"
    assert answer["caller"].endswith("/svc/legacy-client")  # the proxy's identity reached us


@pytest.mark.parametrize("action", ["deny", "allow", "deny"])
def test_c_intentions_decide_both_directions_like_our_own_calls(
    deny_agent: ConsulAgent, native: MeshServer, upstream: BuiltinProxy, sidecar: BuiltinProxy,
    api: ServiceIdentity, action: str,
) -> None:  # fmt: skip
    # One intention per destination, flipped together, for three kinds of call.
    write_intentions(deny_agent.url, "legacy", [{"Name": "api", "Action": action}])
    write_intentions(
        deny_agent.url,
        native.service,
        [{"Name": "legacy-client", "Action": action}, {"Name": "api", "Action": action}],
    )
    allowed = action == "allow"
    roots = api.roots
    assert roots is not None
    client_uri = f"spiffe://{roots.trust_domain}/ns/default/dc/dc1/svc/legacy-client"
    # The agent answers authorize from its intentions cache, refreshed by a blocking
    # query: a write shows there a moment later, not at once (seen: a stale answer beside
    # another test worker).
    _eventually(lambda: _agent_allows(deny_agent, api, "legacy") is allowed)
    _eventually(lambda: _agent_allows(deny_agent, client_uri, native.service) is allowed)

    def sidecar_decides() -> bool:  # (a): the built-in proxy authorizes us
        try:
            return (
                mesh_session(api, "legacy")
                .get(f"https://127.0.0.1:{sidecar.port}/", timeout=5)
                .status_code
                == 200
            )
        except requests.exceptions.SSLError:
            return False  # refused in the handshake (bad certificate alert)

    def we_decide_for_the_proxy() -> bool:  # (b): we authorize the built-in proxy
        status = requests.get(f"http://127.0.0.1:{upstream.port}/", timeout=5).status_code
        assert status in (200, 403)
        return status == 200

    def we_decide_for_ourselves() -> bool:  # our own native-to-native call
        answer = mesh_session(api, native.service).get(
            f"https://127.0.0.1:{native.port}/", timeout=5
        )
        assert answer.status_code in (200, 403)
        return answer.status_code == 200

    for decides in (sidecar_decides, we_decide_for_the_proxy, we_decide_for_ourselves):
        _eventually(lambda d=decides: d() is allowed)  # type: ignore[misc]


def _eventually(condition: Any, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "not within the time limit"
        time.sleep(0.05)
