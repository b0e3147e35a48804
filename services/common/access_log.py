"""One access-log line per request, plus a request id carried across services.

The line goes to the ``services.access`` logger: service, remote address, method, path,
status, duration in milliseconds, response size, trace id (``services.common.tracing``)
and request id (``/health`` and ``/metrics``, probed every few seconds, at DEBUG).
The request id comes from the ``X-Request-Id`` header when a caller (the gateway) sent
one, else is generated, and is echoed in the response so a call can be followed from
gateway to upstream.
"""

from __future__ import annotations

import logging
import time
import uuid

from flask import Flask, Response, g, request

REQUEST_ID_HEADER = "X-Request-Id"
log = logging.getLogger("services.access")
#: Paths probed every few seconds (Consul's check, Prometheus): logged at DEBUG, not INFO.
QUIET_PATHS = frozenset({"/health", "/metrics"})


def request_id() -> str:
    """The current request's id (from the caller, or generated)."""
    rid = g.get("request_id")
    if rid is None:
        incoming = request.headers.get(REQUEST_ID_HEADER, "")
        rid = incoming if 0 < len(incoming) <= 128 and incoming.isprintable() else uuid.uuid4().hex
        g.request_id = rid
    return rid


def init_access_log(app: Flask) -> None:
    """Log every request once it is answered, and echo its request id."""

    @app.before_request
    def _start() -> None:
        g.request_started = time.perf_counter()
        request_id()

    @app.after_request
    def _log(response: Response) -> Response:
        started = g.get("request_started")
        elapsed_ms = (time.perf_counter() - started) * 1000 if started is not None else 0.0
        rid = request_id()
        trace = g.get("trace")
        response.headers.setdefault(REQUEST_ID_HEADER, rid)
        level = logging.DEBUG if request.path in QUIET_PATHS else logging.INFO
        log.log(
            level,
            '%s %s "%s %s" %s %.1fms %s trace=%s rid=%s',
            app.config.get("SERVICE_NAME", app.name),
            request.remote_addr or "-",
            request.method,
            request.full_path.rstrip("?"),
            response.status_code,
            elapsed_ms,
            response.calculate_content_length() or 0,
            trace.trace_id if trace is not None else "-",
            rid,
        )
        return response
