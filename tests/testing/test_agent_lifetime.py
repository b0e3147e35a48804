"""An agent the tests start dies with the process that started it, from whichever thread
it was started (no orphans after a SIGKILLed pytest: consul_discovery.testing.lifeline),
and one started from a helper thread outlives that thread."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import textwrap
import threading
import time

from consul_discovery.testing import lifeline
from consul_discovery.testing.agent import ConsulAgent
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


def test_agents_die_with_a_test_process_killed_by_sigkill() -> None:
    # One agent started from the main thread, one from a helper thread that has ended.
    script = textwrap.dedent(
        """
        import threading, time
        from consul_discovery.testing.agent import ConsulAgent
        first, second = ConsulAgent(), ConsulAgent()
        first.start()
        helper = threading.Thread(target=second.start)
        helper.start()
        helper.join()
        for agent in (first, second):
            print(agent.process.pid, agent.workdir, flush=True)
        time.sleep(120)
        """
    )
    env = {k: v for k, v in os.environ.items() if k != lifeline.MARK}  # a run of its own
    runner = subprocess.Popen(
        [sys.executable, "-c", script], cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    agents: list[tuple[int, str]] = []
    try:
        for _ in range(2):
            line = runner.stdout.readline() if runner.stdout else ""
            pid, _, workdir = line.strip().partition(" ")
            assert pid.isdigit() and workdir, f"the runner printed {line!r}"
            agents.append((int(pid), workdir))
            assert _alive(int(pid))
        runner.send_signal(signal.SIGKILL)
        runner.wait(10)
        for pid, _ in agents:
            assert _gone_within(pid, 10), f"agent {pid} outlived its SIGKILLed runner"
    finally:
        if runner.poll() is None:
            runner.kill()
            runner.wait(10)
        for pid, workdir in agents:
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)
            shutil.rmtree(workdir, ignore_errors=True)  # the killed runner could not
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
