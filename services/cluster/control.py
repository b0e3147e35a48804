"""Start, inspect, restart and stop a local cluster through supervisord."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import xmlrpc.client
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests
from supervisor.xmlrpc import SupervisorTransport

from consul_discovery.client import ConsulSource, DiscoveryError, ServiceConfig
from consul_discovery.client.table import format_table as table_text
from consul_discovery.connection import ConsulConnection
from services.cluster import mesh, multi_dc, orphans, prometheus, secure, stopping
from services.cluster.plan import MESH_SERVICES, REPO_ROOT, ClusterPlan, InstancePlan
from services.cluster.scrape_identity import IdentityFiles
from services.cluster.supervisor_conf import SCRAPE_IDENTITY, render, targets_file

ENSURE_CONSUL = REPO_ROOT / "consul" / "ensure-consul"


class ClusterError(RuntimeError):
    """A cluster operation failed; the message says what and how to fix it."""


class AlreadyRunningError(ClusterError):
    """The cluster is already up (its supervisord is alive)."""


class PortInUseError(ClusterError):
    """A port the cluster needs is taken by another process."""


@dataclass(frozen=True, slots=True)
class InstanceStatus:
    """One row of the cluster table."""

    service: str
    instance: str
    address: str
    health: str


def _bin(name: str) -> str:
    return str(Path(sys.executable).with_name(name))


def supervisord_pid(plan: ClusterPlan) -> int | None:
    """PID of the cluster's live supervisord, or None (no pidfile, dead, or a zombie)."""
    try:
        pid = int(plan.supervisor_pidfile.read_text().strip())
        os.kill(pid, 0)
        # A daemon killed -9 whose parent never reaps it still answers kill(pid, 0),
        # and a stale pidfile may name a PID the kernel has since given to another program.
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[-1].split()[0]
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (OSError, ValueError, IndexError):
        return None
    return pid if state != "Z" and b"supervisord" in cmdline else None


def make_command(plan: ClusterPlan, target: str) -> str:
    """The make command running ``target`` on ``plan``'s cluster: its profile named unless
    dev, since every cluster target finds the cluster of its PROFILE only."""
    return f"make {target}" + ("" if plan.profile == "dev" else f" PROFILE={plan.profile}")


def require_running(plan: ClusterPlan) -> int:
    """The live supervisord's PID; ClusterError saying how to start the cluster if none."""
    pid = supervisord_pid(plan)
    if pid is None:
        raise ClusterError(
            f"the cluster is not running; start it with `{make_command(plan, 'run-cluster')}`"
        )
    return pid


def supervisorctl(plan: ClusterPlan, *args: str, check: bool = True) -> str:
    """Run supervisorctl against the cluster's socket and return its output."""
    result = subprocess.run(
        [_bin("supervisorctl"), "-c", str(plan.supervisor_conf), *args],
        capture_output=True,
        text=True,
        timeout=120,
    )
    # supervisorctl exits 3 when some program is not RUNNING (status); that is not an error.
    if check and result.returncode not in (0, 3):
        raise ClusterError(f"supervisorctl {' '.join(args)} failed: {result.stdout}{result.stderr}")
    return result.stdout


def busy_ports(ports: Mapping[str, int | tuple[str, int]]) -> list[str]:
    """Which of ``ports`` (a port on 127.0.0.1, or an (address, port)) cannot be bound now."""
    taken = []
    for what, where in ports.items():
        host, port = where if isinstance(where, tuple) else ("127.0.0.1", where)
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind((host, port))
            except OSError:
                shown = port if host == "127.0.0.1" else f"{host}:{port}"
                taken.append(f"{shown} ({what})")
    return taken


def tooling_connection(plan: ClusterPlan) -> ConsulConnection:
    """How the tooling reads Consul: the dev agent, or a server with the operator's token."""
    if plan.secure:
        return secure.connection(plan, secure.OPERATOR)
    return ConsulConnection.from_env(address=plan.consul_address)


def consul_binary() -> str:
    """The Consul binary from consul/ensure-consul (builds it the first time)."""
    try:
        out = subprocess.run(
            [str(ENSURE_CONSUL)], check=True, stdout=subprocess.PIPE, text=True, timeout=1800
        )
    except subprocess.CalledProcessError as exc:
        raise ClusterError("could not find or build Consul; run `make consul` to see why") from exc
    return out.stdout.strip().splitlines()[-1]


def instance_health(source: ConsulSource, service: str) -> dict[str, str]:
    """Health of each registered instance of ``service`` ('critical' includes maintenance)."""
    return {inst.id: inst.health for inst in source.list_instances(service)}


def table(plan: ClusterPlan, source: ConsulSource | None = None) -> list[InstanceStatus]:
    """One row per planned instance with its health in Consul ('absent' if unregistered).

    Pass ``source`` to reuse one Consul client across repeated calls (a polling wait).
    """
    if source is None:
        with ConsulSource(connection=tooling_connection(plan)) as own:
            return table(plan, own)
    by_service: dict[tuple[str, str], dict[str, str]] = {}
    # multi-dc: another datacenter's instances, asked of the same agent with ?dc=.
    remote: dict[str, ConsulSource] = {}
    home = plan.instances()[0].datacenter
    try:
        for inst in plan.instances():
            key = (inst.datacenter, inst.service)
            if key in by_service:
                continue
            asked = source
            if inst.datacenter != home:
                asked = remote.get(inst.datacenter) or remote.setdefault(
                    inst.datacenter, _datacenter_source(plan, inst.datacenter)
                )
            try:
                by_service[key] = instance_health(asked, inst.service)
            except DiscoveryError:
                by_service[key] = {}
    finally:
        for other in remote.values():
            other.close()
    rows = []
    for inst in plan.instances():
        health = by_service[(inst.datacenter, inst.service)].get(inst.instance_id, "absent")
        rows.append(InstanceStatus(inst.service, inst.instance_id, inst.address, health))
    return rows


def _datacenter_source(plan: ClusterPlan, datacenter: str) -> ConsulSource:
    config = ServiceConfig(datacenter=datacenter)
    return ConsulSource(connection=tooling_connection(plan), service_config=lambda _: config)


def consul_ready(plan: ClusterPlan) -> bool:
    """Whether the cluster's Consul agent answers catalog queries (it has a leader)."""
    with ConsulSource(connection=tooling_connection(plan)) as source:
        try:
            source.list_services()
        except DiscoveryError:
            return False
    return True


def format_table(rows: Iterable[InstanceStatus]) -> str:
    """Rows as an aligned text table."""
    data = [(r.service, r.instance, r.address, r.health) for r in rows]
    return table_text(("SERVICE", "INSTANCE", "ADDRESS", "HEALTH"), data)


def wait_until(
    condition: Callable[[], bool], timeout: float, what: str, interval: float = 0.2
) -> None:
    """Poll ``condition`` until true or raise ClusterError naming ``what``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if condition():
                return
        except DiscoveryError:
            pass
        time.sleep(interval)
    raise ClusterError(f"timed out after {timeout:.0f}s waiting for {what}")


def exited_programs(plan: ClusterPlan, programs: Iterable[str]) -> dict[str, str]:
    """Programs among ``programs`` that supervisord reports as no longer running."""
    wanted = set(programs)
    dead = {}
    for line in supervisorctl(plan, "status", check=False).splitlines():
        parts = line.split()
        if len(parts) >= 2 and parts[0] in wanted and parts[1] in ("EXITED", "FATAL", "BACKOFF"):
            dead[parts[0]] = parts[1]
    return dead


def log_tail(plan: ClusterPlan, program: str, lines: int = 5) -> str:
    """The last lines of one program's log."""
    try:
        text = (plan.log_dir / f"{program}.log").read_text(errors="replace")
    except OSError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:])


def wait_passing(plan: ClusterPlan, instances: Iterable[InstancePlan], timeout: float) -> None:
    """Wait until every one of ``instances`` is registered and passing in Consul.

    Fails early, with the log's last lines, when one of them has exited instead.
    """
    wanted = list(instances)
    polls = 0
    source = ConsulSource(connection=tooling_connection(plan))  # one client for the wait

    def all_passing() -> bool:
        nonlocal polls
        polls += 1
        if polls % 10 == 0:  # every ~2 s: has a process died instead of coming up?
            dead = exited_programs(plan, (i.program for i in wanted))
            if dead:
                details = "\n".join(
                    f"--- {name} is {state}; last lines of its log:\n{log_tail(plan, name)}"
                    for name, state in sorted(dead.items())
                )
                raise ClusterError(f"instances exited instead of passing:\n{details}")
        rows = {r.instance: r.health for r in table(plan, source)}
        return all(rows.get(i.instance_id) == "passing" for i in wanted)

    try:
        with source:
            wait_until(all_passing, timeout, "every instance to pass its health check")
    except ClusterError as exc:
        raise ClusterError(
            f"{exc}\n{format_table(table(plan))}\nlogs: {plan.log_dir} "
            f"(the cluster is left running to look at: `{make_command(plan, 'logs')}`, then"
            f" `{make_command(plan, 'stop-cluster')}`)"
        ) from exc


#: Supervised programs besides the agents and instances, stopped after the instances.
METRICS_PROGRAMS = ("prometheus", "prometheus-targets")


def metrics_programs(plan: ClusterPlan) -> tuple[str, ...]:
    """METRICS_PROGRAMS, and with the mesh on the program keeping Prometheus' identity."""
    return (*METRICS_PROGRAMS, SCRAPE_IDENTITY) if plan.mesh else METRICS_PROGRAMS


def write_mesh_intentions(plan: ClusterPlan, timeout: float = 30.0) -> None:
    """MESH=1: the platform's intentions (``services.cluster.mesh``), written with the
    mesh admin token in the secure profile. Retried while Consul is still settling."""
    from consul_discovery.mesh.intentions_cli import IntentionsCliError

    conn = secure.connection(plan, secure.MESH_ADMIN) if plan.secure else tooling_connection(plan)
    deadline = time.monotonic() + timeout
    while True:
        try:
            mesh.write_intentions(conn)
            return
        except (IntentionsCliError, requests.RequestException) as exc:
            if time.monotonic() > deadline:
                reason = exc if isinstance(exc, IntentionsCliError) else type(exc).__name__
                raise ClusterError(f"could not write the mesh's intentions: {reason}") from exc
            time.sleep(0.5)


def start_prometheus_in_mesh(plan: ClusterPlan, timeout: float = 30.0) -> None:
    """Start Prometheus once its mesh identity's files exist (it reads them at start)."""
    files = IdentityFiles(plan.mesh_identity_dir)
    try:
        wait_until(
            lambda: all(p.is_file() for p in (files.cert_file, files.key_file, files.ca_file)),
            timeout,
            "Prometheus' mesh identity",
        )
    except ClusterError as exc:
        raise ClusterError(f"{exc}:\n{log_tail(plan, SCRAPE_IDENTITY)}") from exc
    start_programs(plan, ["prometheus"])


def write_prometheus_config(plan: ClusterPlan, consul_sd: bool) -> None:
    """Prometheus' config and rules (and an empty target file for file_sd) in the run dir."""
    if plan.secure:
        access = prometheus.ConsulAccess(
            plan.consul_address.removeprefix("https://"),
            scheme="https",
            token_file=plan.token_file(secure.OPERATOR),
            ca_file=plan.ca_file,
        )
    else:
        access = prometheus.ConsulAccess(plan.consul_address)
    targets = None if consul_sd else targets_file(plan)
    scrape = None
    if plan.mesh:
        files = IdentityFiles(plan.mesh_identity_dir)
        scrape = prometheus.MeshScrape(
            files.cert_file, files.key_file, files.ca_file, MESH_SERVICES
        )
    prometheus.write_config(plan.prometheus_dir, access, plan.scrape_interval, targets, scrape)
    if targets is not None and not targets.exists():
        targets.write_text("[]\n")


def up(plan: ClusterPlan, timeout: float = 120.0) -> list[InstanceStatus]:
    """Start Consul, Prometheus and every instance in the background; return when all pass."""
    pid = supervisord_pid(plan)
    if pid is not None:
        raise AlreadyRunningError(
            f"the cluster is already running (supervisord PID {pid}); "
            f"`{make_command(plan, 'status')}` shows it,"
            f" `{make_command(plan, 'stop-cluster')}` stops it"
        )
    left = orphans.find(plan)
    if left:
        raise ClusterError(
            f"{len(left)} process(es) of this cluster are still running without their"
            f" supervisord (PIDs {', '.join(map(str, left))});"
            f" `{make_command(plan, 'stop-cluster')}` stops them"
        )
    taken = busy_ports(plan.endpoints())
    if taken:
        raise PortInUseError(
            "cannot start the cluster, these ports are in use: "
            + ", ".join(taken)
            + "; stop what holds them, or move every port of the cluster: "
            + f"`{make_command(plan, 'run-cluster')} PORT_OFFSET=1000` (any offset from 1 to 20000)"
        )
    try:
        prometheus_bin = prometheus.prometheus_binary()
    except prometheus.PrometheusMissingError as exc:
        raise ClusterError(str(exc)) from exc
    consul_sd = prometheus.supports_consul_sd(prometheus_bin)
    for directory in (plan.run_dir, plan.log_dir, plan.data_dir, plan.metrics_dir):
        directory.mkdir(parents=True, exist_ok=True)
    consul_bin = consul_binary()
    if plan.secure:
        plan.run_dir.chmod(0o700)
        secure.prepare(plan, consul_bin)
    if plan.multi_dc:
        multi_dc.prepare(plan)
    write_prometheus_config(plan, consul_sd)
    plan.supervisor_conf.write_text(render(plan, consul_bin, prometheus_bin, consul_sd))
    plan.save()
    subprocess.run([_bin("supervisord"), "-c", str(plan.supervisor_conf)], check=True, timeout=30)
    if plan.secure:
        # The agents are up; instances wait for their tokens (autostart=false).
        try:
            secure.bootstrap_acl(plan)
            secure.issue_tokens(plan)
        except secure.BootstrapError as exc:
            tails = "\n".join(
                f"--- {a.program}:\n{log_tail(plan, a.program)}" for a in plan.agents()
            )
            stop = make_command(plan, "stop-cluster")
            raise ClusterError(f"{exc}\n{tails}\n(`{stop}` stops it)") from exc
        if plan.mesh:  # before any instance serves: nothing is allowed by default
            write_mesh_intentions(plan)
        later = ("prometheus",) if plan.mesh else ()  # after its identity files
        metrics = [name for name in metrics_programs(plan) if name not in later]
        start_programs(plan, [*(inst.program for inst in plan.instances()), *metrics])
    wait_until(lambda: consul_ready(plan), 30, "Consul to elect a leader")
    if plan.mesh:
        if not plan.secure:  # dev: the agent is up only now (instances start with it)
            write_mesh_intentions(plan)
        start_prometheus_in_mesh(plan)
    wait_passing(plan, plan.instances(), timeout)
    return table(plan)


def _rpc(plan: ClusterPlan) -> Any:
    transport = SupervisorTransport(None, None, f"unix://{plan.supervisor_socket}")
    return xmlrpc.client.ServerProxy("http://127.0.0.1", transport=transport).supervisor


def start_programs(plan: ClusterPlan, programs: Iterable[str]) -> None:
    """Ask supervisord to start every one of ``programs`` at once (no waiting)."""
    rpc = _rpc(plan)
    for name in programs:
        with contextlib.suppress(xmlrpc.client.Fault):  # ALREADY_STARTED
            rpc.startProcess(name, False)


def down(plan: ClusterPlan, timeout: float = 120.0) -> None:
    """Drain and stop every instance (within their derived stop bound), then Consul, then
    supervisord itself (within ``timeout``)."""
    pid = supervisord_pid(plan)
    if pid is None:
        return
    stop_in_parallel(plan, [inst.program for inst in plan.instances()])
    supervisorctl(plan, "stop", *metrics_programs(plan), check=False)
    # Client agents first, then the servers (one at a time, so quorum goes last).
    agents = sorted(plan.agents(), key=lambda a: a.server)
    supervisorctl(plan, "stop", *(a.program for a in agents))
    supervisorctl(plan, "shutdown")
    wait_until(lambda: supervisord_pid(plan) is None, timeout, "supervisord to exit")


def stop_in_parallel(plan: ClusterPlan, programs: list[str], timeout: float | None = None) -> None:
    """Send every program its stop signal at once and wait until all have stopped.

    Each instance drains on SIGTERM (maintenance, propagation delay, in-flight requests,
    deregistration), so stopping them one by one, as ``supervisorctl stop a b c`` does,
    would take the sum of their drains instead of the longest one. ``timeout`` defaults
    to the bound their own stop settings give (``stopping.parallel_stop_bound``).

    A program that had just died when asked (supervisord answers NOT_RUNNING while it is
    EXITED, e.g. right after a kill -9) is restarted by supervisord's autorestart a
    moment later: so EXITED counts as stopped only once it has lasted longer than that
    restart takes, and a program found running again is asked again. It ends up
    stopped, not restarted behind the caller's back or running until the timeout.

    A program is asked only once its process has exec'd (``_exec_pending``): supervisord
    sends SIGTERM to whatever it spawned, and a process between fork and exec still runs
    supervisord's own signal handler, which swallows the signal. The program then starts
    normally and runs until supervisord's SIGKILL, ``stopwaitsecs`` later (seen: a drill
    whose instances, autorestarted after a kill -9, took 32 s to stop instead of 0.1 s).
    The process asked about may still die and be respawned before supervisord reads the
    request (seen in CI: asked right after a kill -9, the stop took the whole
    ``stopwaitsecs``): a program STOPPING under another pid than the one asked about
    gets its SIGTERM again from here once that process has exec'd.
    """
    if timeout is None:
        timeout = stopping.parallel_stop_bound(plan, programs)
    rpc = _rpc(plan)
    exited_since: dict[str, float] = {}  # program -> when it was first seen EXITED
    asked: dict[str, int] = {}  # program -> the pid it had when it was last asked

    def ask(name: str, info: Mapping[str, Any]) -> None:
        pid = int(info["pid"])
        if _exec_pending(pid):  # STARTING, or RUNNING at once (startsecs=0): not yet
            return  # asked again on the next poll, once it has exec'd
        with contextlib.suppress(xmlrpc.client.Fault):  # NOT_RUNNING: nothing to stop
            rpc.stopProcess(name, False)
        asked[name] = pid

    def resend(name: str, pid: int) -> None:
        """The stop reached another process than the one asked about: the old one had
        died and supervisord respawned it in between (asked right after a kill -9), so
        the SIGTERM may have landed before the new one's exec and been swallowed. Once
        it has exec'd, it gets its SIGTERM again, from here."""
        if pid and asked.get(name, pid) != pid and not _exec_pending(pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
            asked[name] = pid

    def stopped(name: str, info: Mapping[str, Any] | None, now: float) -> bool:
        state = info["statename"] if info else None
        if state == "EXITED":
            return now - exited_since.setdefault(name, now) > stopping.AUTORESTART_SECONDS
        exited_since.pop(name, None)
        if info is not None and state in _RUNNING_STATES:  # running (again): ask
            ask(name, info)
        elif info is not None and state == "STOPPING":
            resend(name, int(info["pid"]))
        return state in _STOPPED_STATES

    def all_stopped() -> bool:
        infos = {info["name"]: info for info in rpc.getAllProcessInfo()}
        now = time.monotonic()
        return all([stopped(name, infos.get(name), now) for name in programs])

    wait_until(all_stopped, timeout, f"{', '.join(programs)} to drain and stop", interval=0.05)


def _exec_pending(pid: int) -> bool:
    """Whether ``pid`` is a child forked but not yet exec'd: its command line is still
    its parent's (supervisord's). False once it has exec'd (an empty command line, read
    mid-exec, is past the point where the copy's handlers could take a signal), or when
    /proc cannot say."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        parent = int(stat.rsplit(")", 1)[1].split()[1])  # the field after the state
        own = Path(f"/proc/{pid}/cmdline").read_bytes()
        return own == Path(f"/proc/{parent}/cmdline").read_bytes()
    except (OSError, ValueError, IndexError):
        return False


_STOPPED_STATES = frozenset({"STOPPED", "FATAL"})
#: States of a program that is running (again), so not stopping.
_RUNNING_STATES = frozenset({"STARTING", "RUNNING", "BACKOFF"})


def rolling_restart(
    plan: ClusterPlan, service: str, timeout: float = 60.0, log: Callable[[str], None] = print
) -> None:
    """Restart ``service``'s instances one at a time: drain, stop, start, wait until passing."""
    require_running(plan)
    for inst in plan.instances_of(service):
        started = time.monotonic()
        log(f"{inst.program}: draining and stopping")
        supervisorctl(plan, "stop", inst.program)
        log(f"{inst.program}: starting")
        supervisorctl(plan, "start", inst.program)
        wait_passing(plan, [inst], timeout)
        log(f"{inst.program}: passing again after {time.monotonic() - started:.1f}s")


def program_pid(plan: ClusterPlan, program: str) -> int | None:
    """PID of one supervised program (None when it is not running)."""
    out = supervisorctl(plan, "pid", program, check=False).strip()
    return int(out) if out.isdigit() and int(out) > 0 else None


def kill_everything(plan: ClusterPlan) -> None:
    """Last resort: SIGKILL every supervised process group and supervisord, by PID."""
    pid = supervisord_pid(plan)
    if pid is None:
        return
    programs = [
        *(a.program for a in plan.agents()),
        *metrics_programs(plan),
        *(i.program for i in plan.instances()),
    ]
    children = [child for name in programs if (child := program_pid(plan, name)) is not None]
    # supervisord first: alive, it would restart (autorestart) what is killed below.
    with contextlib.suppress(OSError):
        os.kill(pid, signal.SIGKILL)
    for child in children:
        with contextlib.suppress(OSError):
            os.killpg(child, signal.SIGKILL)
