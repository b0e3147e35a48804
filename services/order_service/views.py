"""order-service endpoints: create an order (idempotently), read one, list one's own.

Another user's order answers 404, exactly as a missing one does, so order ids do not
reveal which orders exist.
"""

from __future__ import annotations

import hashlib
import json

from flask import Blueprint, Response, current_app, jsonify, request, url_for

from services.common.auth import bearer_token
from services.common.db import get_db
from services.common.errors import ApiError
from services.common.idempotency import (
    IDEMPOTENCY_HEADER,
    KEY_SCHEMA,
    REPLAYED_HEADER,
    optional_key,
)
from services.common.openapi import LOCATION, REPLAYED, operation
from services.common.validation import Field, known_query
from services.common.validation import json_body as read_body
from services.order_service import inventory, store
from services.order_service.users import current_user

bp = Blueprint("orders", __name__)


ITEM = (
    Field("sku", str, min_length=1, max_length=64, pattern=r"[A-Za-z0-9._-]+"),
    Field("quantity", int, minimum=1, maximum=1000),
)
NEW_ORDER = (Field("items", list, min_length=1, max_length=50, items=ITEM),)

ORDER_SCHEMA = {
    "type": "object",
    "properties": {
        "id": {"type": "integer"},
        "user_id": {"type": "integer"},
        "items": {"type": "array", "items": {"type": "object"}},
        "status": {"type": "string"},
        "created_at": {"type": "number"},
        "idempotency_key": {"type": "string", "nullable": True},
    },
}
ORDER_LIST_SCHEMA = {
    "type": "object",
    "properties": {"orders": {"type": "array", "items": ORDER_SCHEMA}},
}
KEY_DOC = (
    "Optional, 1-255 printable ASCII characters. Retrying a POST with the same key and body "
    "returns the order created the first time (201, Idempotent-Replayed: true); the same key "
    "with a different body answers 422."
)


def _fingerprint(body: dict[str, object]) -> str:
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


@bp.post("/orders")
@operation(
    "Create an order for the caller",
    body=NEW_ORDER,
    auth=True,
    headers={IDEMPOTENCY_HEADER: {**KEY_SCHEMA, "description": KEY_DOC}},
    responses={
        201: "Created (or replayed for a repeated Idempotency-Key)",
        400: "Malformed JSON or Idempotency-Key",
        401: "No valid token",
        409: "Not enough stock of an item (inventory-service)",
        413: "Body too large",
        415: "Not JSON",
        422: "Invalid field, too many items, or Idempotency-Key reused with another body",
        502: "user-service or inventory-service failed",
        503: "No healthy user-service or inventory-service instance",
    },
    response_schema=ORDER_SCHEMA,
    response_headers={201: {"Location": LOCATION, REPLAYED_HEADER: REPLAYED}},
)
def create_order() -> tuple[Response, int, dict[str, str]]:
    """Create an order; a repeated Idempotency-Key returns the first order instead."""
    bearer_token()  # a missing/garbled header is 401 before any body checks
    key = optional_key(request.headers.get(IDEMPOTENCY_HEADER))
    body = read_body(NEW_ORDER)
    most = current_app.config["MAX_ORDER_ITEMS"]  # live from Consul KV
    if len(body["items"]) > most:
        raise ApiError(
            422, "too_many_items", f"an order may hold at most {most} items", field="items"
        )
    user = current_user()
    if key is None or store.order_by_key(get_db(), user.user_id, key) is None:
        inventory.reserve(user.user_id, key, body["items"])  # idempotent per order key
    try:
        order, created = store.create_order(
            get_db(), user.user_id, body["items"], _fingerprint(body), key
        )
    except store.IdempotencyKeyReusedError as exc:
        raise ApiError(
            422,
            "idempotency_key_reused",
            f"{IDEMPOTENCY_HEADER} was already used with a different request body",
            field=IDEMPOTENCY_HEADER,
            extra={"order_id": exc.existing.id},
        ) from exc
    headers = {"Location": url_for("orders.get_order", order_id=order.id)}
    if not created:
        headers[REPLAYED_HEADER] = "true"
    return jsonify(order.public()), 201, headers


@bp.get("/orders/<int(max=9223372036854775807):order_id>")
@operation(
    "Read one of the caller's orders (404 for another user's order)",
    auth=True,
    responses={200: "The order", 401: "No valid token", 404: "No such order of the caller"},
    response_schema=ORDER_SCHEMA,
)
def get_order(order_id: int) -> Response:
    """The caller's order; others' orders are indistinguishable from missing ones."""
    user = current_user()
    order = store.order_by_id(get_db(), order_id)
    if order is None or order.user_id != user.user_id:
        raise ApiError(404, "order_not_found", f"no order {order_id} for this user")
    return jsonify(order.public())


LIST_QUERY = {"limit": {"type": "integer", "minimum": 1, "maximum": 500, "default": 100}}


@bp.get("/orders")
@operation(
    "List the caller's orders, oldest first (at most ``limit``)",
    auth=True,
    query=LIST_QUERY,
    responses={
        200: "The caller's orders",
        401: "No valid token",
        422: "Invalid limit, or an unknown query parameter",
    },
    response_schema=ORDER_LIST_SCHEMA,
)
def list_orders() -> Response:
    """The caller's orders, at most ``limit``."""
    known_query(LIST_QUERY)
    raw = request.args.get("limit", "100")
    limit = int(raw) if raw.isascii() and raw.isdigit() else 0
    if not 1 <= limit <= current_app.config["MAX_LIST_LIMIT"]:
        raise ApiError(
            422,
            "invalid_field",
            f"'limit' must be an integer from 1 to {current_app.config['MAX_LIST_LIMIT']}",
            field="limit",
        )
    user = current_user()
    orders = store.orders_of(get_db(), user.user_id, limit)
    return jsonify({"orders": [order.public() for order in orders]})
