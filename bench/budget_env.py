"""The host of ``conn_budget``: stand-in processes, connection counts, operator calls.

Everything the host's processes do comes from 127.0.0.1; the bench's own calls (check
flips, the raw long polls that time Consul's side) come from ``OPERATOR_IP``, another
loopback address, so that they neither count towards nor fall under the host's budget.
Every stand-in process is stopped by PID.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.env import sigint_deferred
from tests.harness.tls_agent import TlsDevAgent

REPO_ROOT = Path(__file__).resolve().parents[1]


@dataclass
class Host:
    """The applications of one row and what they report (reader threads append, under
    ``cond``): workers' ``ready`` lines and ``seen`` sets, masters' ``process`` sets (the
    application's own watch had it), everyone's ``final``."""

    procs: list[subprocess.Popen[str]] = field(default_factory=list)  # main thread
    ready: list[dict[str, Any]] = field(default_factory=list)
    final: list[dict[str, Any]] = field(default_factory=list)
    seen: list[tuple[int, int, str, float, frozenset[str]]] = field(default_factory=list)
    process: list[tuple[int, str, float, frozenset[str]]] = field(default_factory=list)
    cond: threading.Condition = field(default_factory=threading.Condition)

    def read(self, proc_no: int, proc: subprocess.Popen[str]) -> None:
        """Reader thread: parse one application's lines into the lists above."""
        assert proc.stdout is not None
        for line in proc.stdout:
            try:
                msg = json.loads(line)
            except ValueError:
                continue
            with self.cond:
                if "seen" in msg:
                    worker, service, t, ids = msg["seen"]
                    self.seen.append((proc_no, worker, service, t, frozenset(ids)))
                elif "process" in msg:
                    service, t, ids = msg["process"]
                    self.process.append((proc_no, service, t, frozenset(ids)))
                elif "ready" in msg:
                    self.ready.append(msg)
                elif "final" in msg:
                    self.final.append(msg["final"])
                self.cond.notify_all()


@contextlib.contextmanager
def stand_ins(
    agent: TlsDevAgent,
    mode: str,
    n: int,
    workers: int,
    names: list[str],
    wait: float,
    resolve_timeout: float = 20.0,
):
    """Start ``n`` budget_host applications (a master and its forked workers each); stop
    every one: ``stop`` on stdin, then kill by PID (the workers are the masters' own
    children, each waited for by its master, and in its process group)."""
    host = Host()
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONSUL_")}
    env.update(PYTHONPATH=str(REPO_ROOT))
    env.pop("CONSUL_DISCOVERY_RELAY", None)
    tls = mode.endswith("h2")
    address = agent.https_url if tls else agent.address
    args = [mode, str(workers), ",".join(names), address, str(agent.ca_file) if tls else "-"]
    args += [str(wait), str(resolve_timeout)]
    try:
        for k in range(n):
            proc = subprocess.Popen(
                [sys.executable, "-m", "bench.budget_host", *args],
                cwd=REPO_ROOT, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL, text=True, start_new_session=True,
            )  # fmt: skip
            host.procs.append(proc)
            threading.Thread(target=host.read, args=(k, proc), daemon=True).start()
        yield host
    finally:
        with sigint_deferred():
            for proc in host.procs:
                with contextlib.suppress(OSError):
                    proc.stdin.write("stop\n")  # type: ignore[union-attr]
                    proc.stdin.flush()  # type: ignore[union-attr]
            expected = len(host.procs) * (workers + 1)
            with host.cond:
                host.cond.wait_for(lambda: len(host.final) >= expected, timeout=30)
            for proc in host.procs:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)  # the master and its workers
                proc.wait(timeout=10)


OPERATOR_IP = "127.0.0.2"


def established(*ports: int) -> int:
    """Agent-side established TCP connections from the host (127.0.0.1) on ``ports``."""
    total = 0
    for port in ports:
        out = subprocess.run(
            ["ss", "-tnH", "state", "established", f"( sport = :{port} ) and dst 127.0.0.1"],
            capture_output=True, text=True, check=True,
        ).stdout  # fmt: skip
        total += len(out.splitlines())
    return total


def agent_call(agent: TlsDevAgent, method: str, path: str, source: str) -> int:
    """One agent API call from ``source`` on a fresh connection; the HTTP status."""
    conn = http.client.HTTPConnection("127.0.0.1", agent.ports.http, 30, (source, 0))
    try:
        conn.request(method, path)
        return conn.getresponse().status
    finally:
        conn.close()


def raw_poll(agent: TlsDevAgent, service: str, answered: list[float]) -> threading.Thread:
    """A blocking query on ``service`` from the operator's address, parked before it
    returns; appends the time its answer's headers arrive (Consul's side of a flip)."""
    conn = http.client.HTTPConnection("127.0.0.1", agent.ports.http, 30, (OPERATOR_IP, 0))
    conn.request("GET", f"/v1/health/service/{service}")
    first = conn.getresponse()
    first.read()
    index = first.getheader("X-Consul-Index")

    def run() -> None:
        try:
            conn.request("GET", f"/v1/health/service/{service}?index={index}&wait=20s")
            response = conn.getresponse()
            answered.append(time.monotonic())
            response.read()
        finally:
            conn.close()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    time.sleep(0.01)  # parked in its wait before the flip
    return thread
