"""One application process on the host, as ``conn_budget`` starts N of them.

    python -m bench.budget_host MODE WORKERS SERVICES HTTP_ADDR HTTPS_URL CA_FILE WAIT

A stand-in, lighter than a gunicorn master with WORKERS worker processes: the workers
are threads of this process, but each one holds exactly what a gunicorn worker holds
today, so the agent sees the same connections from the same address. MODE:

- ``per_worker_http1`` (today): each worker has its own ``ConsulSource`` (its own
  requests Session), one watch thread and one long poll per service, plain HTTP.
- ``per_worker_h2``: each worker has its own ``H2Source`` (one HTTP/2 connection).
- ``shared_http1``: one ``ConsulSource`` for the process; a ``Relay`` hands each new
  set to the workers over a socket each.
- ``shared_h2``: one ``H2Source`` for the process, relayed the same way.

Protocol with the parent, one JSON object per line on stdout: ``{"ready": ...}`` once
every worker resolved every service (or failed to), ``{"seen": ...}`` for every set a
worker receives (worker, service, monotonic time, instance ids, when the process's
watch had it), and ``{"final": ...}``
(watch requests and errors, log records by level, stale sets) after ``stop`` on stdin.
CLOCK_MONOTONIC is one clock for every process of the host, so the parent can subtract.
"""

from __future__ import annotations

import collections
import json
import logging
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

from bench.h2_watch import H2Source, Relay
from consul_discovery.client import ConsulSource, Resolution

_print_lock = threading.Lock()


def emit(obj: dict[str, Any]) -> None:
    """One line to the parent (any thread)."""
    line = json.dumps(obj)
    with _print_lock:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()


class LogCounter(logging.Handler):
    """Counts the library's log records by level (the 'log storm' figure)."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.counts: collections.Counter[str] = collections.Counter()  # any thread; Counter
        self.samples: list[str] = []  # any thread; first few warnings

    def emit(self, record: logging.LogRecord) -> None:
        """Count the record; keep the first warnings' text."""
        self.counts[record.levelname] += 1
        if record.levelno >= logging.WARNING and len(self.samples) < 3:
            self.samples.append(record.getMessage()[:200])


def main(argv: list[str]) -> int:
    """Run one stand-in process until ``stop`` arrives on stdin."""
    mode, workers, names, http_addr, https_url, ca_file, wait = argv
    n_workers, services, wait_s = int(workers), names.split(","), float(wait)
    counter = LogCounter()
    logging.getLogger("consul_discovery").addHandler(counter)
    logging.getLogger("consul_discovery").setLevel(logging.INFO)
    stale = collections.Counter()  # worker threads; Counter increments

    def seen(worker: int, service: str, ids: frozenset[str], published: float) -> None:
        # published: when the process's own watch had the set (before any relay hop)
        emit({"seen": [worker, service, time.monotonic(), sorted(ids), published]})

    def listener(worker: int) -> Callable[[Resolution], None]:
        def on_set(res: Resolution) -> None:
            if res.stale:
                stale[worker] += 1
            seen(worker, res.service, frozenset(i.id for i in res.instances), time.monotonic())

        return on_set

    def make_source() -> Any:
        if mode.endswith("h2"):
            return H2Source(https_url, ca_file, wait=wait_s)
        return ConsulSource(http_addr, wait=wait_s)

    sources: list[Any] = []
    outcomes: collections.Counter[str] = collections.Counter()
    if mode.startswith("per_worker"):
        sources = [make_source() for _ in range(n_workers)]
        for worker, source in enumerate(sources):
            for service in services:
                source.subscribe(service, listener(worker))
    else:
        relay = Relay(n_workers, seen)
        sources = [make_source()]
        for service in services:
            sources[0].subscribe(service, relay.publish)
    pending = [(s, name) for s in sources for name in services]
    resolving = [
        threading.Thread(target=_resolve, args=(s, name, outcomes), daemon=True)
        for s, name in pending
    ]
    for thread in resolving:
        thread.start()
    for thread in resolving:
        thread.join(30)
    emit({"ready": dict(outcomes), "samples": counter.samples})
    sys.stdin.readline()  # "stop" (or EOF: the parent went away)
    stats = [s.watch_stats(name) for s in sources for name in services]
    emit(
        {
            "final": {
                "requests": sum(st.get("requests", 0) for st in stats),
                "errors": sum(st.get("errors", 0) for st in stats),
                "logs": dict(counter.counts),
                "stale_sets": sum(stale.values()),
                "samples": counter.samples,
            }
        }
    )
    return 0


def _resolve(source: Any, service: str, outcomes: collections.Counter[str]) -> None:
    try:
        source.resolve(service, timeout=20.0)
        outcomes["ok"] += 1
    except Exception as exc:  # counted by kind: the point is what callers get
        outcomes[f"{type(exc).__name__}: {str(exc)[-60:]}"] += 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
