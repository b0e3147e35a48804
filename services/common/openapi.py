"""An OpenAPI 3 document per app, built from its URL map and served at ``/openapi.json``.

Views describe themselves with ``@operation(...)``; ``build_spec`` walks the app's URL
map so every route appears (undocumented ones with a generic entry), request bodies come
from the same ``Schema`` the view validates with, and every operation lists the shared
JSON error shape.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from flask import Flask, Response, jsonify

from services.common.validation import Schema, json_schema

F = TypeVar("F", bound=Callable[..., Any])
_CONVERTER = re.compile(r"<(?:(?P<conv>[a-z]+)(?:\((?P<args>[^)]*)\))?:)?(?P<name>\w+)>")
_INT_BOUND = re.compile(r"\b(?P<key>min|max)\s*=\s*(?P<value>-?\d+)")
_PARAM_TYPES = {"int": "integer", "float": "number", "path": "string", None: "string"}
_IGNORED_METHODS = {"HEAD", "OPTIONS"}

ERROR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["status", "code", "message"],
            "properties": {
                "status": {"type": "integer"},
                "code": {"type": "string"},
                "message": {"type": "string"},
                "field": {"type": "string", "description": "the offending request field"},
            },
        }
    },
}


def response_header(
    description: str, schema: Mapping[str, Any], *, required: bool = True
) -> dict[str, Any]:
    """An OpenAPI response header object (the fuzzer checks a documented one is sent)."""
    return {"description": description, "required": required, "schema": dict(schema)}


#: On every answer of every service (echoed by the access log, ``services.common.asgi``).
REQUEST_ID = response_header(
    "This request's id: the caller's X-Request-Id, or a new one",
    {"type": "string", "minLength": 1, "maxLength": 128},
)
#: On every 401 (``services.common.auth.unauthorized``).
CHALLENGE = response_header("The bearer challenge", {"type": "string", "pattern": "^Bearer "})
#: On a 201: where the created resource is read.
LOCATION = response_header("Where the created resource is read", {"type": "string"})
#: On a 201 that a repeated Idempotency-Key answered with the first result.
REPLAYED = response_header(
    "'true' when a repeated Idempotency-Key returned the first result",
    {"type": "string", "enum": ["true"]},
    required=False,
)


@dataclass(frozen=True, slots=True)
class Operation:
    """What ``@operation`` records about a view."""

    summary: str
    body: Schema | None = None
    responses: Mapping[int, str] = field(default_factory=dict)
    response_schema: Mapping[str, Any] | None = None
    response_headers: Mapping[int, Mapping[str, Mapping[str, Any]]] = field(default_factory=dict)
    auth: bool = False
    headers: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    query: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    path: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    description: str = ""
    media_type: str = "application/json"


def operation(
    summary: str,
    *,
    body: Schema | None = None,
    responses: Mapping[int, str] | None = None,
    response_schema: Mapping[str, Any] | None = None,
    response_headers: Mapping[int, Mapping[str, Mapping[str, Any]]] | None = None,
    auth: bool = False,
    headers: Mapping[str, Mapping[str, Any]] | None = None,
    query: Mapping[str, Mapping[str, Any]] | None = None,
    path: Mapping[str, Mapping[str, Any]] | None = None,
    description: str = "",
    media_type: str = "application/json",
) -> Callable[[F], F]:
    """Attach OpenAPI metadata to a view function (applied under ``@bp.route``).

    ``headers`` and ``query`` map optional header and query parameter names to their
    JSON schemas (a schema's ``description`` becomes the parameter's); ``path`` maps
    path parameter names to schemas replacing the ones their URL converters imply (to
    state what the view accepts); ``media_type`` is the content type of the 1xx-3xx
    answers (errors are always the JSON error shape). ``response_headers`` maps a status
    to the headers its answer carries (``LOCATION``, ...); every answer documents
    ``X-Request-Id`` and every 401 ``WWW-Authenticate`` without being told.
    """

    def decorate(view: F) -> F:
        view.__openapi__ = Operation(  # type: ignore[attr-defined]
            summary=summary,
            body=body,
            responses=dict(responses or {}),
            response_schema=response_schema,
            response_headers=dict(response_headers or {}),
            auth=auth,
            headers=dict(headers or {}),
            query=dict(query or {}),
            path=dict(path or {}),
            description=description,
            media_type=media_type,
        )
        return view

    return decorate


def openapi_path(rule: str) -> tuple[str, list[dict[str, Any]]]:
    """Turn a Flask rule (``/orders/<int:order_id>``) into an OpenAPI path and parameters."""
    params: list[dict[str, Any]] = []

    def replace(match: re.Match[str]) -> str:
        schema: dict[str, Any] = {"type": _PARAM_TYPES.get(match["conv"], "string")}
        if match["conv"] == "int":  # werkzeug's int matches unsigned digits, within min/max
            schema["minimum"] = 0
            for bound in _INT_BOUND.finditer(match["args"] or ""):
                key = "minimum" if bound["key"] == "min" else "maximum"
                schema[key] = int(bound["value"])
        params.append({"name": match["name"], "in": "path", "required": True, "schema": schema})
        return "{" + match["name"] + "}"

    return _CONVERTER.sub(replace, rule), params


_DEFAULT_OPERATIONS = {
    "/health": Operation(
        "Instance health: 200 when every dependency check passes, else 503",
        responses={200: "Healthy", 503: "A dependency check failed"},
        response_schema={
            "type": "object",
            "properties": {
                "status": {"type": "string", "enum": ["passing", "critical"]},
                "checks": {"type": "object"},
            },
        },
    )
}


def _operation_object(op: Operation | None, endpoint: str, path_params: list) -> dict[str, Any]:
    op = op or Operation(summary=endpoint.replace("_", " ").replace(".", ": "))
    error = {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}
    default_schema = {"type": "object"} if op.media_type == "application/json" else {}
    ok_content = {op.media_type: {"schema": dict(op.response_schema or default_schema)}}
    responses: dict[str, Any] = {}
    for status, text in sorted((op.responses or {200: "OK"}).items()):
        content = ok_content if status < 400 else error
        headers = {"X-Request-Id": REQUEST_ID, **op.response_headers.get(status, {})}
        if status == 401:
            headers["WWW-Authenticate"] = CHALLENGE
        responses[str(status)] = {"description": text, "content": content, "headers": headers}
    responses.setdefault(
        "default",
        {"description": "JSON error", "content": error, "headers": {"X-Request-Id": REQUEST_ID}},
    )
    result: dict[str, Any] = {
        "summary": op.summary,
        "operationId": endpoint,
        "responses": responses,
    }
    if op.description:
        result["description"] = op.description
    parameters = [
        dict(param, schema=dict(op.path[param["name"]])) if param["name"] in op.path else param
        for param in path_params
    ]
    for where, schemas in (("header", op.headers), ("query", op.query)):
        for name, given in schemas.items():
            schema = dict(given)
            param = {"name": name, "in": where, "required": False}
            if "description" in schema:
                param["description"] = schema.pop("description")
            parameters.append({**param, "schema": schema})
    if parameters:
        result["parameters"] = parameters
    if op.body is not None:
        result["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": json_schema(op.body)}},
        }
    if op.auth:
        result["security"] = [{"bearerAuth": []}]
    return result


def build_spec(app: Flask, title: str, version: str, description: str = "") -> dict[str, Any]:
    """The OpenAPI 3.0 document of every route the app serves.

    ``app.extensions["openapi_extra_paths"]``, if set, is a ``() -> paths`` callable whose
    paths are added, and documented as given where a rule serves the same operation (the
    gateway documents the public operations it relays that way).
    """
    paths: dict[str, dict[str, Any]] = {}
    extra = app.extensions.get("openapi_extra_paths")
    if extra is not None:
        paths.update(extra())
    for rule in sorted(app.url_map.iter_rules(), key=lambda r: r.rule):
        if rule.endpoint == "static":
            continue
        view = app.view_functions[rule.endpoint]
        path, params = openapi_path(rule.rule)
        item = paths.setdefault(path, {})
        for method in sorted((rule.methods or set()) - _IGNORED_METHODS):
            op = getattr(view, "__openapi__", None) or _DEFAULT_OPERATIONS.get(rule.rule)
            if method.lower() not in item:
                item[method.lower()] = _operation_object(op, rule.endpoint, params)
    return {
        "openapi": "3.0.3",
        "info": {"title": title, "version": version, "description": description},
        "paths": paths,
        "components": {
            "schemas": {"Error": ERROR_SCHEMA},
            "securitySchemes": {"bearerAuth": {"type": "http", "scheme": "bearer"}},
        },
    }


def init_openapi(app: Flask, title: str, version: str, description: str = "") -> None:
    """Serve the app's OpenAPI document at ``GET /openapi.json``."""

    @operation("This service's OpenAPI document", responses={200: "OpenAPI 3 document"})
    def openapi_json() -> Response:
        return jsonify(build_spec(app, title, version, description))

    app.add_url_rule("/openapi.json", "openapi", openapi_json, methods=["GET"])
