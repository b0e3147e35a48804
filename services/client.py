"""The platform's Python client: register, log in, create and read orders.

Two ways to reach the platform, same methods::

    client = PlatformClient.via_gateway("http://127.0.0.1:8080")
    client = PlatformClient.via_discovery(ServiceClient("127.0.0.1:8500"))

    client.register("alice", "correct horse")
    client.login("alice", "correct horse")          # keeps the token for later calls
    order = client.create_order([{"sku": "book", "quantity": 2}], idempotency_key="k1")
    client.get_order(order["id"]); client.list_orders()

Errors:

    ClientError
    ├── ApiError        the platform answered 4xx/5xx; ``status``, ``code``, ``body``
    └── TransportError  no answer: connection failed, or discovery found no instance
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping
from typing import Any, Protocol

import requests

__all__ = ["ApiError", "ClientError", "PlatformClient", "TransportError"]

DEFAULT_TIMEOUT = 10.0


class ClientError(Exception):
    """Base class of every error the client raises."""


class ApiError(ClientError):
    """The platform answered with an error status; ``body`` is its JSON error, if any."""

    def __init__(self, status: int, body: Any, method: str, path: str) -> None:
        self.status = status
        self.body = body
        error = body.get("error") if isinstance(body, dict) else None
        error = error if isinstance(error, dict) else {}
        self.code: str = str(error.get("code", "http_error"))
        self.field: str | None = error.get("field")
        message = error.get("message") or (body if isinstance(body, str) else "")
        super().__init__(f"{method} {path} -> {status} {self.code}: {message}")


class TransportError(ClientError):
    """The request got no answer (network failure or no reachable instance)."""


class _Transport(Protocol):
    def send(self, service: str, method: str, path: str, **kwargs: Any) -> requests.Response: ...


class _GatewayTransport:
    """Public paths on the gateway: ``/api/users/...`` and ``/api/orders/...``."""

    _PUBLIC = {"/register": "/api/users/register", "/login": "/api/users/login"}

    def __init__(self, base_url: str, session: requests.Session) -> None:
        self.base_url = base_url.rstrip("/")
        self.session = session  # owned by the PlatformClient's creator

    def send(self, service: str, method: str, path: str, **kwargs: Any) -> requests.Response:
        public = self._PUBLIC.get(path) or "/api" + path
        return self.session.request(method, self.base_url + public, **kwargs)


class _DiscoveryTransport:
    """Straight to the services by name through a discovery client."""

    def __init__(self, caller: Any) -> None:
        self.caller = caller  # a discovery_client.ServiceClient (or alike), not owned

    def send(self, service: str, method: str, path: str, **kwargs: Any) -> requests.Response:
        return self.caller.request(service, method, path, **kwargs)


class PlatformClient:
    """A logged-in (or not yet) user of the platform's public API."""

    def __init__(self, transport: _Transport, *, timeout: float = DEFAULT_TIMEOUT) -> None:
        self._transport = transport
        self.timeout = timeout
        self.token: str | None = None  # set by login(); the caller's thread only

    @classmethod
    def via_gateway(
        cls, base_url: str, *, session: requests.Session | None = None, timeout: float = 10.0
    ) -> PlatformClient:
        """A client of the gateway at ``base_url`` (e.g. ``http://127.0.0.1:8080``)."""
        return cls(_GatewayTransport(base_url, session or requests.Session()), timeout=timeout)

    @classmethod
    def via_discovery(cls, service_client: Any, *, timeout: float = 10.0) -> PlatformClient:
        """A client calling user-service and order-service by name through discovery."""
        return cls(_DiscoveryTransport(service_client), timeout=timeout)

    # ---- users ----------------------------------------------------------------------

    def register(self, username: str, password: str) -> dict[str, Any]:
        """Create a user; returns ``{id, username, created_at}``."""
        return self._call(
            "user-service", "POST", "/register", json={"username": username, "password": password}
        )

    def login(self, username: str, password: str) -> str:
        """Log in; returns the bearer token and keeps it for the calls that follow."""
        body = self._call(
            "user-service",
            "POST",
            "/login",
            json={"username": username, "password": password},
            # Logging in changes nothing server-side, so it is safe to retry on another
            # instance even after it was sent; the key tells the discovery client so.
            headers={"Idempotency-Key": f"login-{uuid.uuid4().hex}"},
        )
        self.token = str(body["token"])
        return self.token

    # ---- orders ---------------------------------------------------------------------

    def create_order(
        self,
        items: Iterable[Mapping[str, Any] | tuple[str, int]],
        *,
        idempotency_key: str | None = None,
    ) -> dict[str, Any]:
        """Create an order of ``items`` (``{"sku", "quantity"}`` or ``(sku, quantity)``).

        Without ``idempotency_key`` a fresh one is generated, so transport-level retries
        of this call can never create two orders.
        """
        payload = [
            {"sku": item[0], "quantity": item[1]} if isinstance(item, tuple) else dict(item)
            for item in items
        ]
        key = idempotency_key or uuid.uuid4().hex
        return self._call(
            "order-service",
            "POST",
            "/orders",
            json={"items": payload},
            headers={"Idempotency-Key": key},
        )

    def get_order(self, order_id: int, headers: Mapping[str, str] | None = None) -> dict[str, Any]:
        """One of the caller's orders (``headers``: extra request headers, e.g. a route's)."""
        return self._call(
            "order-service", "GET", f"/orders/{int(order_id)}", headers=dict(headers or {})
        )

    def stock(self, sku: str) -> int:
        """How many of ``sku`` inventory-service has available."""
        return int(self._call("inventory-service", "GET", f"/stock/{sku}")["available"])

    def list_orders(self) -> list[dict[str, Any]]:
        """The caller's orders, oldest first."""
        return list(self._call("order-service", "GET", "/orders")["orders"])

    # ---- plumbing -------------------------------------------------------------------

    def _call(self, service: str, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        headers = dict(kwargs.pop("headers", {}))
        if self.token is not None:
            headers["Authorization"] = f"Bearer {self.token}"
        headers.setdefault("Accept", "application/json")
        try:
            response = self._transport.send(
                service, method, path, headers=headers, timeout=self.timeout, **kwargs
            )
        except requests.RequestException as exc:
            raise TransportError(f"{method} {path}: {exc}") from exc
        except Exception as exc:
            from consul_discovery.client.errors import DiscoveryError

            if isinstance(exc, DiscoveryError):
                raise TransportError(f"{method} {path}: {exc}") from exc
            raise
        try:
            body: Any = response.json()
        except ValueError:
            body = response.text
        if response.status_code >= 400:
            raise ApiError(response.status_code, body, method, path)
        if not isinstance(body, dict):
            raise ApiError(response.status_code, body, method, path)
        return body
