"""Consul Connect in tests: Connect agents, intentions, mesh servers and Consul's built-in proxy.

- ``connect_agent(...)``: a dev agent (Connect is on in dev mode) with an optional
  ``default_intention_policy`` or ACLs (``tests.harness.acl``: default deny, a management
  token, ``create_token``); stopped by PID.
- ``write_intentions`` / ``set_protocol``: config entries through the HTTP API.
- ``MeshServer``: a Connect-native instance of a test app under gunicorn (sync or
  gthread) or ``python -m consul_discovery.mesh.uvicorn``, in its own process group,
  ready once Consul shows it passing (its TTL check is fed over mTLS).
- ``BuiltinProxy``: ``consul connect proxy``, the one other mesh peer available here
  (Envoy is not), as a sidecar in front of a plain service or as an upstream listener.

Every process is started on free loopback ports and stopped by PID/PGID.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests

from tests.harness.acl import running_acl_agent
from tests.harness.agent import ConsulAgent, running_agent
from tests.harness.binary import consul_binary
from tests.harness.ports import free_port

REPO_ROOT = Path(__file__).resolve().parents[2]


def _wait(predicate: Any, timeout: float, what: str, log: Any = None) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            tail = f"; log:\n{log()}" if log else ""
            raise TimeoutError(f"{what} not within {timeout}s{tail}")
        time.sleep(0.05)


def _headers(token: str | None) -> dict[str, str]:
    return {"X-Consul-Token": token} if token else {}


@contextmanager
def connect_agent(
    *, default_intention_policy: str | None = None, acl: bool = False
) -> Iterator[ConsulAgent]:
    """A started dev agent for Connect tests (see the module docstring); removed after."""
    hcl = []
    if default_intention_policy:
        hcl.append(f'default_intention_policy = "{default_intention_policy}"')
    if acl:
        with running_acl_agent(hcl=hcl) as agent:
            yield agent
    else:
        with running_agent(extra_args=[arg for h in hcl for arg in ("-hcl", h)]) as agent:
            yield agent


def write_intentions(
    base_url: str, destination: str, sources: Sequence[Mapping[str, Any]], token: str | None = None
) -> None:
    """Replace ``destination``'s service-intentions config entry with ``sources``."""
    response = requests.put(
        f"{base_url}/v1/config",
        headers=_headers(token),
        json={"Kind": "service-intentions", "Name": destination, "Sources": list(sources)},
        timeout=5,
    )
    if not response.ok:
        raise RuntimeError(f"intentions for {destination} refused: {response.text}")


def delete_intentions(base_url: str, destination: str, token: str | None = None) -> None:
    """Remove ``destination``'s service-intentions config entry."""
    requests.delete(
        f"{base_url}/v1/config/service-intentions/{destination}", headers=_headers(token), timeout=5
    ).raise_for_status()


def set_protocol(base_url: str, service: str, protocol: str, token: str | None = None) -> None:
    """service-defaults with ``protocol`` (``http`` lets intentions carry L7 permissions)."""
    requests.put(
        f"{base_url}/v1/config",
        headers=_headers(token),
        json={"Kind": "service-defaults", "Name": service, "Protocol": protocol},
        timeout=5,
    ).raise_for_status()


def passing(base_url: str, service: str, service_id: str, token: str | None = None) -> bool:
    """True when Consul shows ``service_id`` of ``service`` passing."""
    try:
        entries = requests.get(
            f"{base_url}/v1/health/service/{service}",
            params={"passing": "1"},
            headers=_headers(token),
            timeout=2,
        ).json()
    except (requests.RequestException, ValueError):
        return False
    return any(e["Service"]["ID"] == service_id for e in entries or [])


def listening(port: int) -> bool:
    """True when something accepts TCP connections on 127.0.0.1:``port``."""
    with socket.socket() as probe:
        probe.settimeout(0.5)
        return probe.connect_ex(("127.0.0.1", port)) == 0


@dataclass
class _Process:
    """A process in its own group with a log file; stopped by PGID."""

    command: list[str]
    env: dict[str, str]
    log_path: Path
    process: subprocess.Popen[bytes] | None = None  # owned by the test thread
    _log: Any = field(default=None, repr=False)

    def spawn(self) -> None:
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(
            self.command, cwd=REPO_ROOT, env=self.env, stdout=self._log,
            stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip

    def log(self) -> str:
        """The output so far."""
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return "(no log)"

    def alive(self) -> bool:
        """True while the main process runs."""
        return self.process is not None and self.process.poll() is None

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM the group, then SIGKILL it if it lingers; wait for the main process."""
        process = self.process
        if process is not None:
            for sig in (signal.SIGTERM, signal.SIGKILL):
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, sig)
                try:
                    process.wait(timeout)
                    break
                except subprocess.TimeoutExpired:
                    continue
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)  # workers the master left behind
        if self._log is not None:
            self._log.close()
            self._log = None


def _base_env(agent_address: str, token: str | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SERVICE_", "CONSUL_"))}
    env.pop("REGISTRY_MANAGED_BY", None)
    env["PYTHONPATH"] = str(REPO_ROOT)
    env["CONSUL_HTTP_ADDR"] = agent_address
    if token:
        env["CONSUL_HTTP_TOKEN"] = token
    return env


@dataclass
class MeshServer(_Process):
    """One Connect-native instance of a test app (see ``start_mesh_server``)."""

    service: str = ""
    service_id: str = ""
    port: int = 0


def start_mesh_server(
    agent: ConsulAgent,
    service: str,
    log_dir: Path,
    *,
    server: str = "gunicorn",
    token: str | None = None,
    threads: int = 1,
    workers: int = 1,
    env: Mapping[str, str] | None = None,
    wait: bool = True,
) -> MeshServer:
    """Start ``service`` Connect-native: ``server`` is gunicorn (sync, or gthread with
    ``threads`` > 1) over tests.mesh.apps:create_app, or uvicorn over create_asgi_app."""
    port = free_port()
    service_id = f"{service}-{port}"
    environment = _base_env(agent.address, token)
    environment.update(
        {
            "SERVICE_NAME": service,
            "SERVICE_ID": service_id,
            "SERVICE_PORT": str(port),
            "SERVICE_ADDRESS": "127.0.0.1",
            "SERVICE_CONNECT": "native",
            "SERVICE_CHECK_INTERVAL": "3s",
            "SERVICE_DRAIN_SECONDS": "0.5",
            **(env or {}),
        }
    )
    if server == "gunicorn":
        worker_class = ["--threads", str(threads)] if threads > 1 else ["-k", "sync"]
        command = [
            sys.executable, "-m", "gunicorn", "-c", "python:consul_discovery.mesh.gunicorn_conf",
            "--workers", str(workers), *worker_class, "--graceful-timeout", "5",
            "tests.mesh.apps:create_app()",
        ]  # fmt: skip
    elif server == "uvicorn":
        command = [
            sys.executable, "-m", "consul_discovery.mesh.uvicorn", "--factory",
            "tests.mesh.apps:create_asgi_app", "--host", "127.0.0.1", "--port", str(port),
            "--log-level", "info",
        ]  # fmt: skip
    else:
        raise ValueError(f"unknown server {server!r}")
    instance = MeshServer(
        command, environment, log_dir / f"{service_id}.log", service=service,
        service_id=service_id, port=port,
    )  # fmt: skip
    instance.spawn()

    def up() -> bool:
        if not instance.alive():
            raise RuntimeError(f"{service_id} exited; log:\n{instance.log()}")
        return passing(agent.url, service, service_id, token)

    if wait:
        try:
            _wait(up, 90, f"{service_id} passing", instance.log)
        except BaseException:
            instance.stop()
            raise
    return instance


@dataclass
class BuiltinProxy(_Process):
    """``consul connect proxy`` (see ``sidecar_proxy`` and ``upstream_proxy``)."""

    port: int = 0


def _proxy(agent: ConsulAgent, args: list[str], port: int, log_dir: Path,
           token: str | None) -> BuiltinProxy:  # fmt: skip
    env = _base_env(agent.address, token)
    command = [consul_binary(), "connect", "proxy", f"-http-addr={agent.address}", *args]
    proxy = BuiltinProxy(command, env, log_dir / f"proxy-{port}.log", port=port)
    proxy.spawn()
    try:
        _wait(lambda: listening(port), 20, f"built-in proxy on {port}", proxy.log)
    except BaseException:
        proxy.stop()
        raise
    return proxy


def sidecar_proxy(
    agent: ConsulAgent, service: str, service_port: int, log_dir: Path, token: str | None = None
) -> BuiltinProxy:
    """A sidecar for a plain service on ``service_port``: mTLS in on its own port,
    authorized by intentions; registered (``-register``) so it is Connect-capable."""
    port = free_port()
    args = [f"-service={service}", f"-service-addr=127.0.0.1:{service_port}",
            f"-listen=127.0.0.1:{port}", "-register"]  # fmt: skip
    return _proxy(agent, args, port, log_dir, token)


def upstream_proxy(
    agent: ConsulAgent, service: str, upstream: str, log_dir: Path, token: str | None = None
) -> BuiltinProxy:
    """A plain listener for ``service``'s client: connections to it go to ``upstream``
    over mTLS, as ``service``."""
    port = free_port()
    args = [f"-service={service}", f"-upstream={upstream}:{port}"]
    return _proxy(agent, args, port, log_dir, token)
