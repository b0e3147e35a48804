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
    """The stand-in processes of one row and what they report (reader threads append)."""

    procs: list[subprocess.Popen[str]] = field(default_factory=list)  # main thread
    ready: list[dict[str, Any]] = field(default_factory=list)  # reader threads, under cond
    final: list[dict[str, Any]] = field(default_factory=list)  # reader threads, under cond
    seen: list[tuple[int, int, str, float, frozenset[str], float]] = field(default_factory=list)
    cond: threading.Condition = field(default_factory=threading.Condition)

    def read(self, proc_no: int, proc: subprocess.Popen[str]) -> None:
        """Reader thread: parse one process's lines into the lists above."""
        assert proc.stdout is not None
        for line in proc.stdout:
            try:
                msg = json.loads(line)
            except ValueError:
                continue
            with self.cond:
                if "seen" in msg:
                    worker, service, t, ids, published = msg["seen"]
                    self.seen.append((proc_no, worker, service, t, frozenset(ids), published))
                elif "ready" in msg:
                    self.ready.append(msg)
                elif "final" in msg:
                    self.final.append(msg["final"])
                self.cond.notify_all()


@contextlib.contextmanager
def stand_ins(agent: TlsDevAgent, mode: str, n: int, workers: int, names: list[str], wait: float):
    """Start ``n`` budget_host processes; stop every one by PID afterwards."""
    host = Host()
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    args = [mode, str(workers), ",".join(names), agent.address, agent.https_url]
    args += [str(agent.ca_file), str(wait)]
    try:
        for k in range(n):
            proc = subprocess.Popen(
                [sys.executable, "-m", "bench.budget_host", *args],
                cwd=REPO_ROOT, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL, text=True,
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
            with host.cond:
                host.cond.wait_for(lambda: len(host.final) >= len(host.procs), timeout=10)
            for proc in host.procs:
                proc.kill()
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
