"""The gateway refuses path tricks before routing, in-process and under a real gunicorn.

The goal of every trick is to reach user-service's internal ``/tokens/verify`` (or any
path outside the route table) through a public ``/api/...`` route. Each one must be
refused by the gateway (400, or 404 where nothing routes it) without any upstream call.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from flask import Flask

from services.gateway.paths import problem
from tests.harness.ports import free_port
from tests.services.conftest import assert_json_error
from tests.services.fakes import FlaskCaller

REPO_ROOT = Path(__file__).resolve().parents[2]

TRICKS = [
    "/api/users/../tokens/verify",
    "/api/users/./../tokens/verify",
    "/api/users/%2e%2e/tokens/verify",
    "/api/users/%2E%2E/tokens/verify",
    "/api/users/%2E./tokens/verify",
    "/api/users/.%2e/tokens/verify",
    "/api/users/%252e%252e/tokens/verify",
    "/api/users/%c0%ae%c0%ae/tokens/verify",
    "/api/users/%e0%80%ae%e0%80%ae/tokens/verify",
    "/api/users/%ef%bc%8e%ef%bc%8e/tokens/verify",  # fullwidth dots, encoded
    "/api/users/\uff0e\uff0e/tokens/verify",  # fullwidth dots, raw
    "/api/users/..%2ftokens/verify",
    "/api/users/..%2Ftokens%2Fverify",
    "/api/users%2f..%2ftokens%2fverify",
    "/api/users/..%5ctokens/verify",
    "/api/users/..\\tokens/verify",
    "/api/users\\..\\tokens\\verify",
    "/api/users/..;/tokens/verify",
    "/api/users/1;/../../tokens/verify",
    "/api/users/.../tokens/verify",
    "/api/users/..../tokens/verify",
    "/api/users/../../tokens/verify",
    "/api/users//../tokens/verify",
    "/api/users/x/..",
    "/api/users/./1",
    "/api/users/1.",
    "/api/users/1..",
    "/api/users/1%00",
    "/api/users/1%00/../../tokens/verify",
    "/api/users/1%20",
    "/api/users/%09",
    "/api//users/1",
    "/api/users//1",
    "/api/users/1/",
    "/api/orders/1%3b",
    "/api/orders/%31",
]


@pytest.mark.parametrize("path", TRICKS)
def test_each_trick_is_refused_in_process(
    gateway_app: Flask, caller: FlaskCaller, path: str
) -> None:
    client = gateway_app.test_client()
    for method in ("GET", "POST"):
        response = client.open(path, method=method, json={"token": "x"})
        assert response.status_code in (400, 404), (path, response.status_code)
        assert_json_error(response)
    assert caller.calls == [], caller.calls


def test_plain_paths_still_route(gateway_app: Flask, caller: FlaskCaller) -> None:
    client = gateway_app.test_client()
    assert client.get("/api/users/1").status_code == 401  # reached user-service: no token
    assert [c[2] for c in caller.calls] == ["/users/1"]
    assert problem("/api/orders/12", "/api/orders/12") is None
    assert problem("/api/users/register", None) is None
    assert problem("/api/users/a.b", None) is None


def test_the_reasons_name_what_is_wrong() -> None:
    assert "percent" in (problem("/api/users/..", "/api/users/%2e%2e") or "")
    assert "dot" in (problem("/api/users/..", None) or "")
    assert "empty" in (problem("/api//users", None) or "")


# -- the same tricks through a real gunicorn, which passes raw paths -------------------


def _gunicorn(app: str, port: int, env: dict[str, str], log: Path) -> subprocess.Popen:
    cmd = [
        str(Path(sys.executable).with_name("gunicorn")),
        "--bind",
        f"127.0.0.1:{port}",
        "--workers",
        "1",
        "--threads",
        "4",
        "--worker-class",
        "gthread",
        "--access-logfile",
        "-",
        app,
    ]
    with log.open("wb") as out:
        return subprocess.Popen(
            cmd,
            cwd=REPO_ROOT,
            env={**os.environ, **env},
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def _wait_up(port: int, proc: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"gunicorn exited: {log.read_text()[-2000:]}")
        try:
            if requests.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(0.1)
    raise TimeoutError(f"gunicorn on {port} did not come up: {log.read_text()[-2000:]}")


@pytest.fixture(scope="module")
def gunicorn_gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[int, Path]]:
    """A user-service and a gateway, each under gunicorn; yields the gateway's port and
    user-service's log (its access log shows every path that reached it)."""
    tmp = tmp_path_factory.mktemp("gunicorn-gateway")
    user_port, gateway_port = free_port(), free_port()
    user_log, gateway_log = tmp / "user.log", tmp / "gateway.log"
    procs = []
    try:
        user = _gunicorn(
            "services.user_service:create_app()",
            user_port,
            {
                "REGISTRY_ENABLED": "false",
                "USER_DB_PATH": str(tmp / "users.sqlite3"),
                "USER_SERVICE_SECRET": "test-secret",
            },
            user_log,
        )
        procs.append(user)
        _wait_up(user_port, user, user_log)
        gateway = _gunicorn(
            "tests.services.gateway_under_gunicorn:create()",
            gateway_port,
            {
                "GATEWAY_TEST_USER_PORT": str(user_port),
                "GATEWAY_TEST_ORDER_PORT": str(user_port),
            },
            gateway_log,
        )
        procs.append(gateway)
        _wait_up(gateway_port, gateway, gateway_log)
        yield gateway_port, user_log
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)


def raw_request(port: int, method: str, target: bytes) -> int:
    """Send ``target`` exactly as given (no client-side normalising); the status code."""
    body = b'{"token": "x"}'
    head = (
        method.encode() + b" " + target + b" HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        b"Content-Type: application/json\r\nContent-Length: "
        + str(len(body)).encode()
        + b"\r\nConnection: close\r\n\r\n"
    )
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(head + body)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    return int(data.split(b" ", 2)[1])


def test_each_trick_is_refused_under_gunicorn(gunicorn_gateway: tuple[int, Path]) -> None:
    port, user_log = gunicorn_gateway
    # Positive control: a plain public path does reach user-service through gunicorn.
    assert raw_request(port, "GET", b"/api/users/1") == 401
    statuses = {}
    for path in TRICKS:
        for method in ("GET", "POST"):
            statuses[(method, path)] = raw_request(port, method, path.encode("utf-8"))
    bad = {k: v for k, v in statuses.items() if v not in (400, 404)}
    assert bad == {}, bad
    # Every path that reached user-service (its access logs): the control only.
    reached = set(re.findall(r'"(?:GET|POST) ([^\s"?]+)', user_log.read_text()))
    assert reached - {"/health"} == {"/users/1"}, reached
