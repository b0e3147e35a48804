"""Headers every call made on behalf of one incoming request carries (trace context).

A service sets them once per request it handles (``services.common.tracing`` sets the
W3C ``traceparent`` and the ``X-Request-Id``) with :func:`propagating`; the client adds
each one the caller did not set itself to every attempt it sends. The value lives in a
ContextVar, so it follows the request's thread (or task) and never leaks to another.

With nothing set here and the OpenTelemetry API installed, the client injects the
current OpenTelemetry context instead (its configured propagator; none without an SDK).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, MutableMapping
from contextlib import contextmanager
from contextvars import ContextVar, Token
from types import ModuleType

_headers: ContextVar[Mapping[str, str] | None] = ContextVar("propagated_headers", default=None)

try:
    from opentelemetry import context as _otel_context
    from opentelemetry import propagate as _otel_propagate
except ImportError:  # the API is optional
    _otel_propagate: ModuleType | None = None  # type: ignore[no-redef]
    _otel_context: ModuleType | None = None  # type: ignore[no-redef]


def _otel_current() -> Callable[[], object] | None:
    """What reads OpenTelemetry's current context (None without the API): the ContextVar
    its default runtime context keeps it in, read directly (every call asks, and the
    API's two calls to reach it cost more than the read), else ``get_current``."""
    if _otel_context is None:
        return None
    runtime = getattr(_otel_context, "_RUNTIME_CONTEXT", None)
    var = getattr(runtime, "_current_context", None)
    return var.get if isinstance(var, ContextVar) else _otel_context.get_current


_otel_get_current = _otel_current()


def set_headers(headers: Mapping[str, str] | None) -> Token[Mapping[str, str] | None]:
    """Make ``headers`` the current context's propagated headers; returns a reset token."""
    return _headers.set(dict(headers) if headers else None)


def reset_headers(token: Token[Mapping[str, str] | None]) -> None:
    """Restore what was propagated before ``set_headers`` returned ``token``."""
    _headers.reset(token)


@contextmanager
def propagating(headers: Mapping[str, str]) -> Iterator[None]:
    """Within the block, every call carries ``headers`` (unless it sets them itself)."""
    token = set_headers(headers)
    try:
        yield
    finally:
        reset_headers(token)


def current_headers() -> Mapping[str, str]:
    """The headers propagated in the current context (empty when none)."""
    return _headers.get() or {}


def inject(headers: MutableMapping[str, str]) -> None:
    """Add the current context's propagated headers that ``headers`` does not have yet."""
    current = _headers.get()
    if current:
        for name, value in current.items():
            if name not in headers:  # a requests CaseInsensitiveDict: any spelling
                headers[name] = value
    elif (
        _otel_get_current is not None
        and _otel_propagate is not None
        # An empty OpenTelemetry context holds no span and no baggage: nothing to inject
        # (and asking the propagators costs more than the rest of a call's overhead).
        and _otel_get_current()
        and "traceparent" not in headers
    ):
        _otel_propagate.inject(headers)
