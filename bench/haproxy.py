"""HAProxy (Debian package) as the proxy baseline, configured from haproxy.cfg.template."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from string import Template

import requests

from bench.env import sigint_deferred
from tests.harness.ports import free_port

TEMPLATE = Path(__file__).with_name("haproxy.cfg.template")
HAPROXY_BIN = os.environ.get("HAPROXY_BIN", "/usr/sbin/haproxy")


class HAProxyMissing(RuntimeError):
    """HAProxy is not installed; the message says how to install it."""


def haproxy_binary() -> str:
    """The HAProxy binary to run, or HAProxyMissing saying how to get one."""
    path = HAPROXY_BIN if os.access(HAPROXY_BIN, os.X_OK) else shutil.which("haproxy")
    if not path:
        raise HAProxyMissing(
            f"HAProxy not found at {HAPROXY_BIN} or on PATH. Fix: `apt-get install haproxy` "
            "(Debian; .ci/run does this) or set HAPROXY_BIN."
        )
    return path


def render_config(*, dns_port: int, listen_port: int, service: str, slots: int, balance: str):
    """The HAProxy config text for one service behind one frontend."""
    return Template(TEMPLATE.read_text()).substitute(
        dns_port=dns_port,
        listen_port=listen_port,
        service=service,
        slots=slots,
        balance=balance,
    )


@contextlib.contextmanager
def run_haproxy(
    dns_port: int,
    service: str,
    expect: set[str],
    balance: str = "roundrobin",
    timeout: float = 20.0,
) -> Iterator[str]:
    """Start HAProxy for ``service``; yield its URL once every id in ``expect`` answered.

    The backends answer ``{"instance": ID}``; HAProxy is ready when all of ``expect`` have
    been reached through it (it has resolved every SRV record). Stopped by PID on exit.
    """
    binary = haproxy_binary()
    workdir = Path(tempfile.mkdtemp(prefix="bench-haproxy-"))
    port = free_port()
    config = workdir / "haproxy.cfg"
    config.write_text(
        render_config(
            dns_port=dns_port,
            listen_port=port,
            service=service,
            slots=len(expect),
            balance=balance,
        )
    )
    log_path = workdir / "haproxy.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [binary, "-db", "-f", str(config)],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    url = f"http://127.0.0.1:{port}/"
    try:
        _wait_routed(process, url, expect, timeout, log_path)
        yield url
    finally:
        with sigint_deferred():
            if process.poll() is None:
                os.kill(process.pid, signal.SIGTERM)
                try:
                    process.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    os.kill(process.pid, signal.SIGKILL)
                    process.wait(timeout=5)
            shutil.rmtree(workdir, ignore_errors=True)


def _wait_routed(
    process: subprocess.Popen[bytes], url: str, expect: set[str], timeout: float, log: Path
) -> None:
    seen: set[str] = set()
    deadline = time.monotonic() + timeout
    with requests.Session() as session:
        session.trust_env = False
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise RuntimeError(f"haproxy exited with {process.returncode}:\n{log.read_text()}")
            try:
                response = session.get(url, timeout=1)
                if response.ok:
                    seen.add(response.json()["instance"])
                    if expect <= seen:
                        return
                    continue
            except (requests.RequestException, ValueError, KeyError):
                pass
            time.sleep(0.05)
    raise TimeoutError(
        f"haproxy reached {sorted(seen)} of {sorted(expect)} in {timeout}s:\n{log.read_text()}"
    )
