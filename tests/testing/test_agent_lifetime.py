"""An agent the tests start dies with the process that started it, from whichever thread
it was started (no orphans after a SIGKILLed pytest: consul_discovery.testing.lifeline),
and one started from a helper thread outlives that thread."""

from __future__ import annotations

import shutil
import textwrap
import threading
import time
from pathlib import Path

from consul_discovery.testing.agent import ConsulAgent
from tests.testing.killed_runs import alive, run_of_its_own, within


def test_agents_die_with_a_test_process_killed_by_sigkill_and_their_files_go() -> None:
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
    with run_of_its_own(script, lines=2) as (printed, kill):
        agents = [(int(pid), Path(workdir)) for pid, workdir in (p.split() for p in printed)]
        try:
            assert all(alive(pid) and workdir.is_dir() for pid, workdir in agents)
            kill()
            for pid, workdir in agents:
                assert within(10, lambda pid=pid: not alive(pid)), f"agent {pid} outlived it"
                assert within(10, lambda w=workdir: not w.exists()), f"{workdir} was left"
        finally:
            for _, workdir in agents:
                shutil.rmtree(workdir, ignore_errors=True)


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
