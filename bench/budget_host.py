"""One application on the host, as ``conn_budget`` starts N of them: a master that forks
W worker processes, as gunicorn does.

    python -m bench.budget_host MODE WORKERS SERVICES ADDRESS CA_FILE WAIT RESOLVE_TIMEOUT

MODE:

- ``per_worker_http1`` (before part 2): each worker's own ``ConsulSource`` (no relay)
  over plain HTTP: one connection per watch per worker.
- ``relay_h2`` (the design): the master runs the relay (``start_master_relay``, as the
  registry's gunicorn hook does) over HTTPS, so one HTTP/2 connection for the whole
  application; each worker's ``ConsulSource`` finds it in the environment and asks it.
- ``relay_http1``: the same relay over plain HTTP (one connection per watched service).

Protocol with the parent, one JSON object per line on stdout: each worker prints
``{"ready": ...}`` once every service resolved (or failed to), ``{"seen": [worker,
service, monotonic time, ids]}`` for every set its listener receives, and after the
master got ``stop`` on stdin, ``{"final": ...}`` (its watch requests and errors, log
records by level, stale sets); the master prints ``{"process": [service, time, ids]}``
for every set its own watch publishes (relay modes) and its own ``final``.
CLOCK_MONOTONIC is one clock for every process of the host, so the parent can subtract.
"""

from __future__ import annotations

import collections
import json
import logging
import os
import signal
import sys
import threading
import time
from typing import Any

from consul_discovery.client import ConsulSource, Resolution
from consul_discovery.client.relay import start_master_relay

_print_lock = threading.Lock()


def emit(obj: dict[str, Any]) -> None:
    """One line to the parent (any thread; a line under PIPE_BUF is written whole)."""
    line = json.dumps(obj) + "\n"
    with _print_lock:
        os.write(1, line.encode())


class LogCounter(logging.Handler):
    """Counts the library's log records by level (the 'log storm' figure)."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.counts: collections.Counter[str] = collections.Counter()  # any thread
        self.samples: list[str] = []  # any thread; first few warnings

    def emit(self, record: logging.LogRecord) -> None:
        """Count the record; keep the first warnings' text."""
        self.counts[record.levelname] += 1
        if record.levelno >= logging.WARNING and len(self.samples) < 3:
            self.samples.append(record.getMessage()[:200])


def watch(source: ConsulSource, services: list[str], timeout: float) -> dict[str, int]:
    """Resolve every service at once (a thread each); outcomes by kind."""
    outcomes: collections.Counter[str] = collections.Counter()

    def resolve(service: str) -> None:
        try:
            source.resolve(service, timeout=timeout)
            outcomes["ok"] += 1
        except Exception as exc:  # counted by kind: the point is what callers get
            outcomes[f"{type(exc).__name__}: {str(exc)[-60:]}"] += 1

    threads = [threading.Thread(target=resolve, args=(s,), daemon=True) for s in services]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout + 10)
    return dict(outcomes)


def final(source: ConsulSource, services: list[str], counter: LogCounter, stale: int) -> dict:
    """A process's closing figures."""
    stats = [source.watch_stats(name) for name in services]
    return {
        "requests": sum(s.requests for s in stats if s is not None),
        "errors": sum(s.errors for s in stats if s is not None),
        "rate_limited": sum(s.rate_limited for s in stats if s is not None),
        "logs": dict(counter.counts),
        "stale_sets": stale,
        "samples": counter.samples,
    }


def worker(number: int, services: list[str], wait: float, relay: bool, timeout: float) -> None:
    """A forked worker: watch (through the relay or not), report sets, then its final."""
    counter = LogCounter()
    logging.getLogger("consul_discovery").addHandler(counter)
    stale = collections.Counter()  # loop thread increments
    done = threading.Event()
    signal.signal(signal.SIGUSR1, lambda *_: done.set())
    source = ConsulSource(wait=wait, relay=None if relay else False)

    def on_set(resolution: Resolution) -> None:
        if resolution.stale:
            stale["sets"] += 1
        ids = sorted(i.id for i in resolution.instances)
        emit({"seen": [number, resolution.service, time.monotonic(), ids]})

    for service in services:
        source.subscribe(service, on_set)
    outcomes = watch(source, services, timeout)
    emit({"ready": outcomes, "worker": number, "relayed": source.relayed})
    done.wait(600)
    emit({"final": final(source, services, counter, stale["sets"])})
    os._exit(0)


def main(argv: list[str]) -> int:
    """Run one application until ``stop`` arrives on stdin."""
    mode, workers, names, address, ca_file, wait, resolve_timeout = argv
    services, wait_s, timeout = names.split(","), float(wait), float(resolve_timeout)
    os.environ["CONSUL_HTTP_ADDR"] = address
    if ca_file != "-":
        os.environ["CONSUL_CACERT"] = ca_file
    counter = LogCounter()
    logging.getLogger("consul_discovery").addHandler(counter)
    logging.getLogger("consul_discovery").setLevel(logging.INFO)
    relay = start_master_relay(directory=None) if mode.startswith("relay") else None
    if relay is not None:
        for service in services:
            relay.source.subscribe(
                service,
                lambda r: emit(
                    {"process": [r.service, time.monotonic(), sorted(i.id for i in r.instances)]}
                ),
            )
    pids = []
    for number in range(int(workers)):
        pid = os.fork()
        if pid == 0:
            worker(number, services, wait_s, relay is not None, timeout)
        pids.append(pid)
    sys.stdin.readline()  # "stop" (or EOF: the parent went away)
    for pid in pids:
        os.kill(pid, signal.SIGUSR1)
    for pid in pids:
        os.waitpid(pid, 0)
    if relay is not None:
        emit({"final": final(relay.source, services, counter, 0), "master": True})
        relay.close()
    else:
        emit({"final": {"requests": 0, "errors": 0, "rate_limited": 0, "logs": {},
                        "stale_sets": 0, "samples": []}, "master": True})  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
