"""JSON errors for every 4xx/5xx a service can answer.

Every error body has one shape, served as ``application/json``::

    {"error": {"status": 422, "code": "missing_field", "message": "...", "field": "password"}}

``ApiError`` is what views raise; ``install_error_handlers`` turns it, every werkzeug
``HTTPException`` (404, 405, 413, ...) and any unexpected exception (500, logged) into
that shape, so no path answers HTML. ``error_code`` is the one status -> code table,
shared by the ASGI service (``services.common.asgi_http``) and the servers' own error
pages (``services.common.server_errors``).
"""

from __future__ import annotations

import logging
from typing import Any

from flask import Flask, Response, current_app, jsonify
from werkzeug.exceptions import HTTPException

log = logging.getLogger(__name__)

#: HTTP status -> our stable machine-readable code, for errors no view named itself.
HTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    406: "not_acceptable",
    409: "conflict",
    411: "length_required",
    413: "body_too_large",
    414: "uri_too_long",
    415: "unsupported_media_type",
    422: "unprocessable_entity",
    429: "too_many_requests",
    431: "headers_too_large",
    500: "internal_error",
    501: "not_implemented",
    502: "bad_gateway",
    503: "service_unavailable",
    504: "gateway_timeout",
}
#: The media type of every error body.
ERROR_MEDIA_TYPE = "application/json"


def error_code(status: int) -> str:
    """The stable code of an error answered with ``status`` and no more specific code."""
    return HTTP_CODES.get(status, "http_error")


class ApiError(Exception):
    """An error a view answers with: HTTP status, stable code, message, optional field."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        field: str | None = None,
        extra: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.field = field
        self.extra = dict(extra or {})
        self.headers = dict(headers or {})

    def to_dict(self) -> dict[str, Any]:
        """The ``{"error": {...}}`` body of this error."""
        body: dict[str, Any] = {"status": self.status, "code": self.code, "message": self.message}
        if self.field is not None:
            body["field"] = self.field
        body.update(self.extra)
        return {"error": body}


def error_response(error: ApiError) -> Response:
    """Render an ApiError as a JSON response with its status and headers."""
    response = jsonify(error.to_dict())
    response.status_code = error.status
    for name, value in error.headers.items():
        response.headers[name] = value
    return response


def _from_http_exception(exc: HTTPException) -> Response:
    status = exc.code or 500
    code = error_code(status)
    message = exc.description or exc.name
    if status == 413:
        limit = current_app.config.get("MAX_CONTENT_LENGTH")
        message = f"request body is larger than the limit of {limit} bytes"
    response = error_response(ApiError(status, code, message))
    if status == 405 and exc.response is None:
        allowed = getattr(exc, "valid_methods", None)
        if allowed:
            response.headers["Allow"] = ", ".join(sorted(allowed))
    return response


def install_error_handlers(app: Flask) -> None:
    """Make every error the app can answer a JSON body of the shared shape."""

    @app.errorhandler(ApiError)
    def _api_error(exc: ApiError) -> Response:
        return error_response(exc)

    @app.errorhandler(HTTPException)
    def _http_error(exc: HTTPException) -> Response:
        return _from_http_exception(exc)

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception) -> Response:
        log.exception("unhandled error")
        return error_response(ApiError(500, "internal_error", "internal server error"))
