"""Agentless drills on the secure cluster: kill the Consul server a process reads from.

The process (the gateway, started with every server in ``CONSUL_HTTP_ADDR`` through
``ClusterPlan.service_env``) holds its long polls on one server; that server is the one
its routing last logged (in use, or answering after a switch), given the
role the drill wants (Raft leadership transferred to it, or away from it), killed with
SIGKILL and held down (supervisord would restart it at once) until the process reads
from another server, then started again. The time to switch is the process's own
figure: the routing's one log line per switch ("... answered instead, N ms later").
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path

from services.cluster import control
from services.cluster.plan import AgentPlan, ClusterPlan
from tests.harness import drills, secure_cluster
from tests.harness.sockets import established_peers, process_tree

_SWITCH = re.compile(r"Consul server (\S+) failed \((.*?)\): (\S+) answered instead, ([\d.]+) ms")
_IN_USE = re.compile(r"Consul server (\S+) in use \(of \d+\)|: (\S+) answered instead")


def agentless_env(plan: ClusterPlan, *services: str) -> tuple[tuple[str, str, str], ...]:
    """``ClusterPlan.service_env`` that points ``services`` at every server."""
    return tuple((s, "CONSUL_HTTP_ADDR", plan.servers_address) for s in services)


@contextmanager
def agentless_cluster(
    run_dir: Path, *services: str, extra: tuple[tuple[str, str, str], ...] = ()
) -> Iterator[ClusterPlan]:
    """A secure cluster whose ``services`` read through the server list (plus ``extra``
    environment), every instance passing; stopped by PID afterwards."""
    plan = secure_cluster.secure_plan(run_dir)
    plan = replace(plan, service_env=agentless_env(plan, *services) + extra)
    try:
        control.up(plan, timeout=90)
        yield plan
    finally:
        try:
            control.down(plan, timeout=60)
        finally:
            control.kill_everything(plan)


def servers(plan: ClusterPlan) -> list[AgentPlan]:
    """The cluster's servers."""
    return [a for a in plan.agents() if a.server]


def server_in_use(plan: ClusterPlan, program: str) -> AgentPlan | None:
    """The server ``program`` reads from: the last one its routing logged (in use, or
    answering after a switch), once ``program`` holds a connection to it.

    The process's own word, not a count of its connections: its polls share one HTTP/2
    connection, as many as the registrar's one connection to the agent it registers with.
    """
    try:
        text = (plan.log_dir / f"{program}.log").read_text(errors="replace")
    except OSError:
        return None
    named = [m[1] or m[2] for m in _IN_USE.finditer(text)]
    pid = control.program_pid(plan, program)
    if not named or pid is None:
        return None
    host = named[-1].split("://", 1)[-1].rsplit(":", 1)[0]
    peers = established_peers(process_tree(pid))
    server = next((a for a in servers(plan) if a.host == host), None)
    if server is None or peers.get((host, plan.consul.https), 0) == 0:
        return None
    return server


def wait_in_use(plan: ClusterPlan, program: str, timeout: float = 30.0) -> AgentPlan:
    """The server ``program`` reads from, once it holds a connection to one."""
    deadline = time.monotonic() + timeout
    while (server := server_in_use(plan, program)) is None:
        if time.monotonic() > deadline:
            raise TimeoutError(f"{program} holds no connection to any Consul server")
        time.sleep(0.05)
    return server


def make_role(plan: ClusterPlan, server: AgentPlan, role: str, timeout: float = 30.0) -> None:
    """Transfer Raft leadership so that ``server`` is the ``role`` ("leader"/"follower")."""
    if role not in ("leader", "follower"):
        raise ValueError(f"role must be leader or follower, not {role!r}")
    conn = secure_cluster.connection(plan, "management")
    deadline = time.monotonic() + timeout
    with conn.session() as session:
        while True:
            leader = secure_cluster.leader(plan)
            if leader is not None and (leader == server) == (role == "leader"):
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"{server.program} did not become {role}")
            config = session.get(f"{conn.base_url}/v1/operator/raft/configuration", timeout=5)
            config.raise_for_status()
            ids = {s["Node"]: s["ID"] for s in config.json()["Servers"]}
            target = server if role == "leader" else next(s for s in servers(plan) if s != server)
            session.post(
                f"{conn.base_url}/v1/operator/raft/transfer-leader",
                params={"id": ids[target.program]},
                timeout=10,
            )
            time.sleep(0.5)


@dataclass(frozen=True, slots=True)
class Switch:
    """A switch the process logged: the server that failed, why, the next, how fast."""

    failed: str
    reason: str
    to: str
    ms: float


def logged_switches(plan: ClusterPlan, program: str) -> list[Switch]:
    """Every switch ``program`` logged, oldest first."""
    try:
        text = (plan.log_dir / f"{program}.log").read_text(errors="replace")
    except OSError:
        return []
    return [Switch(m[1], m[2], m[3], float(m[4])) for m in _SWITCH.finditer(text)]


def kill_server_in_use(
    plan: ClusterPlan, program: str, role: str, hold: float = 6.0, timeout: float = 30.0
) -> dict[str, float]:
    """SIGKILL the server ``program`` reads from (made ``role`` first, before the load);
    hold it down ``hold`` s, wait until ``program`` reads from another, start it again.

    Figures: ``switch_ms`` (the process's own, from its log: from the failure to
    another server's answer), ``new_leader_s`` for a leader. The process must end up
    holding its connections to another server.
    """
    victim = wait_in_use(plan, program)
    before = len(logged_switches(plan, program))
    pid = control.program_pid(plan, victim.program)
    if pid is None:
        raise RuntimeError(f"{victim.program} is not running")
    was_leader = secure_cluster.leader(plan) == victim
    if was_leader != (role == "leader"):
        raise RuntimeError(f"{victim.program} is no longer the {role}: the drill's setup moved")
    try:  # whatever happens, the next drill starts with every server up
        killed = kill_and_hold(plan, victim.program, pid, timeout)
        return _after_the_kill(plan, program, victim, was_leader, killed, before, hold, timeout)
    finally:
        control.start_programs(plan, [victim.program])
        wait_for_servers(plan, timeout=60)


def kill_and_hold(plan: ClusterPlan, program: str, pid: int, timeout: float) -> float:
    """SIGKILL ``program`` (at ``pid``) so that supervisord does not restart it; returns
    when it was killed (monotonic).

    A plain SIGKILL races supervisord's autorestart (seen: the server back 4 ms later,
    answering again within the election). So the process is frozen (SIGSTOP), asked to
    stop through supervisord (its SIGTERM stays pending, unhandled), then SIGKILLed:
    it dies without running any shutdown code, and supervisord, which was stopping it,
    leaves it stopped.
    """
    os.kill(pid, signal.SIGSTOP)
    stopper = threading.Thread(
        target=control.stop_in_parallel, args=(plan, [program], timeout), daemon=True
    )
    stopper.start()
    deadline = time.monotonic() + timeout
    while not _term_pending(pid):
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            raise TimeoutError(f"supervisord never asked {program} to stop")
        time.sleep(0.002)
    # Gone before our SIGKILL (it was exiting: a zombie takes the SIGSTOP; or
    # supervisord's own stop deadline came first)? Down and stopped all the same.
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    killed = time.monotonic()
    stopper.join(timeout)
    return killed


def _term_pending(pid: int) -> bool:
    """True once a SIGTERM waits, undelivered, for the (stopped) process."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return True  # gone already
    term = 1 << (signal.SIGTERM - 1)
    return any(
        line.startswith(("ShdPnd:", "SigPnd:")) and int(line.split()[1], 16) & term
        for line in status.splitlines()
    )


def _after_the_kill(
    plan: ClusterPlan,
    program: str,
    victim: AgentPlan,
    was_leader: bool,
    killed: float,
    before: int,
    hold: float,
    timeout: float,
) -> dict[str, float]:
    figures: dict[str, float] = {}
    if was_leader:
        others = [s for s in servers(plan) if s != victim]
        while secure_cluster.leader(plan, via=others[0]) in (None, victim):
            if time.monotonic() - killed > timeout:
                raise TimeoutError("no new leader")
            time.sleep(0.05)
        figures["new_leader_s"] = time.monotonic() - killed
    deadline = killed + timeout
    while len(switches := logged_switches(plan, program)) <= before:
        if time.monotonic() > deadline:
            raise TimeoutError(f"{program} logged no switch away from {victim.program}")
        time.sleep(0.05)
    switch = switches[before]
    if victim.host not in switch.failed:
        raise RuntimeError(f"unexpected switch: {switch}")
    figures["switch_ms"] = switch.ms
    while server_in_use(plan, program) in (None, victim):  # its polls moved for good
        if time.monotonic() > deadline:
            raise TimeoutError(f"{program} holds no connection to another server")
        time.sleep(0.05)
    time.sleep(max(0.0, hold - (time.monotonic() - killed)))
    return figures


def wait_for_servers(plan: ClusterPlan, timeout: float = 60.0) -> None:
    """Wait until every server is up, as a healthy voter under one leader
    (``secure_cluster.wait_for_voters``)."""
    secure_cluster.wait_for_voters(plan, timeout)


def gateway(plan: ClusterPlan) -> str:
    """The gateway's supervisor program."""
    return plan.instances_of("gateway")[0].program


def kill_in_use_under_load(
    plan: ClusterPlan,
    load: drills.GatewayLoad,
    role: str,
    label: str,
    rate: float,
    seconds: float,
) -> drills.DrillResult:
    """One drill: the server the gateway reads from made ``role``, then killed under
    ``rate`` requests a second for ``seconds``; asserts 0 failed, no duplicate order."""
    program = gateway(plan)
    victim = wait_in_use(plan, program)
    make_role(plan, victim, role)
    time.sleep(1.0)  # the gateway's polls settle on the victim in its new role
    result = drills.run_drill(
        load,
        f"kill -9 the server in use ({role}) {label}",
        lambda: kill_server_in_use(plan, program, role),
        rate,
        seconds,
    )
    print(
        f"drill {result.name}: {result.requests} requests, {len(result.failures)} failed, "
        f"{result.duplicates} duplicate orders, p99 {result.p99_ms:.0f} ms, {result.figures}"
    )
    assert result.requests == int(rate * seconds)
    assert result.failures == (), result.failures[:5]
    assert result.duplicates == 0
    control.wait_passing(plan, plan.instances(), 60)
    return result
