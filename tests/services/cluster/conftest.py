"""A small real cluster (Consul + gunicorn instances under supervisord) on free ports."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from services.cluster import control
from services.cluster.plan import ClusterPlan
from tests.harness.cluster_ports import free_cluster_plan


def free_plan(run_dir: Path, users: int = 2, orders: int = 2, **overrides: object) -> ClusterPlan:
    """A plan whose every port is free right now (service ports are contiguous ranges).

    Prometheus gets a free port and a 1 s scrape interval; every cluster starts it, and
    ``control.up`` fails, saying how to install it, when its binary is missing.
    """
    settings: dict[str, Any] = {
        "scrape_interval": "1s",
        "check_interval": "1s",
        "drain_seconds": 1.0,
        **overrides,
    }
    return free_cluster_plan(
        lambda ports: ClusterPlan(
            run_dir=run_dir, users=users, orders=orders, **{**ports, **settings}
        ),
        "test cluster",
    )


def _live_members(pgid: int) -> list[int]:
    """PIDs in process group ``pgid`` with a thread that has not exited yet.

    Every thread counts, not only the main one: a multi-threaded process's main thread
    shows as a zombie while its other threads are still exiting, and its sockets close
    only when the last of them has gone (seen: a gthread worker's kept-alive connection
    reset *after* the kill was thought done, failing a POST that could not be resent).
    """
    live = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[-1].split()
        except OSError:
            continue
        if int(fields[2]) != pgid:
            continue
        for task in stat.parent.glob("task/[0-9]*/stat"):
            try:
                state = task.read_text().rsplit(")", 1)[-1].split()[0]
            except OSError:
                continue
            if state not in ("Z", "X"):
                live.append(int(stat.parent.name))
                break
    return live


def kill_group_and_wait(pid: int, timeout: float = 10.0) -> None:
    """kill -9 a process group (a gunicorn master and its workers) and wait until it is gone.

    Waiting for every member matters: a request written to a worker that is still dying
    is ambiguous (it may or may not have been handled), and a non-idempotent one is
    rightly not retried. Once all are dead their sockets are closed, and a client's
    pooled connection to them is seen as dropped before it is reused.
    """
    os.killpg(pid, signal.SIGKILL)
    deadline = time.monotonic() + timeout
    while _live_members(pid):
        if time.monotonic() > deadline:
            raise TimeoutError(f"process group {pid} still alive {timeout}s after SIGKILL")
        time.sleep(0.01)


def stop_cluster(plan: ClusterPlan) -> None:
    """Stop the cluster; if a graceful stop fails, kill supervisord's whole tree by PID."""
    try:
        control.down(plan, timeout=60)
    finally:
        control.kill_everything(plan)


@pytest.fixture
def small_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ClusterPlan]:
    """Consul + 1 gateway + 2 user-service + 2 order-service + 2 inventory-service
    instances, all passing."""
    plan = free_plan(tmp_path_factory.mktemp("cluster"), autorestart=False)
    try:
        control.up(plan, timeout=90)
        yield plan
    finally:
        stop_cluster(plan)
