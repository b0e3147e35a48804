"""W3C trace context across services: parse ``traceparent``, continue it, pass it on.

Each request a service answers is one span: its trace id comes from the caller's
``traceparent`` header when that parses strictly, else a new trace starts (bad input is
never an error). Calls the service makes while answering carry ``traceparent`` (this
span as their parent) and ``X-Request-Id`` through the discovery client
(``consul_discovery.client.propagation``), so the access log lines of every service one
request crossed share its request id and trace id.

If the OpenTelemetry API is installed, each request is also a SERVER span started
through it (parented on the caller's context) and current while the request runs; with
a configured SDK that span is recorded and its ids are the ones passed on. Only the API
is ever used; without an SDK its spans are no-ops and our own ids are used.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass
from typing import Any

from flask import Flask, Response, g, request

from consul_discovery.client import propagation
from services.common.access_log import REQUEST_ID_HEADER, request_id

TRACEPARENT_HEADER = "traceparent"
_HEX = re.compile(r"[0-9a-f]+")
_rng = random.SystemRandom()

try:
    from opentelemetry import context as otel_context
    from opentelemetry import trace as otel_trace
except ImportError:  # the API is optional
    otel_context = None  # type: ignore[assignment]
    otel_trace = None  # type: ignore[assignment]


@dataclass(frozen=True, slots=True)
class TraceContext:
    """One span's place in a trace: trace id (32 hex), span id (16 hex), flags."""

    trace_id: str
    span_id: str
    flags: int = 1  # sampled

    @property
    def traceparent(self) -> str:
        """The ``traceparent`` header naming this span as the parent."""
        return f"00-{self.trace_id}-{self.span_id}-{self.flags:02x}"

    def child(self, rng: random.Random = _rng) -> TraceContext:
        """A new span in the same trace."""
        return TraceContext(self.trace_id, _random_hex(16, rng), self.flags)


def _random_hex(digits: int, rng: random.Random) -> str:
    while True:
        value = rng.getrandbits(digits * 4)
        if value:  # all zeros is invalid in both fields
            return f"{value:0{digits}x}"


def new_trace(rng: random.Random = _rng) -> TraceContext:
    """The root span of a new trace."""
    return TraceContext(_random_hex(32, rng), _random_hex(16, rng))


def _hex(value: str, digits: int) -> bool:
    return len(value) == digits and _HEX.fullmatch(value) is not None


def parse_traceparent(value: str | None) -> TraceContext | None:
    """The caller's span from a ``traceparent`` value, or None if it is absent or invalid.

    Strict per W3C Trace Context: lowercase hex; version ``ff`` invalid; version 00 has
    exactly four fields; a later version may append fields after a ``-``; trace and
    parent ids must not be all zeros.
    """
    if not value or len(value) > 512:
        return None
    value = value.strip(" \t")
    if len(value) < 55 or (len(value) > 55 and value[55] != "-"):
        return None
    parts = value[:55].split("-")
    if len(parts) != 4:
        return None
    version, trace_id, span_id, flags = parts
    if not (_hex(version, 2) and _hex(trace_id, 32) and _hex(span_id, 16) and _hex(flags, 2)):
        return None
    if version == "ff" or (version == "00" and len(value) != 55):
        return None
    if trace_id == "0" * 32 or span_id == "0" * 16:
        return None
    return TraceContext(trace_id, span_id, int(flags, 16) & 0x01)


def current_trace() -> TraceContext | None:
    """The span of the request being answered (None outside a request)."""
    return g.get("trace")


def _start_otel_span(parent: TraceContext | None, ours: TraceContext) -> TraceContext:
    """Start the request's OpenTelemetry span; the ids to pass on (its own if recorded)."""
    if otel_trace is None or otel_context is None:
        return ours
    parent_ctx = otel_context.Context()
    if parent is not None:
        remote = otel_trace.SpanContext(
            int(parent.trace_id, 16),
            int(parent.span_id, 16),
            is_remote=True,
            trace_flags=otel_trace.TraceFlags(parent.flags),
        )
        parent_ctx = otel_trace.set_span_in_context(otel_trace.NonRecordingSpan(remote))
    rule = request.url_rule
    span = otel_trace.get_tracer("services").start_span(
        f"{request.method} {rule.rule if rule is not None else 'unmatched'}",
        context=parent_ctx,
        kind=otel_trace.SpanKind.SERVER,
        attributes={"http.request.method": request.method, "url.path": request.path},
    )
    g.otel_span = span
    g.otel_token = otel_context.attach(otel_trace.set_span_in_context(span))
    if not span.is_recording():
        return ours
    sc = span.get_span_context()
    return TraceContext(f"{sc.trace_id:032x}", f"{sc.span_id:016x}", int(sc.trace_flags) & 1)


def init_tracing(app: Flask) -> None:
    """Continue or start a trace per request and pass it on to every call made."""

    @app.before_request
    def _begin() -> None:
        parent = parse_traceparent(request.headers.get(TRACEPARENT_HEADER))
        ours = parent.child() if parent is not None else new_trace()
        trace = _start_otel_span(parent, ours)
        g.trace = trace
        g.propagation_token = propagation.set_headers(
            {TRACEPARENT_HEADER: trace.traceparent, REQUEST_ID_HEADER: request_id()}
        )

    @app.after_request
    def _status(response: Response) -> Response:
        span: Any = g.get("otel_span")
        if span is not None:
            span.set_attribute("http.response.status_code", response.status_code)
        return response

    @app.teardown_request
    def _end(_exc: BaseException | None) -> None:
        token = g.pop("propagation_token", None)
        if token is not None:
            propagation.reset_headers(token)
        span: Any = g.pop("otel_span", None)
        if span is not None:
            span.end()
        otel_token = g.pop("otel_token", None)
        if otel_token is not None and otel_context is not None:
            otel_context.detach(otel_token)
