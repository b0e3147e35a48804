"""Transport failures are classified alike for requests and httpx, from real sockets."""

from __future__ import annotations

import socket
import struct
import threading
from collections.abc import Callable, Iterator

import httpx
import pytest
import requests

from consul_discovery.connection import ConsulConnection
from consul_discovery.connection.transport_errors import (
    TransportFailure,
    classify_transport_error,
    describe_transport_error,
    is_http_to_https_port,
)
from tests.harness.agent import ConsulAgent
from tests.harness.ports import free_port

CLIENTS: dict[str, Callable[[str], object]] = {
    "requests": lambda url: requests.get(url, timeout=0.5),
    "httpx": lambda url: httpx.get(url, timeout=0.5),
}


def failure(client: str, url: str) -> BaseException:
    try:
        CLIENTS[client](url)
    except Exception as exc:
        return exc
    raise AssertionError(f"{client} GET {url} succeeded")


@pytest.fixture
def listener() -> Iterator[socket.socket]:
    """A loopback socket that listens and never answers (the test may accept on it)."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(8)
    try:
        yield sock
    finally:
        sock.close()


@pytest.mark.parametrize("client", CLIENTS)
def test_https_to_a_plain_http_agent_is_not_tls(client: str, consul_agent: ConsulAgent) -> None:
    exc = failure(client, f"https://{consul_agent.address}/v1/agent/self")
    assert classify_transport_error(exc) is TransportFailure.NOT_TLS
    connection = ConsulConnection.from_env({}, address=f"https://{consul_agent.address}")
    assert "does not speak TLS" in describe_transport_error(exc, connection)


@pytest.mark.parametrize("client", CLIENTS)
def test_refused_names_the_agent_and_hints_at_the_cli_default_port(client: str) -> None:
    port = free_port()
    exc = failure(client, f"http://127.0.0.1:{port}/")
    assert classify_transport_error(exc) is TransportFailure.REFUSED
    connection = ConsulConnection.from_env({}, address=f"127.0.0.1:{port}")
    assert describe_transport_error(exc, connection) == (
        f"cannot connect to the agent at http://127.0.0.1:{port}: connection refused"
    )
    bare = ConsulConnection.from_env({}, address="localhost")
    assert "the agent's HTTP API is on 8500" in describe_transport_error(exc, bare)


@pytest.mark.parametrize("client", CLIENTS)
def test_silence_is_a_timeout(client: str, listener: socket.socket) -> None:
    exc = failure(client, f"http://127.0.0.1:{listener.getsockname()[1]}/")
    assert classify_transport_error(exc) is TransportFailure.TIMEOUT


@pytest.mark.parametrize("client", CLIENTS)
def test_a_dropped_connection_is_a_reset(client: str, listener: socket.socket) -> None:
    def reset_one() -> None:
        conn, _ = listener.accept()
        conn.recv(100)
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        conn.close()

    thread = threading.Thread(target=reset_one)
    thread.start()
    exc = failure(client, f"http://127.0.0.1:{listener.getsockname()[1]}/")
    thread.join(5)
    assert classify_transport_error(exc) is TransportFailure.RESET


@pytest.mark.parametrize("client", CLIENTS)
def test_an_unknown_host_is_a_name_failure(client: str) -> None:
    exc = failure(client, "http://no-such-host.invalid:1/")
    assert classify_transport_error(exc) is TransportFailure.NAME


def test_plain_http_to_an_https_port_is_recognised_from_the_answer() -> None:
    assert is_http_to_https_port(400, "Client sent an HTTP request to an HTTPS server.\n")
    assert not is_http_to_https_port(400, "Bad request: invalid service name")
