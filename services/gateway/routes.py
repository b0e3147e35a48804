"""The gateway's routing table: which service serves a public path, and at which path.

    /api/users/register   -> user-service  /register
    /api/users/login      -> user-service  /login
    /api/users/<rest>     -> user-service  /users/<rest>
    /api/orders[/<rest>]  -> order-service /orders[/<rest>]
    /api/stock/<sku>      -> inventory-service /stock/<sku>

Matching is by whole path segments, longest public prefix first. user-service's
``/tokens/verify`` and inventory-service's ``/reservations`` are internal and have no
public route.

Only a route whose upstream honours ``Idempotency-Key`` (order-service's ``/orders``:
one order per key) passes the caller's key on. Elsewhere the key would be a false
promise: the discovery client treats a request carrying one as safe to resend after a
read timeout, and ``/register`` would then create a second user (or answer 409 to a
registration that succeeded).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Route:
    """Public paths under ``prefix`` go to ``service`` with ``upstream_prefix`` instead."""

    prefix: str
    service_key: str  # a config key naming the service, e.g. "USER_SERVICE_NAME"
    upstream_prefix: str
    honours_idempotency_key: bool = False  # the upstream dedupes by Idempotency-Key

    def matches(self, path: str) -> bool:
        """Whether ``path`` is ``prefix`` itself or lies below it."""
        return path == self.prefix or path.startswith(self.prefix + "/")

    def upstream_path(self, path: str) -> str:
        """The upstream path for a matching public path."""
        return self.upstream_prefix + path[len(self.prefix) :]


@dataclass(frozen=True, slots=True)
class Target:
    """Where one public request goes."""

    service: str
    path: str
    honours_idempotency_key: bool = False
    #: The public route it matched, as a bounded metrics label: ``/api/orders`` itself or
    #: ``/api/orders/<rest>`` below it.
    route: str = ""


ROUTES: tuple[Route, ...] = (
    Route("/api/users/register", "USER_SERVICE_NAME", "/register"),
    Route("/api/users/login", "USER_SERVICE_NAME", "/login"),
    Route("/api/users", "USER_SERVICE_NAME", "/users"),
    Route("/api/orders", "ORDER_SERVICE_NAME", "/orders", honours_idempotency_key=True),
    Route("/api/stock", "INVENTORY_SERVICE_NAME", "/stock"),
)


def resolve(path: str, names: Mapping[str, str], routes: Sequence[Route] = ROUTES) -> Target | None:
    """The service and upstream path for a public ``path``, or None when nothing routes it."""
    for route in sorted(routes, key=lambda r: len(r.prefix), reverse=True):
        if route.matches(path):
            return Target(
                names[route.service_key],
                route.upstream_path(path),
                route.honours_idempotency_key,
                route.prefix if path == route.prefix else route.prefix + "/<rest>",
            )
    return None


def public_location(service: str, location: str, names: Mapping[str, str]) -> str:
    """Map an upstream ``Location`` path back to its public path (unchanged if none fits)."""
    for route in sorted(ROUTES, key=lambda r: len(r.upstream_prefix), reverse=True):
        if names[route.service_key] != service:
            continue
        up = route.upstream_prefix
        if location == up or location.startswith(up + "/"):
            return route.prefix + location[len(up) :]
    return location
