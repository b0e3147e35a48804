"""A master that runs the relay and forks WORKERS plain child processes (not gunicorn's,
which exit with their master), for the relay's fallback test.

    python -m tests.discovery_client.relay_forks WORKERS SERVICE[,SERVICE...]

Consul's settings come from the environment. The master starts the relay, forks the
workers, prints ``{"master": pid, "workers": [...]}`` and sleeps until killed. Each
worker makes a ConsulSource (which finds the relay in the environment), resolves the
services, and prints ``{"pid", "relayed", "current"}`` every time either changes, for at
most two minutes.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time

from consul_discovery.client.consul_source import ConsulSource
from consul_discovery.client.relay import start_master_relay


def worker(services: list[str]) -> None:
    """One child: watch through the relay (or without it once it is gone)."""
    logging.basicConfig(level=logging.INFO, format="%(process)d %(name)s %(message)s")
    source = ConsulSource()
    for service in services:
        source.resolve(service, timeout=10)
    last = None
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        current = {s: sorted(i.id for i in source.resolve(s).instances) for s in services}
        state = {"pid": os.getpid(), "relayed": source.relayed, "current": current}
        if state != last:
            os.write(1, (json.dumps(state) + "\n").encode())  # one write: lines never mix
            last = state
        time.sleep(0.02)
    os._exit(0)


def main(argv: list[str]) -> None:
    """Start the relay, fork the workers, report, then wait to be killed."""
    count, services = int(argv[0]), argv[1].split(",")
    relay = start_master_relay()
    assert relay is not None
    pids = []
    for _ in range(count):
        pid = os.fork()
        if pid == 0:
            worker(services)
        pids.append(pid)
    print(json.dumps({"master": os.getpid(), "workers": pids, "socket": str(relay.path)}))
    sys.stdout.flush()
    time.sleep(120)


if __name__ == "__main__":
    main(sys.argv[1:])
