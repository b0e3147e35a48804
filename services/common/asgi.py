"""The ASGI twin of the Flask hooks: RED metrics, ``GET /metrics``, trace context, access log.

``ObservedApp(app, service)`` wraps any ASGI app (FastAPI, Starlette, plain) and, per
HTTP request, does what ``init_access_log``, ``init_tracing`` and ``init_metrics`` do
for a Flask service, through the same cores:

- the request id comes from ``X-Request-Id`` (or is generated) and is echoed back;
- the caller's ``traceparent`` is continued (or a trace starts), and both are propagated
  to every call made while answering (``consul_discovery.client.propagation``);
- the answer is recorded by ``services.common.metrics.request_metrics().observe`` with
  the route template (``scope["route"].path`` as FastAPI/Starlette set it, else
  ``unmatched``), and one access-log line goes to ``services.access`` in the Flask
  services' format, so one request's lines can be found across every service by its id;
- ``GET /metrics`` answers ``services.common.metrics.render()``.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from consul_discovery.client import propagation
from services.common.access_log import QUIET_PATHS, REQUEST_ID_HEADER
from services.common.metrics import METRICS_PATH, render, request_metrics
from services.common.tracing import TRACEPARENT_HEADER, new_trace, parse_traceparent

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

access_log = logging.getLogger("services.access")


def _header(scope: Scope, name: str) -> str | None:
    wanted = name.lower().encode("latin-1")
    for key, value in scope.get("headers") or ():
        if key.lower() == wanted:
            return value.decode("latin-1")
    return None


def _request_id(scope: Scope) -> str:
    incoming = _header(scope, REQUEST_ID_HEADER) or ""
    return incoming if 0 < len(incoming) <= 128 and incoming.isprintable() else uuid.uuid4().hex


class ObservedApp:
    """Wraps an ASGI app with metrics, ``/metrics``, trace context and the access log."""

    def __init__(self, app: ASGIApp, service: str) -> None:
        self.app = app
        self.service = service
        self.metrics = request_metrics()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Serve one ASGI connection (lifespan and websockets pass straight through)."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if scope.get("path") == METRICS_PATH and scope.get("method") == "GET":
            await self._serve_metrics(send)
            return
        started = time.perf_counter()
        rid = _request_id(scope)
        parent = parse_traceparent(_header(scope, TRACEPARENT_HEADER))
        trace = parent.child() if parent is not None else new_trace()
        status = 500
        size = 0

        async def send_observed(message: Message) -> None:
            nonlocal status, size
            if message["type"] == "http.response.start":
                status = int(message["status"])
                headers = list(message.get("headers") or [])
                if not any(k.lower() == b"x-request-id" for k, _ in headers):
                    headers.append((b"x-request-id", rid.encode("latin-1")))
                message["headers"] = headers
            elif message["type"] == "http.response.body":
                size += len(message.get("body") or b"")
            await send(message)

        token = propagation.set_headers(
            {TRACEPARENT_HEADER: trace.traceparent, REQUEST_ID_HEADER: rid}
        )
        try:
            await self.app(scope, receive, send_observed)
        finally:
            propagation.reset_headers(token)
            elapsed = time.perf_counter() - started
            route = getattr(scope.get("route"), "path", None)
            self.metrics.observe(route, scope.get("method", "GET"), status, elapsed)
            path = scope.get("path", "")
            query = scope.get("query_string") or b""
            client = scope.get("client") or ("-", 0)
            access_log.log(
                logging.DEBUG if path in QUIET_PATHS else logging.INFO,
                '%s %s "%s %s" %s %.1fms %s trace=%s rid=%s',
                self.service,
                client[0],
                scope.get("method", "-"),
                path + ("?" + query.decode("latin-1") if query else ""),
                status,
                elapsed * 1000,
                size,
                trace.trace_id,
                rid,
            )

    async def _serve_metrics(self, send: Send) -> None:
        body, content_type = render()
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", content_type.encode("latin-1"))],
            }
        )
        await send({"type": "http.response.body", "body": body})
