"""Run a README's steps against a real Consul agent, as a reader would in a project folder.

``DocSession`` owns one work directory (the reader's project: ``file`` blocks land
there, commands run there), one environment (``CONSUL_HTTP_ADDR`` is the test's agent),
and every process it starts: the python runner (one namespace per README), echo
backends, servers of ``serve`` blocks. ``close()`` stops each by PID; a served service
must deregister on SIGTERM, as the README promises.

What runs is the README's text with two substitutions, printed with the results: the
example ports of commands (8001, 8002, ...) become free ports, and ``127.0.0.1:8500``
becomes the test agent's address. A block that fails raises AssertionError naming the
README and line, with the block's output.
"""

from __future__ import annotations

import os
import re
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import requests

from consul_discovery.testing import ConsulAgent, ConsulInstances, free_port
from tests.docs.blocks import Backends, Block, Step, skip_reason
from tests.docs.processes import stop, wait_listening
from tests.docs.python_blocks import PythonBlocks

HERE = Path(__file__).resolve().parent
ECHO = HERE / "echo_backend.py"

#: Ports README commands use for example services; each becomes a free port.
EXAMPLE_PORTS = (8001, 8002, 8003, 8004, 8401, 8402)
_PORT = re.compile(r"(?<![\d.:])(" + "|".join(map(str, EXAMPLE_PORTS)) + r")(?!\d)")
_DEFAULT_AGENT = re.compile(r"(?:127\.0\.0\.1|localhost):8500(?!\d)")
_ASSIGNMENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*=")
_DISTRIBUTION = re.compile(r"(['\"]?)consul-discovery(\[[a-z0-9,_-]*\])?\1")

#: Environment the reader's shell would not have: the test's own, Consul's, the
#: registry's and discovery's settings (each block sets what it needs).
_DROPPED_PREFIXES = (
    "CONSUL_HTTP_", "CONSUL_CACERT", "CONSUL_CAPATH", "CONSUL_CLIENT_", "CONSUL_TLS_",
    "CONSUL_DISCOVERY_", "SERVICE_", "DISCOVERY_", "PROMETHEUS_MULTIPROC",
)  # fmt: skip
_DROPPED = {"PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "PYTEST_ADDOPTS", "PYTEST_CURRENT_TEST"}

BLOCK_TIMEOUT = 120.0
SERVE_TIMEOUT = 60.0
STOP_TIMEOUT = 30.0


@dataclass
class Served:
    """A server a ``serve`` block started, and the instance ids it registered."""

    block: Block
    service: str
    process: subprocess.Popen[bytes]
    log: Path
    ids: frozenset[str] = frozenset()


@dataclass
class DocSession:
    """Runs steps of one README in ``work`` against ``agent`` (see the module).

    ``bin_dir`` holds the interpreter and console scripts under test (the project's
    venv, or a fresh one). ``wheel`` set: ``install`` blocks run, with the wheel in place
    of ``consul-discovery``; unset: they are listed as run by tests/packaging. Mutable
    fields belong to the test thread.
    """

    agent: ConsulAgent
    work: Path
    bin_dir: Path = Path(sys.executable).parent
    wheel: Path | None = None
    ran: list[Block] = field(default_factory=list)
    not_run: list[tuple[Block, str]] = field(default_factory=list)
    ports: dict[int, int] = field(default_factory=dict)
    _python: PythonBlocks | None = None
    _served: list[Served] = field(default_factory=list)
    _backends: list[subprocess.Popen[bytes]] = field(default_factory=list)
    _instances: ConsulInstances | None = None
    _logs: list[IO[bytes]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.work.mkdir(parents=True, exist_ok=True)
        self.logs = self.work.parent / f"{self.work.name}-logs"
        self.logs.mkdir(exist_ok=True)
        env = {
            k: v
            for k, v in os.environ.items()
            if k not in _DROPPED and not k.startswith(_DROPPED_PREFIXES)
        }
        env["PATH"] = f"{self.bin_dir}{os.pathsep}{env.get('PATH', '')}"
        env["CONSUL_HTTP_ADDR"] = self.agent.address
        # Faster than the defaults, which the README's commands do not set.
        env["SERVICE_CHECK_INTERVAL"] = "1s"
        env["SERVICE_DRAIN_SECONDS"] = "1"
        env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
        self.env = env

    # ---- running ---------------------------------------------------------------------

    def run(self, steps: Iterable[Step]) -> None:
        """Run each step in order; the first failure raises AssertionError."""
        for step in steps:
            if isinstance(step, Backends):
                self.start_backends(step)
                continue
            action = step.action
            if action == "text":
                self.not_run.append((step, "text: output or an illustration, not code"))
            elif action == "skip":
                self.not_run.append((step, skip_reason(step)))
            elif action == "install" and self.wheel is None:
                self.not_run.append((step, "pip install: run in a fresh venv by tests/packaging"))
            elif action == "install":
                self.shell(step, _DISTRIBUTION.sub(f"'{self.wheel}\\2'", step.code))
            elif action == "file":
                self.write_file(step)
            elif action == "serve":
                self.serve(step)
            elif action == "pytest":
                self.pytest(step)
            elif step.language == "python":
                self.python(step)
            else:
                self.shell(step, step.code)

    def substitute(self, code: str) -> str:
        """The command with example ports and the default agent address replaced."""

        def port(match: re.Match[str]) -> str:
            example = int(match[1])
            if example not in self.ports:
                self.ports[example] = free_port()
            return str(self.ports[example])

        return _PORT.sub(port, _DEFAULT_AGENT.sub(self.agent.address, code))

    def shell(self, block: Block, code: str) -> None:
        """Run an ``sh`` block with bash; it must exit 0."""
        script = self.substitute(code)
        try:
            result = subprocess.run(
                ["bash", "-e", "-u", "-o", "pipefail", "-c", script],
                cwd=self.work,
                env=self.env,
                capture_output=True,
                text=True,
                timeout=BLOCK_TIMEOUT if block.action != "install" else 600,
                check=False,
            )
        except subprocess.TimeoutExpired as exc:
            raise AssertionError(f"{block.where}: sh block timed out:\n{script}\n{exc}") from None
        if result.returncode != 0:
            raise AssertionError(
                f"{block.where}: sh block exited {result.returncode}:\n{script}\n"
                f"stdout:\n{result.stdout}\nstderr:\n{result.stderr}"
            )
        self.ran.append(block)

    def write_file(self, block: Block) -> None:
        """Write a ``file`` block into the work directory (python: compiled first)."""
        if block.language == "python":
            compile("\n" * block.line + block.code, block.readme, "exec")
        path = self.work / block.argument
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(block.code, encoding="utf-8")
        self.ran.append(block)

    def pytest(self, block: Block) -> None:
        """Write a test module and run it with the library's pytest plugin."""
        (self.work / block.argument).write_text(block.code, encoding="utf-8")
        # Only the plugin the command names: a reader's project has none of this
        # repository's dev plugins (loading them all costs ~7 s here).
        env = {**self.env, "PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1"}
        result = subprocess.run(
            [str(self.bin_dir / "python"), "-m", "pytest", "-p", "consul_discovery.pytest_plugin",
             "-q", "-p", "no:cacheprovider", block.argument],
            cwd=self.work, env=env, capture_output=True, text=True,
            timeout=BLOCK_TIMEOUT, check=False,
        )  # fmt: skip
        if result.returncode != 0 or " passed" not in result.stdout:
            raise AssertionError(
                f"{block.where}: the test module failed:\n{result.stdout}\n{result.stderr}"
            )
        self.ran.append(block)

    def python(self, block: Block) -> None:
        """Run a python block in the README's namespace (one runner process per README)."""
        if self._python is None:
            self._python = PythonBlocks(
                self.bin_dir / "python", self.work, self.env, self._log("python-blocks"),
                lambda: self._tail("python-blocks"), BLOCK_TIMEOUT,
            )  # fmt: skip
        self._python.run(block)
        self.ran.append(block)

    # ---- servers and backends --------------------------------------------------------

    def _passing_ids(self, service: str) -> set[str]:
        url = f"{self.agent.url}/v1/health/service/{service}?passing=true"
        answer = requests.get(url, timeout=5)
        answer.raise_for_status()
        return {entry["Service"]["ID"] for entry in answer.json()}

    def serve(self, block: Block) -> None:
        """Start a ``serve`` block's command; wait until it registers as passing."""
        service = block.argument
        words = shlex.split(self.substitute(block.code).replace("\\\n", " "), comments=True)
        env = dict(self.env)
        while words and _ASSIGNMENT.match(words[0]):
            name, _, value = words.pop(0).partition("=")
            env[name] = value
        if not words:
            raise AssertionError(f"{block.where}: a serve block needs a command")
        before = self._passing_ids(service)
        name = f"serve-{service}-{block.line}"
        process = subprocess.Popen(
            words, cwd=self.work, env=env, stdout=self._log(name), stderr=subprocess.STDOUT,
            start_new_session=True,  # its own group: its workers too, if it must be killed
        )  # fmt: skip
        served = Served(block, service, process, self.logs / f"{name}.log")
        self._served.append(served)
        deadline = time.monotonic() + SERVE_TIMEOUT
        while True:
            if process.poll() is not None:
                raise AssertionError(
                    f"{block.where}: {words[0]} exited {process.returncode} before "
                    f"{service} was passing:\n{self._tail(name)}"
                )
            new = self._passing_ids(service) - before
            if new:
                served.ids = frozenset(new)
                break
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"{block.where}: {service} not passing in Consul after "
                    f"{SERVE_TIMEOUT:.0f}s:\n{self._tail(name)}"
                )
            time.sleep(0.1)
        self.ran.append(block)

    def start_backends(self, step: Backends) -> None:
        """An echo backend per service, registered as passing with a TTL check."""
        if self._instances is None:
            self._instances = ConsulInstances(self.agent.connection())
        for service in step.services:
            port = free_port()
            process = subprocess.Popen(
                [sys.executable, str(ECHO), service, str(port)],
                stdout=self._log(f"backend-{service}-{port}"), stderr=subprocess.STDOUT,
            )  # fmt: skip
            self._backends.append(process)
            wait_listening(port, process, f"{step.where}: echo backend {service}")
            self._instances.register(service, port=port)

    # ---- stopping --------------------------------------------------------------------

    def close(self) -> None:
        """Stop every server (SIGTERM: it must deregister), backend and the runner.

        Raises AssertionError, after stopping everything, if a server did not stop on
        SIGTERM or left its instance registered.
        """
        problems = []
        for served in reversed(self._served):
            problem = self._stop_server(served)
            if problem:
                problems.append(problem)
        self._served.clear()
        if self._instances is not None:
            self._instances.close()
        for process in self._backends:
            stop(process, signal.SIGTERM)
        self._backends.clear()
        if self._python is not None:
            self._python.close()
            self._python = None
        for log in self._logs:
            log.close()
        self._logs.clear()
        if problems:
            raise AssertionError("\n\n".join(problems))

    def _stop_server(self, served: Served) -> str | None:
        process = served.process
        if process.poll() is not None:
            return f"{served.block.where}: the server had exited ({process.returncode})"
        os.kill(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)
            return (
                f"{served.block.where}: {served.service} did not stop within "
                f"{STOP_TIMEOUT:.0f}s of SIGTERM:\n{self._tail(served.log.stem)}"
            )
        url = f"{self.agent.url}/v1/catalog/service/{served.service}"
        left = {entry["ServiceID"] for entry in requests.get(url, timeout=5).json()} & served.ids
        if left:
            return f"{served.block.where}: {sorted(left)} still registered after SIGTERM"
        return None

    def __enter__(self) -> DocSession:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- logs ------------------------------------------------------------------------

    def _log(self, name: str) -> IO[bytes]:
        handle = open(self.logs / f"{name}.log", "ab")  # noqa: SIM115 (closed by close())
        self._logs.append(handle)
        return handle

    def _tail(self, name: str, lines: int = 40) -> str:
        try:
            text = (self.logs / f"{name}.log").read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])
