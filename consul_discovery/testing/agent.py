"""A real Consul agent process owned by a test: start, wait for a leader, restart, stop by PID.

Every port is a free one on 127.0.0.1; the agent's files (log, data dir) live in a
temporary directory removed by ``cleanup``. Two modes:

- ``mode="dev"`` runs ``consul agent -dev``: state in memory, so a restart comes back
  empty (an agent that lost its data dir);
- ``mode="server"`` runs a server with a data dir: alone (``bootstrap_expect=1``, a
  restart keeps every registration and KV entry) or as one server of a cluster.

An agent dies with the process that started it, however that process ends and from
whichever thread it was started: it carries the run's mark, and the run's watchdog stops
it (consul_discovery.testing.lifeline). A test run killed with SIGKILL left its agents
running before.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import requests

from consul_discovery.connection import ConsulConnection
from consul_discovery.testing import lifeline
from consul_discovery.testing.binary import consul_binary
from consul_discovery.testing.ports import free_ports

if TYPE_CHECKING:
    import consul

#: The agent configs shipped with the package (dev.hcl, server.hcl).
CONFIG_DIR = Path(__file__).resolve().parent


@dataclass(frozen=True)
class AgentPorts:
    """Every port one agent listens on (all on 127.0.0.1)."""

    http: int
    dns: int
    serf_lan: int
    serf_wan: int
    server: int
    grpc: int

    @classmethod
    def allocate(cls) -> AgentPorts:
        """Pick six distinct free ports."""
        return cls(*free_ports(6))

    def flags(self) -> list[str]:
        """The consul agent command-line flags that set these ports."""
        return [
            f"-http-port={self.http}",
            f"-dns-port={self.dns}",
            f"-serf-lan-port={self.serf_lan}",
            f"-serf-wan-port={self.serf_wan}",
            f"-server-port={self.server}",
            f"-grpc-port={self.grpc}",
            "-grpc-tls-port=-1",
            "-https-port=-1",
        ]


@dataclass
class ConsulAgent:
    """One Consul agent process on loopback; ``start``/``stop``/``restart`` it by PID.

    ``mode="dev"`` runs ``consul agent -dev`` (state in memory: a restart loses every
    registration, like an agent that lost its data dir). ``mode="server"`` runs a server
    with a data dir, ``-bootstrap-expect=1`` unless ``extra_args`` set it (a cluster's
    servers pass ``-bootstrap-expect=N`` and ``-retry-join``). ``binary`` defaults to
    :func:`consul_discovery.testing.binary.consul_binary`. Mutable fields are owned by
    the test thread that created the agent.
    """

    name: str = "dev"
    mode: str = "dev"
    ports: AgentPorts = field(default_factory=AgentPorts.allocate)
    # Not in the repr: it carries secrets (an ACL agent's initial management token in
    # its -hcl, a gossip key's -encrypt) and a repr is what pytest shows of a fixture.
    extra_args: list[str] = field(default_factory=list, repr=False)
    workdir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="consul-test-")))
    binary: str | None = None
    process: subprocess.Popen[bytes] | None = None  # owned by the test thread
    _log_handle: Any = None  # owned by the test thread; the open log while running

    #: The modes this class knows how to start (a subclass that builds its own command,
    #: e.g. a client agent joining servers, widens it).
    MODES: ClassVar[tuple[str, ...]] = ("dev", "server")

    def __post_init__(self) -> None:
        if self.mode not in self.MODES:
            raise ValueError(f"mode must be one of {', '.join(self.MODES)}, not {self.mode!r}")

    @property
    def address(self) -> str:
        """``127.0.0.1:<http port>``, as CONSUL_HTTP_ADDR wants it."""
        return f"127.0.0.1:{self.ports.http}"

    @property
    def url(self) -> str:
        """Base HTTP URL of the agent."""
        return f"http://{self.address}"

    @property
    def log_path(self) -> Path:
        """The agent's combined stdout/stderr log."""
        return self.workdir / f"{self.name}.log"

    @property
    def data_dir(self) -> Path:
        """The agent's data dir (used in server mode)."""
        return self.workdir / "data"

    @property
    def pid(self) -> int | None:
        """PID of the running agent, if any."""
        return self.process.pid if self.process and self.process.poll() is None else None

    @property
    def keeps_state(self) -> bool:
        """True when a restart keeps registrations and KV (a server with a data dir)."""
        return self.mode == "server"

    def client(self) -> consul.Consul:
        """A py-consul client for this agent."""
        import consul  # py-consul

        return consul.Consul(host="127.0.0.1", port=self.ports.http)

    def connection(self, **overrides: Any) -> ConsulConnection:
        """A ConsulConnection to this agent (``overrides``: any other field, e.g. token)."""
        return ConsulConnection(host="127.0.0.1", port=self.ports.http, **overrides)

    def command(self) -> list[str]:
        """The full command line that starts this agent."""
        binary = self.binary or consul_binary()
        base = [binary, "agent", f"-node={self.name}", *self.ports.flags()]
        if self.mode == "dev":
            return [*base, "-dev", f"-config-file={CONFIG_DIR / 'dev.hcl'}", *self.extra_args]
        expect = [] if _sets(self.extra_args, "-bootstrap-expect") else ["-bootstrap-expect=1"]
        return [
            *base,
            f"-config-file={CONFIG_DIR / 'server.hcl'}",
            f"-data-dir={self.data_dir}",
            *expect,
            *self.extra_args,
        ]

    def start(self, wait_for_leader: bool = True, timeout: float = 30.0) -> ConsulAgent:
        """Start the agent (no-op if running) and wait until it has a leader."""
        if self.pid is not None:
            return self
        self.workdir.mkdir(parents=True, exist_ok=True)
        lifeline.remove_after_run(self.workdir)  # if the run is killed before cleanup()
        log = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
        self._log_handle = log
        self.process = subprocess.Popen(
            self.command(), stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            env={**os.environ, lifeline.MARK: lifeline.process_mark()},
        )  # fmt: skip
        if wait_for_leader:
            self.wait_for_leader(timeout)
        return self

    def wait_for_leader(self, timeout: float = 30.0) -> str:
        """Block until the agent reports a raft leader; return its address."""
        deadline = time.monotonic() + timeout
        last_error = "no answer"
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise RuntimeError(
                    f"consul agent {self.name} exited with {self.process.returncode}; "
                    f"log:\n{self.tail_log()}"
                )
            try:
                response = requests.get(f"{self.url}/v1/status/leader", timeout=1)
                leader = response.json() if response.ok else ""
                if leader:
                    # A dev agent also needs its own node in the catalog before
                    # registrations are visible; wait for that too.
                    nodes = requests.get(f"{self.url}/v1/catalog/nodes", timeout=1).json()
                    if any(node.get("Node") == self.name for node in nodes):
                        return leader
                    last_error = "node not yet in catalog"
                else:
                    last_error = f"no leader yet (HTTP {response.status_code})"
            except (requests.RequestException, ValueError) as exc:
                last_error = str(exc)
            time.sleep(0.1)
        raise TimeoutError(
            f"consul agent {self.name} had no leader after {timeout}s ({last_error}); "
            f"log:\n{self.tail_log()}"
        )

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10.0) -> None:
        """Stop the agent by PID (SIGKILL if it ignores ``sig``) and wait for it."""
        process = self.process
        if process is not None and process.poll() is None:
            try:
                os.kill(process.pid, sig)
                process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                os.kill(process.pid, signal.SIGKILL)
                process.wait(timeout=timeout)
            except ProcessLookupError:
                pass
        self.process = None
        if self._log_handle is not None:
            self._log_handle.close()
            self._log_handle = None

    def kill(self) -> None:
        """kill -9 the agent."""
        self.stop(signal.SIGKILL)

    def restart(self, timeout: float = 30.0, *, keep_state: bool | None = None) -> ConsulAgent:
        """Stop and start again on the same ports.

        ``keep_state`` None: as the mode does (a dev agent comes back empty, a server
        keeps its data dir); False: come back empty (a server's data dir is wiped);
        True: keep every registration and KV entry (a server only: a dev agent's state
        lives in its memory).
        """
        if keep_state and not self.keeps_state:
            raise ValueError(
                "a dev agent keeps its state in memory and cannot restart with it; "
                "use ConsulAgent(mode='server') (the consul_agent_persistent fixture)"
            )
        self.stop()
        if keep_state is False and self.mode == "server":
            shutil.rmtree(self.data_dir, ignore_errors=True)
        return self.start(timeout=timeout)

    def cleanup(self) -> None:
        """Stop the agent and remove its files."""
        self.stop()
        shutil.rmtree(self.workdir, ignore_errors=True)

    def tail_log(self, lines: int = 40) -> str:
        """The last ``lines`` lines of the agent's log."""
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"


def _sets(args: list[str], flag: str) -> bool:
    return any(arg == flag or arg.startswith(f"{flag}=") for arg in args)


@contextmanager
def running_agent(**kwargs: Any) -> Iterator[ConsulAgent]:
    """A started ConsulAgent (``kwargs`` as for ConsulAgent), stopped and removed afterwards."""
    agent = ConsulAgent(**kwargs)
    try:
        agent.start()
        yield agent
    finally:
        agent.cleanup()
