"""A WSGI app for relay tests: each gunicorn worker watches RELAY_APP_SERVICES and says
what it saw (its pid, whether the master's relay serves it, each service's instance ids,
watch counters, and every set its listener received with the monotonic time)."""

from __future__ import annotations

import faulthandler
import json
import logging
import os
import signal
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

from consul_discovery.client.consul_source import ConsulSource
from consul_discovery.client.instance import Resolution


def create_app() -> Callable[..., Iterable[bytes]]:
    """The app: ``GET /seen`` (JSON), anything else 200 (the health check)."""
    logging.basicConfig(level=logging.INFO, format="%(process)d %(name)s %(message)s")
    # A test that finds a worker hung sends SIGUSR1: every thread's stack goes to the log.
    faulthandler.register(signal.SIGUSR1, all_threads=True)
    services = [s for s in os.environ.get("RELAY_APP_SERVICES", "").split(",") if s]
    source = ConsulSource()
    lock = threading.Lock()
    history: dict[str, list[tuple[float, list[str]]]] = {s: [] for s in services}

    def listener(resolution: Resolution) -> None:
        with lock:
            ids = sorted(i.id for i in resolution.instances)
            history[resolution.service].append((time.monotonic(), ids))

    for service in services:
        source.resolve(service, timeout=10)
        source.subscribe(service, listener)

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        if environ.get("PATH_INFO") != "/seen":
            start_response("200 OK", [("Content-Type", "text/plain")])
            return [b"ok"]
        with lock:
            body = {
                "pid": os.getpid(),
                "relayed": source.relayed,
                "current": {
                    s: sorted(i.id for i in (source.cached(s) or Resolution(s, (), 0, 0)).instances)
                    for s in services
                },
                "stats": {s: list(vars_of(source.watch_stats(s))) for s in services},
                "history": history,
            }
        data = json.dumps(body).encode()
        start_response("200 OK", [("Content-Type", "application/json")])
        return [data]

    return app


def vars_of(stats: Any) -> tuple[int, ...]:
    """A WatchStats as (requests, errors, index, rate_limited); () if none."""
    if stats is None:
        return ()
    return (stats.requests, stats.errors, stats.index, stats.rate_limited)
