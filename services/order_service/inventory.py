"""Reserving an order's items with inventory-service, through discovery.

The reservation's ``Idempotency-Key`` is derived from the order's own: the same order
key of the same user always names the same reservation, so an order retried by its
caller (or a reservation retried by the discovery client on another instance) takes
stock once. An order without a key gets a fresh reservation key per request; the
discovery client's retries of that one request still reuse it. With
``INVENTORY_SERVICE_NAME`` empty, nothing is reserved.
"""

from __future__ import annotations

import hashlib
import uuid
from typing import Any

from flask import current_app

from services.common.errors import ApiError
from services.common.upstream import call_upstream


def reservation_key(user_id: int, order_key: str | None) -> str:
    """The reservation's Idempotency-Key for an order (fresh when the order has none)."""
    if order_key is None:
        return f"order-once-{uuid.uuid4().hex}"
    digest = hashlib.sha256(f"{user_id}\0{order_key}".encode()).hexdigest()
    return f"order-{digest}"


def reserve(user_id: int, order_key: str | None, items: list[dict[str, Any]]) -> None:
    """Reserve ``items``; 409 when out of stock, 502/503 when inventory-service fails."""
    service = current_app.config["INVENTORY_SERVICE_NAME"]
    if not service:
        return
    response = call_upstream(
        service,
        "POST",
        "/reservations",
        timeout_key="INVENTORY_SERVICE_TIMEOUT",
        json={"items": items},
        headers={"Idempotency-Key": reservation_key(user_id, order_key)},
    )
    if response.status_code == 201:
        return
    if response.status_code == 409:
        try:
            sku = str(response.json()["error"]["sku"])
        except (ValueError, KeyError, TypeError):
            sku = "?"
        raise ApiError(409, "insufficient_stock", f"not enough stock of {sku}", extra={"sku": sku})
    raise ApiError(
        502,
        "upstream_failed",
        f"{service} answered {response.status_code} to a reservation",
        extra={"service": service},
    )
