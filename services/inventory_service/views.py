"""inventory-service endpoints: reserve an order's items (idempotently), read a SKU's stock.

Handlers are plain functions: FastAPI runs them in its thread pool, so SQLite's blocking
calls never hold the event loop. Errors have the platform's shape
(``{"error": {"status", "code", "message", ...}}``, services.common.errors).
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException

from services.common.db import DatabaseUnavailableError
from services.common.errors import ApiError
from services.common.idempotency import (
    IDEMPOTENCY_HEADER,
    KEY_SCHEMA,
    REPLAYED_HEADER,
    required_key,
)
from services.common.openapi import ERROR_SCHEMA
from services.inventory_service import store

_ERROR = {"content": {"application/json": {"schema": ERROR_SCHEMA}}}
#: The error answers every operation may give, in the platform's shape (not FastAPI's).
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    "default": {"description": "JSON error", **_ERROR},
}
RESERVE_RESPONSES: dict[int | str, dict[str, Any]] = {
    **ERROR_RESPONSES,
    400: {"description": "Missing or invalid Idempotency-Key, or malformed JSON", **_ERROR},
    409: {"description": "Not enough stock of an item", **_ERROR},
    422: {"description": "Invalid field, or Idempotency-Key reused with another body", **_ERROR},
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

    sku: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9._-]+$")
    quantity: int = Field(ge=1, le=1000)


class NewReservation(BaseModel):
    """The body of POST /reservations."""

    items: list[Item] = Field(min_length=1, max_length=50)


def _error(exc: ApiError) -> JSONResponse:
    return JSONResponse(exc.to_dict(), status_code=exc.status, headers=exc.headers)


def install(app: FastAPI) -> None:
    """Add the routes and the platform's JSON error shape to ``app``."""

    @app.exception_handler(ApiError)
    async def api_error(request: Request, exc: ApiError) -> JSONResponse:
        return _error(exc)

    @app.exception_handler(DatabaseUnavailableError)
    async def db_error(request: Request, exc: DatabaseUnavailableError) -> JSONResponse:
        return _error(ApiError(503, "database_unavailable", "the datastore is unavailable"))

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {}
        field = ".".join(str(p) for p in first.get("loc", ())[1:]) or None
        return _error(
            ApiError(422, "invalid_field", str(first.get("msg", "invalid body")), field=field)
        )

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
        return _error(ApiError(exc.status_code, "http_error", str(exc.detail)))

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

    @app.get("/stock/{sku}", responses=ERROR_RESPONSES)
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
