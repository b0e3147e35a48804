"""RED metrics of every request a service answers, and ``GET /metrics`` to scrape them.

The core knows no web framework: ``RequestMetrics.observe(route, method, status,
seconds)`` records one answered request. ``init_metrics(app)`` is the Flask hook (it
times each request and serves ``/metrics``); an ASGI middleware records through the
same ``observe`` and serves the same ``render()``.

Series (Prometheus conventions: base units, ``_total``, bounded labels):

* ``http_server_requests_total{route, method, status}``
* ``http_server_request_duration_seconds{route, method, status}`` (histogram)

``route`` is the route template (``/users/<int:user_id>``), never the raw path; a
request no route matched is ``unmatched``. ``method`` outside the standard set is
``OTHER``. Which service and instance answered are Prometheus' target labels.

Under gunicorn, ``PROMETHEUS_MULTIPROC_DIR`` (one directory per instance, emptied by
the master at start: ``consul_discovery.registry.gunicorn_conf``) makes every worker
write its series to
files that ``render()`` merges: counters and histograms are summed over every worker
that ever ran, so restarting a worker neither resets nor doubles them. Hooks added with
``before_render`` run first (the discovery client publishes its counts through one).
"""

from __future__ import annotations

import functools
import logging
import re
import threading
import time
from collections.abc import Callable

from flask import Flask, Response, g, request
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)
from prometheus_client.multiprocess import MultiProcessCollector

from consul_discovery.registry.metrics import multiprocess_dir
from services.common.openapi import operation

log = logging.getLogger("services.metrics")

METRICS_PATH = "/metrics"
UNMATCHED_ROUTE = "unmatched"
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
#: Seconds; from a cached read (~1 ms) to a request that used up its retries (10 s).
DURATION_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_LABELS = ("route", "method", "status")

_hooks_lock = threading.Lock()
_hooks: list[Callable[[], None]] = []  # guarded by _hooks_lock; run by render()


class RequestMetrics:
    """Records answered requests as RED series in one registry (one instance per registry)."""

    def __init__(self, registry: CollectorRegistry = REGISTRY) -> None:
        self.requests = Counter(
            "http_server_requests",
            "Requests answered, by route template, method and status",
            _LABELS,
            registry=registry,
        )
        self.duration = Histogram(
            "http_server_request_duration_seconds",
            "Time from receiving a request to having its answer, in seconds",
            _LABELS,
            buckets=DURATION_BUCKETS,
            registry=registry,
        )

    def observe(self, route: str | None, method: str, status: int, seconds: float) -> None:
        """Record one answered request (``route`` None: no route matched)."""
        labels = (
            route or UNMATCHED_ROUTE,
            method if method in METHODS else "OTHER",
            str(status),
        )
        self.requests.labels(*labels).inc()
        self.duration.labels(*labels).observe(max(seconds, 0.0))


@functools.cache
def request_metrics(registry: CollectorRegistry = REGISTRY) -> RequestMetrics:
    """The process's RequestMetrics for ``registry`` (a registry takes each name once)."""
    return RequestMetrics(registry)


def before_render(hook: Callable[[], None]) -> None:
    """Run ``hook`` before each ``render()`` (e.g. to publish counts kept elsewhere)."""
    with _hooks_lock:
        _hooks.append(hook)


def remove_before_render(hook: Callable[[], None]) -> None:
    """Undo ``before_render(hook)`` (no-op if it was not added)."""
    with _hooks_lock:
        if hook in _hooks:
            _hooks.remove(hook)


def render(registry: CollectorRegistry = REGISTRY) -> tuple[bytes, str]:
    """The Prometheus text exposition and its content type.

    In multiprocess mode it merges every process's files (``registry`` is then unused:
    each metric's values live in the files, whatever registry it was created in).
    """
    with _hooks_lock:
        hooks = list(_hooks)
    for hook in hooks:
        try:
            hook()
        except Exception:  # one broken publisher must not cost the whole scrape
            log.exception("metrics: a before_render hook failed")
    path = multiprocess_dir()
    if path is not None:
        merged = CollectorRegistry()
        MultiProcessCollector(merged, path=str(path))
        registry = merged
    return generate_latest(registry), CONTENT_TYPE_LATEST


_CONVERTER_ARGS = re.compile(r"<(\w+)\([^)]*\):")


def route_label(rule: str) -> str:
    """A Flask rule as a label: converter arguments dropped (``<int(max=9):id>`` is
    ``<int:id>``), so the label reads like the route and stays the same if they change."""
    return _CONVERTER_ARGS.sub(r"<\1:", rule)


def label_route(route: str) -> None:
    """Record the current request under ``route`` instead of its Flask rule (a relay
    such as the gateway, whose one catch-all rule serves every public route)."""
    g.metrics_route = route


def init_metrics(app: Flask, metrics: RequestMetrics | None = None) -> None:
    """Record every request ``app`` answers and serve ``GET /metrics``."""
    recorder = metrics or request_metrics()

    @app.before_request
    def _start_timer() -> None:
        g.metrics_started = time.perf_counter()

    @app.after_request
    def _record(response: Response) -> Response:
        started = g.get("metrics_started")
        if started is not None:
            rule = request.url_rule
            route = g.get("metrics_route") or (route_label(rule.rule) if rule else None)
            recorder.observe(
                route,
                request.method,
                response.status_code,
                time.perf_counter() - started,
            )
        return response

    @operation(
        "Prometheus metrics of this instance (text exposition format)",
        responses={200: "Prometheus text format"},
        media_type="text/plain",
        response_schema={"type": "string"},
    )
    def metrics_view() -> Response:
        body, content_type = render()
        return Response(body, status=200, content_type=content_type)

    app.add_url_rule(METRICS_PATH, "metrics", metrics_view, methods=["GET"])
