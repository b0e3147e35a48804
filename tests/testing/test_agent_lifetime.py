"""An agent the tests start dies with the process that started it (no orphans after a
SIGKILLed pytest), and one started from a helper thread outlives that thread."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import textwrap
import threading
import time

from consul_discovery.testing.agent import ConsulAgent, dies_with_this_process
from tests.harness.connect import REPO_ROOT


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie (reaped by nobody yet) is dead too
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split(") ", 1)[1][0] != "Z"
    except OSError:
        return False


def _gone_within(pid: int, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if not _alive(pid):
            return True
        time.sleep(0.05)
    return False


def test_an_agent_dies_with_a_test_process_killed_by_sigkill() -> None:
    script = textwrap.dedent(
        """
        from consul_discovery.testing.agent import ConsulAgent
        agent = ConsulAgent().start()
        print(agent.process.pid, agent.workdir, flush=True)
        import time
        time.sleep(120)
        """
    )
    runner = subprocess.Popen(
        [sys.executable, "-c", script], cwd=REPO_ROOT, stdout=subprocess.PIPE, text=True
    )
    agent_pid, workdir = 0, ""
    try:
        line = runner.stdout.readline() if runner.stdout else ""
        pid, _, workdir = line.strip().partition(" ")
        assert pid.isdigit() and workdir, f"the runner printed {line!r}"
        agent_pid = int(pid)
        assert _alive(agent_pid)
        runner.send_signal(signal.SIGKILL)
        runner.wait(10)
        assert _gone_within(agent_pid, 10), f"agent {agent_pid} outlived its SIGKILLed runner"
    finally:
        if runner.poll() is None:
            runner.kill()
            runner.wait(10)
        if agent_pid and _alive(agent_pid):
            os.kill(agent_pid, signal.SIGKILL)
        if workdir:  # the killed runner could not remove its agent's files
            shutil.rmtree(workdir, ignore_errors=True)
        if runner.stdout:
            runner.stdout.close()


def test_an_agent_started_from_a_helper_thread_outlives_the_thread() -> None:
    agent = ConsulAgent()
    started = threading.Thread(target=agent.start)
    started.start()
    started.join(60)
    try:
        assert agent.process is not None
        time.sleep(0.5)
        assert agent.process.poll() is None, agent.tail_log()
    finally:
        agent.cleanup()


def test_only_the_main_thread_gets_the_parent_death_signal() -> None:
    assert dies_with_this_process(["consul", "agent"])[-3:] == ["--", "consul", "agent"]
    seen: list[list[str]] = []
    helper = threading.Thread(target=lambda: seen.append(dies_with_this_process(["consul"])))
    helper.start()
    helper.join()
    assert seen == [["consul"]]
