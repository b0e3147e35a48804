"""What Flask gives a service by itself, for a FastAPI one: JSON errors, Allow, OPTIONS, HEAD.

``init_http(app, max_body=...)`` makes every answer that is not a success
the shared shape (``services.common.errors``), as the Flask services answer, and the
methods behave as they do under Flask:

- ``ApiError`` as raised; any unexpected exception 500 (the server logs it);
- Starlette's own 404 and 405 with the shared codes; a 405 names in ``Allow`` every
  method any route serves at that path, and ``OPTIONS`` on a served path answers 200
  with that ``Allow``;
- ``HEAD`` is served wherever ``GET`` is (FastAPI's routes take GET alone), as GET
  without the body (``HeadAsGet``);
- a body that is not JSON 415, JSON that does not parse (or is not an object) 400
  ``malformed_json``, an invalid field 422 naming it like the Flask services do
  (``items[0].sku``);
- a body over ``max_body`` bytes 413, whatever its framing (``BodyLimit``).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException
from starlette.responses import JSONResponse, Response
from starlette.routing import Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from services.common.errors import ApiError, error_code

#: pydantic error types -> the codes the Flask services' validation uses.
_FIELD_CODES = {"missing": "missing_field", "extra_forbidden": "unknown_field"}
#: Errors about the body as a whole: it is not a JSON object at all.
_NOT_AN_OBJECT = frozenset({"missing", "model_attributes_type", "model_type", "dict_type"})


def json_error(error: ApiError) -> JSONResponse:
    """``error`` as a JSON response with its status and headers."""
    return JSONResponse(error.to_dict(), status_code=error.status, headers=error.headers)


def allowed_methods(app: Any, scope: Scope) -> set[str]:
    """Every method some route of ``app`` serves at the request's path (with OPTIONS),
    or an empty set when no route serves that path."""
    methods: set[str] = set()
    for route in app.router.routes:
        served = getattr(route, "methods", None)
        if served and route.matches(scope)[0] is not Match.NONE:
            methods |= set(served)
    if "GET" in methods:
        methods.add("HEAD")  # HeadAsGet
    return methods | {"OPTIONS"} if methods else methods


class HeadAsGet:
    """Serves ``HEAD`` as ``GET`` without the body where a route serves ``GET``."""

    def __init__(self, app: ASGIApp, routed: Any) -> None:
        self.app = app
        self.routed = routed  # the FastAPI app whose routes decide

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Pass the request on; a HEAD for a GET route as that GET, its body dropped."""
        if scope["type"] != "http" or scope["method"] != "HEAD":
            await self.app(scope, receive, send)
            return
        as_get = {**scope, "method": "GET"}
        if not any(
            "GET" in (getattr(route, "methods", None) or ())
            and route.matches(as_get)[0] is Match.FULL
            for route in self.routed.router.routes
        ):
            await self.app(scope, receive, send)
            return

        async def without_body(message: Message) -> None:
            if message["type"] == "http.response.body":
                message = {**message, "body": b""}
            await send(message)

        await self.app(as_get, receive, without_body)


def _is_json(content_type: str | None) -> bool:
    media = (content_type or "").split(";", 1)[0].strip().lower()
    return media == "application/json" or (
        media.startswith("application/") and media.endswith("+json")
    )


def field_name(location: Sequence[Any]) -> str | None:
    """A pydantic error location as the Flask services name fields: ``items[0].sku``."""
    name = ""
    for part in location[1:]:  # [0] is where: body, query, path, header
        name += f"[{part}]" if isinstance(part, int) else (f".{part}" if name else str(part))
    return name or None


def validation_error(request: Request, errors: Iterable[dict[str, Any]]) -> ApiError:
    """The ApiError for FastAPI's validation errors: 415, 400 or 422 with the field named."""
    first = next(iter(errors), {})
    kind = str(first.get("type", ""))
    location = tuple(first.get("loc", ()))
    if location[:1] == ("body",) and not _is_json(request.headers.get("content-type")):
        return ApiError(
            415,
            "unsupported_media_type",
            "request body must be JSON (Content-Type: application/json)",
        )
    if kind == "json_invalid":
        return ApiError(400, "malformed_json", "request body is not valid JSON")
    if location == ("body",) and kind in _NOT_AN_OBJECT:
        return ApiError(400, "malformed_json", "request body must be a JSON object")
    field = field_name(location)
    code = _FIELD_CODES.get(kind, "wrong_type" if kind.endswith("_type") else "invalid_field")
    message = str(first.get("msg", "invalid request"))
    return ApiError(422, code, f"{field!r}: {message}" if field else message, field=field)


class BodyLimit:
    """Answers 413 when a request body is over ``limit`` bytes (Content-Length or not).

    A body is read before the app runs (at most ``limit`` + 1 bytes, so it stays small)
    and handed to the app whole.
    """

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Pass the request on with its body, or answer 413."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.lower(): v for k, v in scope.get("headers") or ()}
        declared = headers.get(b"content-length", b"").strip()
        if declared.isdigit() and int(declared) > self.limit:
            await self._too_large(scope, receive, send)
            return
        if not declared and b"transfer-encoding" not in headers:
            await self.app(scope, receive, send)  # no body
            return
        body = b""
        more = True
        while more and len(body) <= self.limit:
            message = await receive()
            if message["type"] != "http.request":  # the client went away
                await self.app(scope, _replay([message], receive), send)
                return
            body += message.get("body", b"")
            more = message.get("more_body", False)
        if len(body) > self.limit:
            await self._too_large(scope, receive, send)
            return
        whole: Message = {"type": "http.request", "body": body, "more_body": False}
        await self.app(scope, _replay([whole], receive), send)

    async def _too_large(self, scope: Scope, receive: Receive, send: Send) -> None:
        message = f"request body is larger than the limit of {self.limit} bytes"
        await json_error(ApiError(413, error_code(413), message))(scope, receive, send)


def _replay(messages: list[Message], receive: Receive) -> Receive:
    """A receive that first returns ``messages``, then defers to ``receive``."""
    pending = list(messages)

    async def replayed() -> Message:
        if pending:
            return pending.pop(0)
        return await receive()

    return replayed


def init_http(app: FastAPI, max_body: int) -> None:
    """Answer every error of ``app`` in the platform's JSON shape, bodies up to ``max_body``,
    HEAD wherever GET is, OPTIONS and Allow from the routes."""
    app.add_middleware(BodyLimit, limit=max_body)
    app.add_middleware(HeadAsGet, routed=app)

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError) -> Response:
        return json_error(exc)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> Response:
        return json_error(validation_error(request, exc.errors()))

    @app.exception_handler(HTTPException)
    async def _http_error(request: Request, exc: HTTPException) -> Response:
        headers = dict(exc.headers or {})
        if exc.status_code == 405:
            allowed = allowed_methods(request.app, request.scope)
            headers["Allow"] = ", ".join(sorted(allowed))
            if request.method == "OPTIONS" and allowed:
                return Response(status_code=200, headers=headers)
        message = str(exc.detail) if exc.detail else error_code(exc.status_code)
        error = ApiError(exc.status_code, error_code(exc.status_code), message, headers=headers)
        return json_error(error)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> Response:
        # Starlette re-raises it after this answer, and the server logs the traceback.
        return json_error(ApiError(500, "internal_error", "internal server error"))
