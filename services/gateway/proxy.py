"""Relaying one public request to a service instance and its answer back, faithfully.

The upstream's status, body and content type pass through unchanged (its JSON errors
included). Toward the upstream, every end-to-end request header passes, as Envoy and
other edge proxies do, so that the discovery chain's routes and hash policies (a
header, a cookie) see what the client sent; hop-by-hop headers and those the gateway
owns never do. Back to the client, only the response headers it needs are copied.
When discovery finds no healthy instance the gateway answers 503 JSON; when every
attempt failed, 502 JSON; when the mesh refuses the gateway (an intention), 403 JSON.
"""

from __future__ import annotations

from collections.abc import Mapping

from flask import Response, current_app, request

from consul_discovery.client.failure_origin import FAILURE_ORIGIN_HEADER
from services.common.access_log import REQUEST_ID_HEADER, request_id
from services.common.discovery import get_caller
from services.common.upstream import UPSTREAM_ERRORS, mesh_denial, outage_log, upstream_error
from services.gateway.routes import Target, public_location

#: Hop-by-hop request headers (RFC 9110 7.6.1; and any that ``Connection`` names), which
#: concern this connection only, never the upstream's.
HOP_BY_HOP_HEADERS = frozenset(
    {"connection", "keep-alive", "proxy-connection", "proxy-authenticate",
     "proxy-authorization", "te", "trailer", "transfer-encoding", "upgrade"}
)  # fmt: skip
#: Request headers the gateway sets itself, or that describe the client's own message:
#: never copied from the client. The trace context is the gateway's span's own
#: (``services.common.tracing``); ``Failure-Origin`` is an answer's, not a request's; the
#: gateway negotiates its own content coding with the upstream (it relays decoded bodies).
GATEWAY_OWNED_HEADERS = frozenset(
    {"host", "content-length", "expect", "accept-encoding", "x-forwarded-for",
     REQUEST_ID_HEADER.lower(), "traceparent", "tracestate", FAILURE_ORIGIN_HEADER.lower()}
)  # fmt: skip
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
    """The request's end-to-end headers for the upstream, plus the gateway's own."""
    dropped = HOP_BY_HOP_HEADERS | GATEWAY_OWNED_HEADERS
    named = request.headers.get("Connection")
    if named:
        dropped = dropped | {n.strip().lower() for n in named.split(",")}
    if not target.honours_idempotency_key:
        dropped = dropped | {IDEMPOTENCY_HEADER.lower()}
    headers: dict[str, str] = {}
    for name, value in request.headers.items():
        key = name.lower()
        if key in dropped:
            continue
        # Repeated fields join with a comma (RFC 9110 5.3); cookies with "; " (RFC 6265).
        if name in headers:
            headers[name] += ("; " if key == "cookie" else ", ") + value
        else:
            headers[name] = value
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
            target.service, request.method, target.path,
            source_ip=request.remote_addr or None,  # for a resolver's SourceIP hash policy
            **kwargs,
        )  # fmt: skip
    except UPSTREAM_ERRORS as exc:
        detail = f"{request.method} {request.path} -> {target.path}: {exc}"
        outage_log(current_app, target.service).failed(detail)
        raise upstream_error(target.service, exc) from exc
    outage_log(current_app, target.service).ok()
    denied = mesh_denial(target.service, upstream)  # the mesh's own 403: ours, not relayed
    if denied is not None:
        raise denied
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
