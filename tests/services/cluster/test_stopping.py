"""The stop bound comes from the programs' own stop settings, and a stop holds.

The unit tests read the supervisord config a plan renders: each program's
``stopwaitsecs`` (when supervisord SIGKILLs it) must be what ``stopping`` derives from
its drain and its server's graceful timeout, and a wait for a parallel stop must outlast
the longest of them. The last test runs a real supervisord: a program killed -9 just
before it is asked to stop (supervisord answers NOT_RUNNING, then autorestarts it) must
end up stopped, not running until the wait times out (the full-size secure drill's
"timed out after 30s waiting for every instance to drain and stop").
"""

from __future__ import annotations

import configparser
import contextlib
import os
import shlex
import signal
import subprocess
import sys
import time
import xmlrpc.client
from collections.abc import Iterator
from pathlib import Path

import pytest
from supervisor.xmlrpc import SupervisorTransport

from services.cluster import control, stopping
from services.cluster.plan import ClusterPlan
from services.cluster.supervisor_conf import render


def rendered_programs(plan: ClusterPlan) -> dict[str, dict[str, str]]:
    """Each ``[program:x]`` section of the plan's supervisord config, by program."""
    parser = configparser.RawConfigParser(strict=False)
    parser.read_string(render(plan, "consul", "prometheus", consul_sd=False))
    return {
        name.removeprefix("program:"): dict(parser[name])
        for name in parser.sections()
        if name.startswith("program:")
    }


PLANS = [
    pytest.param({"drain_seconds": 2.0}, id="dev, 2 s drain"),
    pytest.param({"drain_seconds": 0.5, "inventories": 4}, id="dev, 0.5 s drain"),
    pytest.param({"drain_seconds": 60.0, "users": 5}, id="dev, 60 s drain"),
    pytest.param({"drain_seconds": 1.0, "profile": "secure"}, id="secure, 1 s drain"),
]


@pytest.mark.parametrize("settings", PLANS)
def test_each_programs_stopwaitsecs_is_the_derived_stop_wait(
    tmp_path: Path, settings: dict[str, object]
) -> None:
    plan = ClusterPlan(run_dir=tmp_path, **settings)  # type: ignore[arg-type]
    programs = rendered_programs(plan)
    assert set(programs) >= {i.program for i in plan.instances()} | {
        a.program for a in plan.agents()
    }
    for name, section in programs.items():
        assert int(section["stopwaitsecs"]) == stopping.stop_wait(plan, name), name
    graceful = str(stopping.GRACEFUL_SECONDS)
    for inst in plan.instances():
        command = shlex.split(programs[inst.program]["command"])
        flag = "--timeout-graceful-shutdown" if "uvicorn" in command else "--graceful-timeout"
        assert command[command.index(flag) + 1] == graceful, inst.program
        # SIGKILL only after the drain and the graceful stop could both have run out
        assert int(programs[inst.program]["stopwaitsecs"]) >= (
            plan.drain_seconds + stopping.GRACEFUL_SECONDS
        )


@pytest.mark.parametrize("settings", PLANS)
def test_a_parallel_stop_is_waited_for_past_every_programs_sigkill(
    tmp_path: Path, settings: dict[str, object]
) -> None:
    plan = ClusterPlan(run_dir=tmp_path, **settings)  # type: ignore[arg-type]
    programs = rendered_programs(plan)
    instances = [i.program for i in plan.instances()]
    bound = stopping.parallel_stop_bound(plan, instances)
    longest = max(int(programs[name]["stopwaitsecs"]) for name in instances)
    assert bound == (
        longest + stopping.SUPERVISOR_SLACK + stopping.STOP_REQUEST_SECONDS * len(instances)
    )
    assert bound > longest  # never gives up before supervisord's SIGKILL has come
    assert bound < sum(int(programs[name]["stopwaitsecs"]) for name in instances)  # parallel
    server = plan.agents()[0].program
    assert stopping.parallel_stop_bound(plan, [server]) == (
        stopping.AGENT_STOP_WAIT + stopping.SUPERVISOR_SLACK + stopping.STOP_REQUEST_SECONDS
    )
    with pytest.raises(ValueError, match="not a program"):
        stopping.stop_wait(plan, "no-such-program")


def test_the_bound_grows_with_the_drain(tmp_path: Path) -> None:
    short = ClusterPlan(run_dir=tmp_path, drain_seconds=1.0)
    long = ClusterPlan(run_dir=tmp_path, drain_seconds=90.0)
    programs = [i.program for i in short.instances()]
    assert stopping.parallel_stop_bound(long, programs) - stopping.parallel_stop_bound(
        short, programs
    ) == pytest.approx(89.0)
    assert stopping.parallel_stop_bound(long, programs) > 90 + stopping.GRACEFUL_SECONDS


def test_a_process_is_exec_pending_between_its_fork_and_its_exec() -> None:
    # The parent forks a child that waits, then execs sleep; it prints the child's pid.
    script = (
        "import os, sys, time\n"
        "pid = os.fork()\n"
        "if pid == 0:\n"
        "    time.sleep(1.0)\n"
        "    os.execv('/bin/sleep', ['sleep', '30'])\n"
        "print(pid, flush=True)\n"
        "os.waitpid(pid, 0)\n"
    )
    parent = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    child = parent.pid  # until it prints its child's
    try:
        assert parent.stdout is not None
        child = int(parent.stdout.readline())
        assert control._exec_pending(child)  # still a copy of its parent
        deadline = time.monotonic() + 10
        while control._exec_pending(child):
            assert time.monotonic() < deadline, "the child never exec'd"
            time.sleep(0.01)
        # Mid-exec the command line reads empty for a moment (CI saw b''): not pending
        # any more (past exec's point of no return a TERM kills it), and sleep's soon.
        while not Path(f"/proc/{child}/cmdline").read_bytes().startswith(b"sleep"):
            assert time.monotonic() < deadline, "the child's exec never showed sleep"
            time.sleep(0.01)
        assert not control._exec_pending(parent.pid)  # a process that has exec'd
        os.kill(child, signal.SIGKILL)
        parent.wait(timeout=10)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(child, signal.SIGKILL)
        parent.kill()
        parent.wait(timeout=10)
    assert not control._exec_pending(child)  # gone: /proc cannot say


def test_a_program_running_before_its_exec_is_asked_only_once_it_has_execd(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With ``startsecs=0`` supervisord reports a respawned program RUNNING from its
    fork on, so the pre-exec check must not look at STARTING only: a TERM asked for
    then is swallowed by the child's copy of supervisord's handler, and the stop takes
    the whole ``stopwaitsecs`` (CI saw 5.1 s in the test below)."""
    script = (
        "import os, sys, time\n"
        "pid = os.fork()\n"
        "if pid == 0:\n"
        "    time.sleep(0.5)\n"
        "    os.execv('/bin/sleep', ['sleep', '30'])\n"
        "print(pid, flush=True)\n"
        "os.waitpid(pid, 0)\n"
    )
    parent = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    child = 0
    asked: list[bool] = []  # per stop request: whether the child was still a copy

    class FakeSupervisord:
        def getAllProcessInfo(self) -> list[dict[str, object]]:  # XML-RPC names
            state = "STOPPED" if asked else "RUNNING"
            return [{"name": "prometheus-targets", "statename": state, "pid": child}]

        def stopProcess(self, name: str, wait: bool) -> bool:  # XML-RPC names
            asked.append(control._exec_pending(child))
            return True

    monkeypatch.setattr(control, "_rpc", lambda plan: FakeSupervisord())
    try:
        assert parent.stdout is not None
        child = int(parent.stdout.readline())
        assert control._exec_pending(child)
        control.stop_in_parallel(ClusterPlan(run_dir=tmp_path), ["prometheus-targets"], 10)
        assert asked == [False], asked  # asked once, after the exec
    finally:
        with contextlib.suppress(ProcessLookupError):
            if child:
                os.kill(child, signal.SIGKILL)
        parent.kill()
        parent.wait(timeout=10)


# ---- a real supervisord: kill -9, then stop ------------------------------------------


def _conf(plan: ClusterPlan, program: str) -> str:
    return f"""[supervisord]
logfile={plan.run_dir / "supervisord.log"}
pidfile={plan.supervisor_pidfile}
[unix_http_server]
file={plan.supervisor_socket}
chmod=0700
[rpcinterface:supervisor]
supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface
[program:{program}]
command=sleep 1000
startsecs=0
autorestart=true
stopsignal=TERM
stopwaitsecs={stopping.stop_wait(plan, program)}
"""


@pytest.fixture
def supervised(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ClusterPlan, str]]:
    """A supervisord running one autorestarting program, with the stop settings of the
    plan's targets bridge (the shortest stopwaitsecs: a TERM that reaches a program
    just spawned, before its exec, is lost, and only supervisord's SIGKILL ends it)."""
    run_dir = tmp_path_factory.mktemp("sv")  # short: the control socket's path is bounded
    plan = ClusterPlan(run_dir=run_dir, drain_seconds=1.0)
    program = "prometheus-targets"
    conf = run_dir / "supervisord.conf"
    conf.write_text(_conf(plan, program))
    supervisord = str(Path(sys.executable).with_name("supervisord"))
    subprocess.run([supervisord, "-c", str(conf)], check=True, timeout=30)
    try:
        yield plan, program
    finally:
        pid = control.supervisord_pid(plan)
        if pid is not None:
            os.kill(pid, signal.SIGTERM)  # it stops its program, then exits
            deadline = time.monotonic() + 30
            while control.supervisord_pid(plan) is not None and time.monotonic() < deadline:
                time.sleep(0.1)


def _rpc(plan: ClusterPlan) -> xmlrpc.client.ServerProxy:
    transport = SupervisorTransport(None, None, f"unix://{plan.supervisor_socket}")
    return xmlrpc.client.ServerProxy("http://127.0.0.1", transport=transport).supervisor


def _running_pid(rpc: xmlrpc.client.ServerProxy, program: str) -> int:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        info = rpc.getProcessInfo(program)
        if info["statename"] == "RUNNING":
            return int(info["pid"])
        if info["statename"] in ("STOPPED", "EXITED", "FATAL"):
            with contextlib.suppress(xmlrpc.client.Fault):
                rpc.startProcess(program, False)
        time.sleep(0.05)
    raise TimeoutError(f"{program} is not running: {rpc.getProcessInfo(program)}")


def test_a_program_killed_just_before_its_stop_stays_stopped(
    supervised: tuple[ClusterPlan, str],
) -> None:
    plan, program = supervised
    rpc = _rpc(plan)
    # The gap between the kill and the stop request sweeps over supervisord's EXITED
    # window (before it autorestarts the program): asked then, it answers NOT_RUNNING.
    # A gap of a few tens of ms has the request arrive as supervisord respawns it, before
    # the new process's exec: a TERM sent then is lost, and only supervisord's SIGKILL,
    # stopwaitsecs later, would end it. So the stop must end well before that.
    lost_signal = stopping.stop_wait(plan, program)
    for gap in (0.0, 0.005, 0.01, 0.02, 0.03, 0.04, 0.05):
        os.kill(_running_pid(rpc, program), signal.SIGKILL)
        time.sleep(gap)
        started = time.monotonic()
        control.stop_in_parallel(plan, [program])
        took = time.monotonic() - started
        assert took < lost_signal - 1.0, (gap, took)
        time.sleep(stopping.AUTORESTART_SECONDS + 0.5)  # a restart would have happened
        state = rpc.getProcessInfo(program)["statename"]
        assert state == "STOPPED", (gap, state)
