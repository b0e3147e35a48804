"""Service instances a test registers in a real Consul agent, and their health flipped at will.

    instances = ConsulInstances(agent.connection())
    web = instances.register("web", port=8080)          # a TTL check, passing
    instances.set_health(web, "warning")                # Consul sees it when this returns
    instances.maintenance(web, reason="draining")       # out of the passing set
    instances.deregister(web)

A TTL check's status is set through the agent's API. An HTTP check (``check="http"``)
asks a small loopback health endpoint that this module serves for the instance and whose
answer ``set_health`` changes (200 passing, 429 warning, 503 critical: Consul's own
reading of HTTP answers); with ``http_url=`` the check asks your own server instead, and
its health is yours to change. Each change waits until Consul's catalog shows it.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Literal
from urllib.parse import quote

import requests

from consul_discovery.connection import ConsulConnection
from consul_discovery.testing.ports import free_port

Health = Literal["passing", "warning", "critical"]
CheckKind = Literal["ttl", "http", "none"]

HEALTH_STATUSES: dict[str, int] = {"passing": 200, "warning": 429, "critical": 503}
MAINTENANCE_CHECK = "_service_maintenance:{id}"


@dataclass(frozen=True)
class RegisteredInstance:
    """One instance a test registered: what Consul knows it by."""

    service: str
    id: str
    address: str
    port: int
    check: CheckKind
    check_id: str | None
    http_url: str | None = None

    @property
    def host_port(self) -> str:
        """``address:port``, where callers would reach it."""
        return f"{self.address}:{self.port}"


class HealthEndpoint:
    """A loopback HTTP server answering ``GET /health`` with the status a test sets."""

    def __init__(self, status: Health = "passing", port: int | None = None) -> None:
        self.status: Health = status  # set by the test thread; read by the server thread
        endpoint = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                code = HEALTH_STATUSES[endpoint.status]
                body = endpoint.status.encode()
                self.send_response(code)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass  # Consul asks every interval: keep test output quiet

        self.server = ThreadingHTTPServer(("127.0.0.1", port or free_port()), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(
            target=self.server.serve_forever, name="consul-test-health", daemon=True
        )
        self.thread.start()

    @property
    def port(self) -> int:
        """The port it listens on (127.0.0.1)."""
        return int(self.server.server_address[1])

    @property
    def url(self) -> str:
        """``http://127.0.0.1:<port>/health``."""
        return f"http://127.0.0.1:{self.port}/health"

    def close(self) -> None:
        """Stop serving and close the socket."""
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)


def _is_weight_pair(weights: object) -> bool:
    """True for a (passing, warning) tuple or list of two non-negative ints."""
    return (
        isinstance(weights, tuple | list)
        and len(weights) == 2
        and all(isinstance(w, int) and not isinstance(w, bool) and w >= 0 for w in weights)
    )


@dataclass
class ConsulInstances:
    """Registers instances with one agent, flips their health, and removes them on close.

    ``timeout`` bounds every wait for Consul to show a change. Mutable state is owned by
    the test thread.
    """

    connection: ConsulConnection
    timeout: float = 15.0
    _session: requests.Session | None = None  # test thread; made on first use
    _registered: dict[str, RegisteredInstance] = field(default_factory=dict)  # test thread
    _endpoints: dict[str, HealthEndpoint] = field(default_factory=dict)  # test thread

    # ---- registering ----------------------------------------------------------------

    def register(
        self,
        service: str,
        *,
        port: int | None = None,
        address: str = "127.0.0.1",
        instance_id: str | None = None,
        tags: tuple[str, ...] | list[str] = (),
        meta: dict[str, str] | None = None,
        weights: tuple[int, int] | None = None,
        check: CheckKind = "ttl",
        health: Health = "passing",
        ttl: str = "60s",
        http_url: str | None = None,
        interval: str = "1s",
        deregister_after: str | None = None,
        wait: bool = True,
    ) -> RegisteredInstance:
        """Register one instance of ``service`` with a ``check`` in state ``health``.

        ``port`` defaults to a free one (with ``check="http"`` and no ``http_url``: the
        port of the health endpoint served for it). ``weights``: (passing, warning).
        ``wait``: return once Consul's catalog shows the instance in ``health``.
        """
        if health not in HEALTH_STATUSES:
            raise ValueError(f"health must be one of {', '.join(HEALTH_STATUSES)}: {health!r}")
        if check not in ("ttl", "http", "none"):
            raise ValueError(f"check must be 'ttl', 'http' or 'none', not {check!r}")
        if http_url is not None and check != "http":
            raise ValueError("http_url needs check='http'")
        if weights is not None and not _is_weight_pair(weights):
            raise ValueError(f"weights must be a (passing, warning) pair of ints: {weights!r}")
        endpoint = None
        if check == "http" and http_url is None:
            endpoint = HealthEndpoint(health, port)
            port, http_url = endpoint.port, endpoint.url
        port = port or free_port()
        instance_id = instance_id or f"{service}-{address}-{port}"
        check_id = None if check == "none" else f"service:{instance_id}"
        body: dict[str, Any] = {
            "Name": service,
            "ID": instance_id,
            "Address": address,
            "Port": port,
            "Tags": list(tags),
            "Meta": dict(meta or {}),
        }
        if weights is not None:
            body["Weights"] = {"Passing": weights[0], "Warning": weights[1]}
        if check != "none":
            spec: dict[str, Any] = {"CheckID": check_id, "Name": f"{service} {check} check"}
            spec["Status"] = health
            if check == "ttl":
                spec["TTL"] = ttl
            else:
                spec.update({"HTTP": http_url, "Interval": interval, "Timeout": "2s"})
            if deregister_after:
                spec["DeregisterCriticalServiceAfter"] = deregister_after
            body["Check"] = spec
        try:
            self._put("/v1/agent/service/register", json=body)
        except BaseException:
            if endpoint is not None:
                endpoint.close()
            raise
        instance = RegisteredInstance(
            service, instance_id, address, port, check, check_id, http_url
        )
        self._registered[instance_id] = instance
        if endpoint is not None:
            self._endpoints[instance_id] = endpoint
        if wait:
            self.wait_for_health(instance, None if check == "none" else health)
        return instance

    def deregister(self, instance: RegisteredInstance, *, wait: bool = True) -> None:
        """Remove the instance from the agent (and, with ``wait``, from the catalog)."""
        self._put(f"/v1/agent/service/deregister/{quote(instance.id, safe='')}")
        self._registered.pop(instance.id, None)
        endpoint = self._endpoints.pop(instance.id, None)
        if endpoint is not None:
            endpoint.close()
        if wait:
            self._wait(
                lambda: instance.id not in self._catalog_ids(instance.service),
                f"{instance.id} to leave the catalog",
            )

    def registered(self) -> list[RegisteredInstance]:
        """The instances registered through this object and not deregistered."""
        return list(self._registered.values())

    # ---- health ---------------------------------------------------------------------

    def set_health(
        self, instance: RegisteredInstance, health: Health, *, note: str = "", wait: bool = True
    ) -> None:
        """Make the instance's check ``health``; with ``wait``, until Consul shows it."""
        if health not in HEALTH_STATUSES:
            raise ValueError(f"health must be one of {', '.join(HEALTH_STATUSES)}: {health!r}")
        if instance.check == "ttl":
            self._put(
                f"/v1/agent/check/update/{quote(instance.check_id or '', safe='')}",
                json={"Status": health, "Output": note or f"set to {health} by the test"},
            )
        elif instance.id in self._endpoints:
            self._endpoints[instance.id].status = health
        elif instance.check == "http":
            raise ValueError(
                f"{instance.id}'s check asks {instance.http_url}: make that server answer "
                f"{HEALTH_STATUSES[health]} to turn it {health}"
            )
        else:
            raise ValueError(f"{instance.id} was registered without a check (check='none')")
        if wait:
            self.wait_for_health(instance, health)

    def maintenance(
        self,
        instance: RegisteredInstance,
        enable: bool = True,
        *,
        reason: str = "test",
        wait: bool = True,
    ) -> None:
        """Put the instance in maintenance (critical, out of the passing set) or take it out."""
        flag = "true" if enable else "false"
        self._put(
            f"/v1/agent/service/maintenance/{quote(instance.id, safe='')}",
            params={"enable": flag, "reason": reason},
        )
        if wait:
            maint = MAINTENANCE_CHECK.format(id=instance.id)
            self._wait(
                lambda: (maint in self._catalog_checks(instance.service)) == enable,
                f"{instance.id}'s maintenance to be {'on' if enable else 'off'}",
            )

    def wait_for_health(self, instance: RegisteredInstance, health: Health | None) -> None:
        """Wait until the catalog holds the instance (with its check in ``health``)."""
        if health is None or instance.check_id is None:
            self._wait(
                lambda: instance.id in self._catalog_ids(instance.service),
                f"{instance.id} in the catalog",
            )
            return
        check_id = instance.check_id
        self._wait(
            lambda: self._catalog_checks(instance.service).get(check_id) == health,
            f"{instance.id}'s check to be {health}",
        )

    def passing(self, service: str) -> list[str]:
        """IDs of the service's instances that Consul counts as passing now."""
        entries = self._get(f"/v1/health/service/{quote(service, safe='')}?passing=true")
        return sorted(entry["Service"]["ID"] for entry in entries)

    # ---- lifetime -------------------------------------------------------------------

    def close(self) -> None:
        """Deregister what is still registered (an unreachable agent is fine) and stop
        every health endpoint."""
        for instance in list(self._registered.values()):
            # The agent may be down or restarted empty: then nothing is left to remove.
            with contextlib.suppress(requests.RequestException, RuntimeError):
                self._put(f"/v1/agent/service/deregister/{quote(instance.id, safe='')}")
        self._registered.clear()
        for endpoint in self._endpoints.values():
            endpoint.close()
        self._endpoints.clear()
        if self._session is not None:
            self._session.close()
            self._session = None

    def __enter__(self) -> ConsulInstances:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- the agent's API ------------------------------------------------------------

    @property
    def session(self) -> requests.Session:
        """The requests Session to the agent (its token, TLS), made on first use."""
        if self._session is None:
            self._session = self.connection.session()
        return self._session

    def _put(self, path: str, **kwargs: Any) -> None:
        response = self.session.put(
            f"{self.connection.base_url}{path}", timeout=self.connection.read_timeout, **kwargs
        )
        if response.status_code != 200:
            raise RuntimeError(
                f"consul agent refused PUT {path}: HTTP {response.status_code} "
                f"{response.text.strip()[:300]}"
            )

    def _get(self, path: str) -> Any:
        response = self.session.get(
            f"{self.connection.base_url}{path}", timeout=self.connection.read_timeout
        )
        if response.status_code != 200:
            raise RuntimeError(
                f"consul agent refused GET {path}: HTTP {response.status_code} "
                f"{response.text.strip()[:300]}"
            )
        return response.json()

    def _catalog_checks(self, service: str) -> dict[str, str]:
        """CheckID -> status of every check of ``service``'s instances in the catalog."""
        checks = self._get(f"/v1/health/checks/{quote(service, safe='')}")
        return {check["CheckID"]: check["Status"] for check in checks}

    def _catalog_ids(self, service: str) -> set[str]:
        entries = self._get(f"/v1/catalog/service/{quote(service, safe='')}")
        return {entry["ServiceID"] for entry in entries}

    def _wait(self, done: Callable[[], bool], what: str) -> None:
        deadline = time.monotonic() + self.timeout
        while not done():
            if time.monotonic() > deadline:
                raise TimeoutError(f"Consul did not show {what} within {self.timeout}s")
            time.sleep(0.05)
