"""A minimal ASGI backend under uvicorn, for benchmarks where the client must be the bottleneck.

``app`` answers every request with ``{"instance": ID}`` (``$BACKEND_ID``) and nothing
else: no framework, no logging. ``uvicorn_backends`` starts processes on free loopback
ports, registers each in the agent with a passing TTL check, and stops them by PID.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import requests

from bench.env import sigint_deferred
from tests.harness.agent import ConsulAgent
from tests.harness.backends import REPO_ROOT
from tests.harness.ports import free_port

_BODY = json.dumps({"instance": os.environ.get("BACKEND_ID", "backend")}).encode()
_HEADERS = [(b"content-type", b"application/json"), (b"content-length", str(len(_BODY)).encode())]


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """Answer ``{"instance": ID}`` to any HTTP request."""
    if scope["type"] != "http":
        return
    await send({"type": "http.response.start", "status": 200, "headers": _HEADERS})
    await send({"type": "http.response.body", "body": _BODY})


@contextlib.contextmanager
def uvicorn_backends(agent: ConsulAgent, service: str, count: int) -> Iterator[list[str]]:
    """Start ``count`` uvicorn processes of ``app`` registered as ``service``; yield ids."""
    procs: list[subprocess.Popen[bytes]] = []
    ids = [f"{service}-{n}" for n in range(count)]
    try:
        ports = []
        for ident in ids:
            port = free_port()
            ports.append(port)
            cmd = [
                sys.executable, "-m", "uvicorn", "bench.asgi_backend:app", "--host", "127.0.0.1",
                "--port", str(port), "--log-level", "warning", "--no-access-log",
            ]  # fmt: skip
            env = {**os.environ, "BACKEND_ID": ident}
            proc = subprocess.Popen(
                cmd, cwd=REPO_ROOT, env=env, stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL, start_new_session=True,
            )  # fmt: skip
            procs.append(proc)
        for ident, port in zip(ids, ports, strict=True):
            _wait_ready(port)
            body = {
                "ID": ident, "Name": service, "Address": "127.0.0.1", "Port": port,
                "Check": {"CheckID": f"service:{ident}", "TTL": "1h", "Status": "passing"},
            }  # fmt: skip
            url = f"{agent.url}/v1/agent/service/register"
            requests.put(url, json=body, timeout=5).raise_for_status()
        yield ids
    finally:
        with sigint_deferred():
            for proc in procs:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGTERM)
            for proc in procs:
                try:
                    proc.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait(timeout=5)


def _wait_ready(port: int, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            requests.get(f"http://127.0.0.1:{port}/", timeout=0.5)
            return
        except requests.RequestException:
            time.sleep(0.05)
    raise TimeoutError(f"uvicorn on port {port} not ready after {timeout}s")
