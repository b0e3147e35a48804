"""inventory-service endpoints: reserve an order's items (idempotently), read a SKU's stock.

Handlers are plain functions: FastAPI runs them in its thread pool, so SQLite's blocking
calls never hold the event loop. Errors have the platform's shape
(``{"error": {"status", "code", "message", ...}}``, services.common.errors), installed
by ``services.common.asgi_http``; bodies are validated strictly (JSON types as
documented, unknown fields refused), as the Flask services validate theirs.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from services.common.asgi_http import json_error
from services.common.db import DatabaseUnavailableError
from services.common.errors import ApiError
from services.common.idempotency import (
    IDEMPOTENCY_HEADER,
    KEY_SCHEMA,
    REPLAYED_HEADER,
    required_key,
)
from services.common.openapi import ERROR_SCHEMA, REPLAYED, REQUEST_ID
from services.inventory_service import store

#: Every answer carries its request id (services.common.asgi.ObservedApp).
_HEADERS = {"headers": {"X-Request-Id": REQUEST_ID}}
_ERROR = {"content": {"application/json": {"schema": ERROR_SCHEMA}}, **_HEADERS}
#: The error answers every operation may give, in the platform's shape (not FastAPI's).
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    "default": {"description": "JSON error", **_ERROR},
}
ITEMS_SCHEMA: dict[str, Any] = {
    "type": "array",
    "items": {
        "type": "object",
        "properties": {"sku": {"type": "string"}, "quantity": {"type": "integer"}},
    },
}
RESERVATION_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["id", "key", "items"],
    "properties": {"id": {"type": "integer"}, "key": {"type": "string"}, "items": ITEMS_SCHEMA},
}
STOCK_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["sku", "available"],
    "properties": {"sku": {"type": "string"}, "available": {"type": "integer", "minimum": 0}},
}


def _ok(description: str, schema: dict[str, Any], **headers: dict[str, Any]) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/json": {"schema": schema}},
        "headers": {**_HEADERS["headers"], **headers},
    }


RESERVE_RESPONSES: dict[int | str, dict[str, Any]] = {
    **ERROR_RESPONSES,
    201: _ok(
        "Reserved (or replayed for a repeated Idempotency-Key)",
        RESERVATION_SCHEMA,
        **{REPLAYED_HEADER: REPLAYED},
    ),
    400: {"description": "Missing or invalid Idempotency-Key, or malformed JSON", **_ERROR},
    409: {"description": "Not enough stock of an item", **_ERROR},
    413: {"description": "Body too large", **_ERROR},
    415: {"description": "Not JSON", **_ERROR},
    422: {"description": "Invalid field, or Idempotency-Key reused with another body", **_ERROR},
    503: {"description": "The datastore is unavailable", **_ERROR},
}
STOCK_RESPONSES: dict[int | str, dict[str, Any]] = {
    **ERROR_RESPONSES,
    200: _ok("The SKU's available stock", STOCK_SCHEMA),
    503: {"description": "The datastore is unavailable", **_ERROR},
}
#: Documented here and checked by the view (so a bad key is 400, like order-service's).
KEY_PARAMETER = {
    "name": IDEMPOTENCY_HEADER,
    "in": "header",
    "required": True,
    "description": "One reservation per key: a repeated key with the same body replays it",
    "schema": KEY_SCHEMA,
}


class Item(BaseModel):
    """One line of a reservation."""

    model_config = ConfigDict(strict=True, extra="forbid")

    sku: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9._-]+$")
    quantity: int = Field(ge=1, le=1000)


class NewReservation(BaseModel):
    """The body of POST /reservations."""

    model_config = ConfigDict(strict=True, extra="forbid")

    items: list[Item] = Field(min_length=1, max_length=50)


def install(app: FastAPI) -> None:
    """Add the routes to ``app`` (errors: ``services.common.asgi_http``)."""

    @app.exception_handler(DatabaseUnavailableError)
    async def db_error(request: Request, exc: DatabaseUnavailableError) -> JSONResponse:
        return json_error(ApiError(503, "database_unavailable", "the datastore is unavailable"))

    @app.post(
        "/reservations",
        status_code=201,
        responses=RESERVE_RESPONSES,
        openapi_extra={"parameters": [KEY_PARAMETER]},
    )
    def reserve(body: NewReservation, request: Request) -> JSONResponse:
        """Reserve every item or none; a repeated key returns the first reservation."""
        key = required_key(request.headers.get(IDEMPOTENCY_HEADER))
        items = [item.model_dump() for item in body.items]
        canonical = json.dumps({"items": items}, sort_keys=True, separators=(",", ":"))
        settings: dict[str, Any] = request.app.state.settings
        conn = request.app.state.database.connect()
        try:
            reservation, created = store.reserve(
                conn,
                key,
                items,
                hashlib.sha256(canonical.encode()).hexdigest(),
                int(settings["INVENTORY_INITIAL_STOCK"]),
            )
        except store.KeyReusedError as exc:
            raise ApiError(
                422,
                "idempotency_key_reused",
                f"{IDEMPOTENCY_HEADER} was already used with a different request body",
                field=IDEMPOTENCY_HEADER,
            ) from exc
        except store.InsufficientStockError as exc:
            raise ApiError(
                409,
                "insufficient_stock",
                f"not enough stock of {exc.sku}",
                extra={"sku": exc.sku, "available": exc.available},
            ) from exc
        finally:
            conn.close()
        headers = {} if created else {REPLAYED_HEADER: "true"}
        return JSONResponse(reservation.public(), status_code=201, headers=headers)

    @app.get("/stock/{sku}", responses=STOCK_RESPONSES)
    def stock(sku: str, request: Request) -> dict[str, Any]:
        """The available stock of one SKU."""
        settings: dict[str, Any] = request.app.state.settings
        conn = request.app.state.database.connect()
        try:
            return {
                "sku": sku,
                "available": store.available(conn, sku, int(settings["INVENTORY_INITIAL_STOCK"])),
            }
        finally:
            conn.close()
