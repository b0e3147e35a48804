"""Requests the servers refuse themselves are answered in the JSON error shape too.

user-service runs under gunicorn with the services' own config
(``services.common.gunicorn_conf``: the registry's hooks, registering with a real
Consul agent, plus JSON error pages) and inventory-service under uvicorn with
``--http services.common.server_errors:JsonErrorH11Protocol``, as the cluster runs
them. Each gets malformed requests, sent byte for byte over a socket: a garbage request
line, an unknown HTTP version, a lowercase method, a bad header name, a header block
over the limit, a bad Content-Length, a chunked body that is malformed or over the body
limit; and what the frameworks refuse: bad percent-encoding, an unknown method,
malformed JSON, a body that is not JSON, an odd Host header. Every answer must be a
4xx or 5xx whose body is the shared JSON error (``application/json``), never
gunicorn's HTML page or uvicorn's plain text.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from tests.harness.agent import ConsulAgent, running_agent
from tests.harness.ports import free_port

REPO_ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
LIMIT = 65536  # the services' default body limit


def _chunked(body: bytes) -> bytes:
    return f"{len(body):x}".encode() + b"\r\n" + body + b"\r\n0\r\n\r\n"


def _request(
    line: bytes, headers: list[tuple[bytes, bytes]] | None = None, body: bytes = b""
) -> bytes:
    head = [line, b"Host: 127.0.0.1", *(name + b": " + value for name, value in headers or [])]
    return b"\r\n".join([*head, b"Connection: close", b"", b""]) + body


def _post(path: bytes, *headers: tuple[bytes, bytes], body: bytes = b"") -> bytes:
    return _request(
        b"POST " + path + b" HTTP/1.1", [(b"Content-Type", b"application/json"), *headers], body
    )


CHUNKED = (b"Transfer-Encoding", b"chunked")
TOO_BIG = b'{"a": "' + b"x" * (LIMIT + 10) + b'"}'

#: (case, raw request, expected status); ``PATH`` is replaced by a POST route's path.
SHARED = [
    ("garbage request line", b"GARBAGE\r\n\r\n", 400),
    ("bad header name", _request(b"GET /health HTTP/1.1", [(b"Bad Header", b"1")]), 400),
    ("bad content-length", _post(b"PATH", (b"Content-Length", b"abc"), body=b"{}"), 400),
    ("chunked body over the limit", _post(b"PATH", CHUNKED, body=_chunked(TOO_BIG)), 413),
    ("malformed chunked body", _post(b"PATH", CHUNKED, body=b"zz\r\n{}\r\n0\r\n\r\n"), 400),
    ("bad percent-encoding", _request(b"GET /nowhere%zz%ff%c0%ae HTTP/1.1"), 404),
    ("unknown method", _request(b"BREW /health HTTP/1.1"), 405),
    ("malformed JSON", _post(b"PATH", (b"Content-Length", b"5"), body=b"{bad}"), 400),
    (
        "not JSON",
        _request(
            b"POST PATH HTTP/1.1", [(b"Content-Type", b"text/plain"), (b"Content-Length", b"2")]
        )
        + b"{}",
        415,
    ),
]
GUNICORN_ONLY = [
    ("unknown HTTP version", _request(b"GET /health HTTP/9.9"), 400),
    ("lowercase method", _request(b"get /health HTTP/1.1"), 400),
    ("request line too long", _request(b"GET /" + b"a" * 9000 + b" HTTP/1.1"), 400),
    (
        "header block too large",
        _request(b"GET /health HTTP/1.1", [(f"X-{n}".encode(), b"1") for n in range(200)]),
        431,
    ),
    (
        "Transfer-Encoding and Content-Length",
        _post(b"PATH", CHUNKED, (b"Content-Length", b"2"), body=_chunked(b"{}")),
        400,
    ),
]


def send_raw(port: int, data: bytes) -> tuple[int, dict[str, str], bytes]:
    """Send ``data`` as is; the answer's status, headers (lowercase names) and body."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(data)
        answer = b""
        try:
            while chunk := sock.recv(65536):
                answer += chunk
        except ConnectionResetError:
            pass  # the server closed on a request it refused; what it sent first counts
    head, _, body = answer.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    if headers.get("transfer-encoding") == "chunked":
        size, _, rest = body.partition(b"\r\n")
        body = rest[: int(size, 16)]
    return int(lines[0].split()[1]), headers, body


def _start(cmd: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        return subprocess.Popen(
            cmd,
            cwd=REPO_ROOT,
            env={**os.environ, "PYTHONPATH": str(REPO_ROOT), **env},
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def _wait_up(port: int, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited: {log.read_text()[-3000:]}")
        try:
            if requests.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(0.1)
    raise TimeoutError(f"server on {port} did not come up: {log.read_text()[-3000:]}")


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)


@pytest.fixture(scope="module")
def agent() -> Iterator[ConsulAgent]:
    """One Consul dev agent for the module's servers to register with."""
    with running_agent() as running:
        yield running


@pytest.fixture(scope="module")
def servers(agent: ConsulAgent, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    """user-service under gunicorn and inventory-service under uvicorn, as the cluster runs
    them; yields {name: (port, POST path)}."""
    tmp = tmp_path_factory.mktemp("server-errors")
    user_port, inventory_port = free_port(), free_port()
    common = {
        "CONSUL_HTTP_ADDR": agent.address,
        "SERVICE_ADDRESS": "127.0.0.1",
        "SERVICE_DRAIN_SECONDS": "0",
        "SERVICE_CHECK_INTERVAL": "1s",
    }
    user = _start(
        [
            str(BIN / "gunicorn"),
            "-c",
            "python:services.common.gunicorn_conf",
            "--workers",
            "1",
            "--worker-class",
            "gthread",
            "--threads",
            "2",
            "services.user_service:create_app()",
        ],
        {
            **common,
            "SERVICE_NAME": "user-service",
            "SERVICE_PORT": str(user_port),
            "USER_DB_PATH": str(tmp / "users.sqlite3"),
            "USER_SERVICE_SECRET": "test-secret",
        },
        tmp / "user.log",
    )
    inventory = _start(
        [
            sys.executable,
            "-m",
            "uvicorn",
            "--factory",
            "services.inventory_service:create_app",
            "--host",
            "127.0.0.1",
            "--port",
            str(inventory_port),
            "--http",
            "services.common.server_errors:JsonErrorH11Protocol",
        ],
        {
            **common,
            "SERVICE_NAME": "inventory-service",
            "SERVICE_PORT": str(inventory_port),
            "INVENTORY_DB_PATH": str(tmp / "inventory.sqlite3"),
        },
        tmp / "inventory.log",
    )
    try:
        _wait_up(user_port, user, tmp / "user.log")
        _wait_up(inventory_port, inventory, tmp / "inventory.log")
        yield {"user": (user_port, b"/register"), "inventory": (inventory_port, b"/reservations")}
    finally:
        _stop(user)
        _stop(inventory)


def _assert_json_error(answer: tuple[int, dict[str, str], bytes], status: int) -> None:
    got, headers, body = answer
    assert got == status, (got, headers, body[:300])
    assert headers.get("content-type") == "application/json", (headers, body[:300])
    error = json.loads(body)["error"]
    assert error["status"] == status and error["code"] and error["message"], error


CASES = [
    pytest.param("user", request, status, id=f"gunicorn: {case}")
    for case, request, status in SHARED + GUNICORN_ONLY
] + [
    pytest.param("inventory", request, status, id=f"uvicorn: {case}")
    for case, request, status in SHARED
]


@pytest.mark.parametrize(("server", "request_bytes", "status"), CASES)
def test_a_refused_request_gets_the_json_error(
    servers: dict, server: str, request_bytes: bytes, status: int
) -> None:
    port, post_path = servers[server]
    _assert_json_error(send_raw(port, request_bytes.replace(b"PATH", post_path)), status)


def test_the_servers_still_serve_and_register(servers: dict, agent: ConsulAgent) -> None:
    for port, _ in servers.values():
        status, _headers, body = send_raw(port, _request(b"GET /health HTTP/1.1"))
        assert status == 200 and json.loads(body)["status"] == "passing", body
    services = agent.client().agent.services()
    assert {s["Service"] for s in services.values()} >= {"user-service", "inventory-service"}


@pytest.mark.parametrize("host", [b"bad host", b"a<b>", b"h:notaport", b"x" * 300])
def test_a_bad_host_header_is_answered_in_json(servers: dict, host: bytes) -> None:
    """An odd Host is answered as usual (werkzeug builds no absolute URL from it) or
    refused with the JSON 400 (a name werkzeug cannot encode), never with an HTML page."""
    for port, _ in servers.values():
        request = b"GET /nowhere HTTP/1.1\r\nHost: " + host + b"\r\nConnection: close\r\n\r\n"
        answer = send_raw(port, request)
        _assert_json_error(answer, 404 if answer[0] != 400 else 400)
    port, _ = servers["user"]
    body = b'{"username": "host-%d", "password": "password123"}' % len(host)
    register = (
        b"POST /register HTTP/1.1\r\nHost: " + host + b"\r\n"
        b"Content-Type: application/json\r\nContent-Length: %d\r\n"
        % len(body)
        + b"Connection: close\r\n\r\n"
        + body
    )
    answer = send_raw(port, register)
    if answer[0] == 201:
        assert answer[1]["location"].startswith("/users/"), answer[1]
    else:
        _assert_json_error(answer, 400)
