"""The processes a dead supervisord left running, found by the mark every program inherits.

supervisord puts ``MARK=<run_dir>`` in its own environment (``supervisor_conf.render``), so
each program, and each process a program starts, carries it. When supervisord dies
without stopping them (kill -9, OOM), ``make stop-cluster`` finds them by that mark,
not by name: another cluster, in another run dir, is never touched.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path

from consul_discovery.testing import lifeline
from services.cluster.plan import ClusterPlan

#: The environment variable naming the run dir of the cluster a process belongs to.
MARK = "CONSUL_DISCOVERY_CLUSTER"


def find(plan: ClusterPlan, proc: Path = Path("/proc")) -> list[int]:
    """PIDs of live processes (not this one) carrying ``plan``'s mark, in PID order."""
    return lifeline.carrying(MARK, str(plan.run_dir), proc)


def _is_consul(pid: int) -> bool:
    try:
        argv0 = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0]
    except OSError:
        return False
    return Path(argv0.decode(errors="replace")).name == "consul"


def _signal_all(pids: list[int], sig: signal.Signals) -> None:
    for pid in pids:
        with contextlib.suppress(OSError):
            os.kill(pid, sig)


def _wait_gone(plan: ClusterPlan, pids: list[int], timeout: float) -> list[int]:
    deadline = time.monotonic() + timeout
    while True:
        left = [pid for pid in find(plan) if pid in pids]
        if not left or time.monotonic() >= deadline:
            return left
        time.sleep(0.2)


def stop(plan: ClusterPlan, timeout: float = 30.0, log: Callable[[str], None] = print) -> list[int]:
    """Stop ``plan``'s orphans, by PID: SIGTERM to the instances and Prometheus (they
    drain and deregister while Consul still runs), then to the Consul agents, SIGKILL to
    whatever is left after ``timeout`` each; returns the PIDs found."""
    found = find(plan)
    if not found:
        return []
    log(f"supervisord is gone; stopping the {len(found)} process(es) it left running")
    agents = [pid for pid in found if _is_consul(pid)]
    others = [pid for pid in found if pid not in agents]
    for group in (others, agents):
        _signal_all(group, signal.SIGTERM)
        _signal_all(_wait_gone(plan, group, timeout), signal.SIGKILL)
    _wait_gone(plan, found, timeout)
    return found
