"""Registry test helpers: gunicorn/dev-server processes of tests.registry.apps, and
Consul-side views of one instance's health."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import consul
import pytest
import requests

from tests.harness.ports import free_port

REPO_ROOT = Path(__file__).resolve().parents[2]


def wait_until(predicate: Callable[[], Any], timeout: float, interval: float = 0.1) -> Any:
    """Poll ``predicate`` until truthy; return its value, or raise TimeoutError."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise TimeoutError(f"condition not met within {timeout}s")
        time.sleep(interval)


@dataclass
class ServiceProcess:
    """One instance of the test app in its own process group; stopped by PID."""

    port: int
    env: dict[str, str]
    log_path: Path
    process: subprocess.Popen[bytes] | None = None  # owned by the test thread
    _log: Any = field(default=None, repr=False)

    @property
    def url(self) -> str:
        """Base URL of the instance."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def service_id(self) -> str:
        """The instance id the test set."""
        return self.env["SERVICE_ID"]

    @property
    def pid(self) -> int:
        """The (master) process id."""
        assert self.process is not None
        return self.process.pid

    def answers(self) -> bool:
        """True if GET /hello answers 200 now."""
        try:
            return requests.get(f"{self.url}/hello", timeout=1).status_code == 200
        except requests.RequestException:
            return False

    def signal(self, sig: int) -> None:
        """Send ``sig`` to the master only."""
        if self.process is not None and self.process.poll() is None:
            os.kill(self.process.pid, sig)

    def kill_group(self) -> None:
        """kill -9 the whole process group (master and workers): a crash."""
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(10)

    def wait_exit(self, timeout: float) -> int:
        """Wait for the master to exit; its return code."""
        assert self.process is not None
        return self.process.wait(timeout)

    def log(self) -> str:
        """The instance's combined output so far."""
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return "(no log)"

    def cleanup(self) -> None:
        """Stop every process of the group, by PID/PGID."""
        process = self.process
        if process is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)  # workers too, even if the master is gone
            process.wait(10)
        if self._log is not None:
            self._log.close()
            self._log = None


def service_env(consul_address: str, port: int, **settings: Any) -> dict[str, str]:
    """Env for an instance: SERVICE_* from ``settings`` (lower-case names) on top of ours."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SERVICE_", "CONSUL_"))}
    env.update(
        {
            "PYTHONPATH": str(REPO_ROOT),
            "CONSUL_HTTP_ADDR": consul_address,
            "SERVICE_NAME": "regtest",
            "SERVICE_ID": f"regtest-{port}",
            "SERVICE_PORT": str(port),
            "SERVICE_ADDRESS": "127.0.0.1",
            "SERVICE_CHECK_INTERVAL": "1s",
            "SERVICE_DRAIN_SECONDS": "2",
        }
    )
    env.update({f"SERVICE_{k.upper()}": str(v) for k, v in settings.items()})
    env.pop("REGISTRY_MANAGED_BY", None)
    return env


@pytest.fixture
def start_service(tmp_path: Path) -> Iterator[Callable[..., ServiceProcess]]:
    """Start the test app (``server=`` "gunicorn", "dev" for ``app.run()``, "flask-cli"
    for ``flask run``, "uvicorn" or "gunicorn-uvicorn" for the ASGI apps of
    tests.registry.asgi_apps; ``extra_args`` go after the command's own, so a later
    ``-b``/``--port`` wins); every one is killed after."""
    started: list[ServiceProcess] = []

    def start(
        consul_address: str,
        server: str = "gunicorn",
        extra_env: dict[str, str] | None = None,
        wait: bool = True,
        workers: int = 1,
        app: str | None = None,
        extra_args: list[str] | None = None,
        ignore_sigint: bool = False,
        **settings: Any,
    ) -> ServiceProcess:
        port = free_port()
        env = service_env(consul_address, port, **settings)
        env.update(extra_env or {})
        if server == "gunicorn":
            # its console script: a USR2 re-exec of "python -m gunicorn" runs gunicorn's
            # __main__.py as a script, whose folder then shadows the stdlib's http
            cmd = [
                str(Path(sys.executable).with_name("gunicorn")),
                "-c", "python:consul_discovery.registry.gunicorn_conf",
                "--workers", str(workers), "--threads", "4", "--graceful-timeout", "10",
                "tests.registry.apps:create_app()",
            ]  # fmt: skip
        elif server == "flask-cli":
            cmd = [
                sys.executable, "-m", "flask", "--app", "tests.registry.apps:create_app()",
                "run", "--host", "127.0.0.1", "--port", str(port),
            ]  # fmt: skip
        elif server == "uvicorn":  # FastAPI app, or app="tests.registry.asgi_apps:plain_app"
            cmd = [
                sys.executable, "-m", "uvicorn", app or "tests.registry.asgi_apps:create_app",
                *(["--factory"] if app is None else []),
                "--host", "127.0.0.1", "--port", str(port), "--timeout-graceful-shutdown", "10",
            ]  # fmt: skip
        elif server == "gunicorn-uvicorn":
            cmd = [
                sys.executable, "-m", "gunicorn",
                "-c", "python:consul_discovery.registry.gunicorn_conf",
                "-k", "uvicorn_worker.UvicornWorker",
                "--workers", str(workers), "--graceful-timeout", "10",
                "tests.registry.asgi_apps:create_app()",
            ]  # fmt: skip
        else:
            cmd = [
                sys.executable, "-c",
                "from tests.registry.apps import create_app; "
                f"create_app().run(host='127.0.0.1', port={port})",
            ]  # fmt: skip
        cmd += extra_args or []
        log_path = tmp_path / f"service-{port}.log"
        log = open(log_path, "ab")  # noqa: SIM115 - closed in cleanup()
        svc = ServiceProcess(port=port, env=env, log_path=log_path, _log=log)
        started.append(svc)
        # ignore_sigint: started as a shell's background job or under nohup is (SIGINT
        # ignored, inherited through exec)
        ignore = (lambda: signal.signal(signal.SIGINT, signal.SIG_IGN)) if ignore_sigint else None
        svc.process = subprocess.Popen(
            cmd, cwd=REPO_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True, preexec_fn=ignore,
        )  # fmt: skip
        if wait:
            try:
                wait_until(svc.answers, timeout=20)
            except TimeoutError as exc:
                raise AssertionError(f"service did not come up; log:\n{svc.log()}") from exc
        return svc

    try:
        yield start
    finally:
        for svc in started:
            svc.cleanup()


def instance_status(client: consul.Consul, name: str, service_id: str) -> str | None:
    """Aggregate status of one instance in the catalog: None if absent, else the worst of
    its checks ("passing" < "warning" < "critical"); maintenance counts as critical."""
    _, entries = client.health.service(name)
    for entry in entries:
        if entry["Service"]["ID"] == service_id:
            statuses = {check["Status"] for check in entry["Checks"]}
            for status in ("critical", "warning", "passing"):
                if status in statuses:
                    return status
            return "passing"
    return None


def in_maintenance(client: consul.Consul, name: str, service_id: str) -> bool:
    """True if the instance carries Consul's service maintenance check."""
    _, entries = client.health.service(name)
    for entry in entries:
        if entry["Service"]["ID"] == service_id:
            return any(
                c["CheckID"] == f"_service_maintenance:{service_id}" for c in entry["Checks"]
            )
    return False


def passing_ids(client: consul.Consul, name: str) -> set[str]:
    """Instance ids in the passing set (what a discovery client would be given)."""
    _, entries = client.health.service(name, passing=True)
    return {entry["Service"]["ID"] for entry in entries}
