"""Relaying one public request to a service instance and its answer back, faithfully.

The upstream's status, body and content type pass through unchanged (its JSON errors
included); only the headers a client needs are copied each way, hop-by-hop ones never.
When discovery finds no healthy instance the gateway answers 503 JSON; when every
attempt failed, 502 JSON.
"""

from __future__ import annotations

from collections.abc import Mapping

from flask import Response, current_app, request

from consul_discovery.client.failure_origin import FAILURE_ORIGIN_HEADER
from services.common.access_log import REQUEST_ID_HEADER, request_id
from services.common.discovery import get_caller
from services.common.upstream import UPSTREAM_ERRORS, outage_log, upstream_error
from services.gateway.routes import Target, public_location

#: Request headers passed to the upstream (everything else stays at the gateway).
FORWARDED_REQUEST_HEADERS = ("Authorization", "Content-Type", "Accept")
#: Passed on only to routes that honour it (``Route.honours_idempotency_key``).
IDEMPOTENCY_HEADER = "Idempotency-Key"
#: Response headers passed back to the client.
RELAYED_RESPONSE_HEADERS = (
    "Location",
    "Idempotent-Replayed",
    "Retry-After",
    "WWW-Authenticate",
    "Allow",
    FAILURE_ORIGIN_HEADER,  # the upstream relayed its own dependency's failure
)
_BODY_METHODS = {"POST", "PUT", "PATCH", "DELETE"}


def _upstream_headers(target: Target) -> dict[str, str]:
    names = FORWARDED_REQUEST_HEADERS
    if target.honours_idempotency_key:
        names = (*names, IDEMPOTENCY_HEADER)
    headers = {name: request.headers[name] for name in names if name in request.headers}
    headers[REQUEST_ID_HEADER] = request_id()
    forwarded_for = request.headers.get("X-Forwarded-For")
    client = request.remote_addr or ""
    headers["X-Forwarded-For"] = f"{forwarded_for}, {client}" if forwarded_for else client
    return headers


def forward(target: Target, names: Mapping[str, str]) -> Response:
    """Send the current request to ``target`` through discovery; relay the answer."""
    kwargs: dict[str, object] = {
        "headers": _upstream_headers(target),
        "params": list(request.args.items(multi=True)),
        "timeout": (
            float(current_app.config["CONNECT_TIMEOUT"]),
            float(current_app.config["UPSTREAM_TIMEOUT"]),
        ),
        "allow_redirects": False,
    }
    if request.method in _BODY_METHODS:
        kwargs["data"] = request.get_data(cache=False)  # 413 past MAX_CONTENT_LENGTH
    try:
        upstream = get_caller(current_app).request(
            target.service, request.method, target.path, **kwargs
        )
    except UPSTREAM_ERRORS as exc:
        detail = f"{request.method} {request.path} -> {target.path}: {exc}"
        outage_log(current_app, target.service).failed(detail)
        raise upstream_error(target.service, exc) from exc
    outage_log(current_app, target.service).ok()
    response = Response(upstream.content, status=upstream.status_code)
    content_type = upstream.headers.get("Content-Type")
    if content_type:
        response.headers["Content-Type"] = content_type
    else:
        del response.headers["Content-Type"]
    for name in RELAYED_RESPONSE_HEADERS:
        value = upstream.headers.get(name)
        if value is None:
            continue
        if name == "Location":
            value = public_location(target.service, value, names)
        response.headers[name] = value
    return response
