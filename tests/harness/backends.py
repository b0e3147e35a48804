"""Real backend processes for tests and benchmarks: tiny Flask app under gunicorn + Consul.

Usage::

    with start_backends(consul_agent, "echo", count=3, delay=0.0) as backends:
        backends[0].control(delay=0.05)          # slow it down at runtime
        backends[1].control(fail=503)             # make `/` answer 503
        backends[2].control(health=500)           # make its HTTP check fail in Consul
        backends[0].kill()                        # kill -9 the process
        backends[0].deregister()                  # remove it from Consul
        [b.register(consul_agent.client()) for b in backends]  # after an agent restart

Each backend is one gunicorn process (1 gthread worker) on a free 127.0.0.1 port running
``create_app()`` below, which answers ``GET``/``POST /`` with ``{"instance": ID}``,
``GET /health`` (200 unless told otherwise), ``POST /_control`` (JSON ``delay`` seconds,
``fail`` status for ``/``, ``origin``: its ``Failure-Origin`` header, e.g. ``dependency``,
``health`` status for ``/health``; 0 or null clears) and
``GET /_stats`` (``{"instance": ID, "requests": N}``). It registers in Consul with an
HTTP check every second (``check="http"``) or a TTL check the test drives with
``set_ttl("passing" | "warning" | "critical")`` (``check="ttl"``). Every process is
stopped by PID when the context exits.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import consul
import requests
from flask import Flask, jsonify, request

from tests.harness.ports import free_port

REPO_ROOT = Path(__file__).resolve().parents[2]


def _new_log_file() -> str:
    with tempfile.NamedTemporaryFile(prefix="backend-", suffix=".log", delete=False) as f:
        return f.name


# -- the app that runs inside each gunicorn process ----------------------------------


def create_app(instance_id: str | None = None) -> Flask:
    """The backend app; ``instance_id`` defaults to ``$BACKEND_ID``."""
    app = Flask("test-backend")
    ident = instance_id or os.environ.get("BACKEND_ID", "backend")
    lock = threading.Lock()
    state: dict[str, Any] = {  # guarded by lock; touched by gunicorn's worker threads
        "delay": float(os.environ.get("BACKEND_DELAY", "0") or 0),
        "fail": 0,
        "origin": "",
        "health": 0,
        "requests": 0,
    }

    @app.route("/", methods=["GET", "POST", "PUT", "DELETE"])
    def root() -> Any:
        with lock:
            state["requests"] += 1
            delay, fail, origin = state["delay"], state["fail"], state["origin"]
        if delay:
            time.sleep(delay)
        if fail:
            headers = {"Failure-Origin": origin} if origin else {}
            return jsonify(instance=ident, error="told to fail"), fail, headers
        return jsonify(instance=ident)

    @app.get("/health")
    def health() -> Any:
        with lock:
            status = state["health"]
        return ("unhealthy", status) if status else ("ok", 200)

    @app.post("/_control")
    def control() -> Any:
        body = request.get_json(force=True) or {}
        with lock:
            for key in ("delay", "fail", "origin", "health"):
                if key in body:
                    state[key] = body[key] or (0 if key != "origin" else "")
            return jsonify({k: state[k] for k in ("delay", "fail", "origin", "health")})

    @app.get("/_stats")
    def stats() -> Any:
        with lock:
            return jsonify(instance=ident, requests=state["requests"])

    return app


# -- the test side --------------------------------------------------------------------


@dataclass
class Backend:
    """One gunicorn process of the backend app; mutable fields owned by the test thread."""

    id: str
    service: str
    port: int
    check: str = "http"
    process: subprocess.Popen[bytes] | None = None  # test thread
    client: consul.Consul | None = None  # test thread: where it is registered
    log_path: Path = field(default_factory=lambda: Path(_new_log_file()))

    @property
    def url(self) -> str:
        """``http://127.0.0.1:PORT``."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def check_id(self) -> str:
        """The id of the Consul check registered with the service."""
        return f"service:{self.id}"

    def start(self, delay: float = 0.0) -> Backend:
        """Start the gunicorn process (does not wait for it; see ``wait_ready``)."""
        env = {**os.environ, "BACKEND_ID": self.id, "BACKEND_DELAY": str(delay)}
        log = open(self.log_path, "ab")  # noqa: SIM115 - handed to the child
        with log:
            self.process = subprocess.Popen(
                [
                    sys.executable, "-m", "gunicorn", "--workers", "1",
                    "--worker-class", "gthread", "--threads", "8",
                    "--bind", f"127.0.0.1:{self.port}", "--graceful-timeout", "2",
                    "--chdir", str(REPO_ROOT), "tests.harness.backends:create_app()",
                ],
                env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            )  # fmt: skip
        return self

    def wait_ready(self, timeout: float = 20.0) -> None:
        """Block until ``/health`` answers (fail with the log tail if the process died)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process is None or self.process.poll() is not None:
                raise RuntimeError(f"backend {self.id} exited; log:\n{self.tail_log()}")
            try:
                if requests.get(f"{self.url}/health", timeout=0.5).status_code < 600:
                    return
            except requests.RequestException:
                time.sleep(0.05)
        raise TimeoutError(f"backend {self.id} not ready after {timeout}s:\n{self.tail_log()}")

    def register(self, client: consul.Consul) -> None:
        """Register in Consul (again, e.g. after an agent restart)."""
        if self.check == "ttl":
            check: dict[str, Any] = {"TTL": "1h", "Status": "passing"}
        else:
            check = {"HTTP": f"{self.url}/health", "Interval": "1s", "Timeout": "1s"}
        client.agent.service.register(
            self.service, service_id=self.id, address="127.0.0.1", port=self.port, check=check
        )
        self.client = client

    def deregister(self) -> None:
        """Remove the instance from Consul."""
        if self.client is not None:
            self.client.agent.service.deregister(self.id)

    def set_ttl(self, status: str) -> None:
        """Drive a TTL check: ``passing``, ``warning`` or ``critical``."""
        assert self.client is not None and self.check == "ttl", "register with check='ttl'"
        {
            "passing": self.client.agent.check.ttl_pass,
            "warning": self.client.agent.check.ttl_warn,
            "critical": self.client.agent.check.ttl_fail,
        }[status](self.check_id)

    def control(self, **settings: float | int | str | None) -> Mapping[str, Any]:
        """Change ``delay``/``fail``/``origin``/``health`` of the running process."""
        response = requests.post(f"{self.url}/_control", json=settings, timeout=5)
        response.raise_for_status()
        return response.json()

    def request_count(self) -> int:
        """How many calls ``/`` has served."""
        return int(requests.get(f"{self.url}/_stats", timeout=5).json()["requests"])

    def kill(self, sig: int = signal.SIGKILL) -> None:
        """Signal the whole process group (master and worker); default kill -9."""
        if self.process is not None and self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, sig)
            self.process.wait(timeout=10)

    def stop(self) -> None:
        """SIGTERM by PID, SIGKILL if it lingers; remove the log."""
        if self.process is not None and self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.kill()
        self.log_path.unlink(missing_ok=True)

    def tail_log(self, lines: int = 30) -> str:
        """The last lines of the gunicorn log."""
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"


class SlowDown:
    """Slows down, on ``switch()``, the busiest of ``backends``: the one that served the
    most calls since this was made.

    A drill that slows a fixed instance measures nothing when a load-aware picker had
    stopped calling that one before the switch (with power-of-two-choices the highest
    estimate of three is never picked until it decays); the busiest one is being called.
    """

    def __init__(self, backends: Sequence[Backend], delay: float) -> None:
        self.backends = backends
        self.delay = delay
        self.before = {b.id: b.request_count() for b in backends}
        self.backend: Backend | None = None  # set by switch() (often on a timer's thread)

    def switch(self) -> None:
        """Give the busiest backend ``delay``."""
        served = {b.id: b.request_count() - self.before[b.id] for b in self.backends}
        busiest = max(self.backends, key=lambda b: served[b.id])
        busiest.control(delay=self.delay)
        self.backend = busiest


def wait_until_passing(client: consul.Consul, service: str, count: int, timeout: float = 15.0):
    """Block until Consul reports ``count`` passing instances of ``service``."""
    deadline = time.monotonic() + timeout
    passing: list[Any] = []
    while time.monotonic() < deadline:
        _, passing = client.health.service(service, passing=True)
        if len(passing) == count:
            return
        time.sleep(0.05)
    raise TimeoutError(f"{service}: {len(passing)} passing, wanted {count} after {timeout}s")


@contextlib.contextmanager
def start_backends(
    consul_agent: Any, service: str, count: int, delay: float = 0.0, check: str = "http"
) -> Iterator[list[Backend]]:
    """Start ``count`` backends of ``service``, register them, wait until all pass."""
    backends = [
        Backend(id=f"{service}-{n}", service=service, port=free_port(), check=check)
        for n in range(count)
    ]
    try:
        for backend in backends:
            backend.start(delay)
        client = consul_agent.client()
        for backend in backends:
            backend.wait_ready()
            backend.register(client)
        wait_until_passing(client, service, count)
        yield backends
    finally:
        for backend in backends:
            backend.stop()
