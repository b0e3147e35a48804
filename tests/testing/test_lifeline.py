"""The test run's lifeline (consul_discovery.testing.lifeline): what a killed run started
dies with it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from consul_discovery.testing import lifeline

REPO_ROOT = Path(__file__).resolve().parents[2]


def _gone_within(pid: int, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if lifeline.start_time(pid) is None:
            return True
        time.sleep(0.05)
    return False


def test_a_mark_names_a_process_by_pid_and_start_time() -> None:
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        mark = lifeline.mark_of(child.pid)
        assert mark.startswith(f"{child.pid}:")
        assert lifeline.is_alive(mark)
        pid, started = mark.split(":")
        assert not lifeline.is_alive(f"{pid}:{int(started) + 1}")  # the PID, reused
    finally:
        child.kill()
        child.wait(10)
    assert not lifeline.is_alive(mark)


def test_only_processes_carrying_the_runs_mark_are_found() -> None:
    mark = "1:2"
    env = {**os.environ, lifeline.MARK: mark}
    sleep = [sys.executable, "-c", "import time; time.sleep(30)"]
    ours = subprocess.Popen(sleep, env=env)
    other = subprocess.Popen(sleep, env={**os.environ, lifeline.MARK: "1:3"})
    try:
        assert lifeline.marked(mark) == [ours.pid]
    finally:
        for process in (ours, other):
            process.kill()
            process.wait(10)
    assert lifeline.marked(mark) == []


def test_a_sweep_terms_then_kills_what_is_left() -> None:
    alive = {10: "stubborn", 11: "polite"}
    sent: list[tuple[int, int]] = []

    def kill(pid: int, sig: int) -> None:
        sent.append((pid, sig))
        if pid == 11 or sig == signal.SIGKILL:
            alive.pop(pid, None)

    signalled = lifeline.sweep(
        "1:2", grace=0.3, find=lambda _mark: sorted(alive), kill=kill, sleep=lambda _s: None
    )
    assert signalled == [10, 11]
    assert sent == [(10, signal.SIGTERM), (11, signal.SIGTERM), (10, signal.SIGKILL)]


def test_a_sweep_kills_what_comes_back_in_later_rounds() -> None:
    rounds = [[20], [21], [21], [], []]  # a supervisord restarted a program once
    sent: list[tuple[int, int]] = []

    def find(_mark: str) -> list[int]:
        return rounds.pop(0) if rounds else []

    lifeline.sweep("1:2", grace=0.0, find=find, kill=lambda p, s: sent.append((p, s)),
                   sleep=lambda _s: None)  # fmt: skip
    assert (21, signal.SIGKILL) in sent


def test_a_run_already_marked_launches_no_second_watchdog(monkeypatch) -> None:
    monkeypatch.setattr(lifeline, "_launch", lambda *_: pytest.fail("launched a watchdog"))
    environ = {lifeline.MARK: "1:2"}
    assert lifeline.mark_run(environ) == "1:2"
    assert lifeline.process_mark(environ) == "1:2"
    assert environ == {lifeline.MARK: "1:2"}


def test_a_process_outside_any_run_launches_its_watchdog_once(monkeypatch) -> None:
    launched: list[str] = []
    monkeypatch.setattr(lifeline, "_launch", lambda mark, _env: launched.append(mark))
    monkeypatch.setattr(lifeline, "_launched", {})
    first = lifeline.process_mark({})
    assert lifeline.process_mark({}) == first == lifeline.mark_of(os.getpid())
    assert launched == [first]


def test_what_a_sigkilled_run_started_dies_with_it() -> None:
    # The runner stands for a pytest run: it starts its lifeline, a child, and a daemon
    # (a child of init once its launcher is gone, as supervisord is), then is SIGKILLed.
    script = textwrap.dedent(
        """
        import subprocess, sys, time
        from consul_discovery.testing import lifeline
        lifeline.mark_run()
        sleep = [sys.executable, "-c", "import time; time.sleep(60)"]
        child = subprocess.Popen(sleep, start_new_session=True)
        daemon = subprocess.run(
            ["sh", "-c", f"{sys.executable} -c 'import time; time.sleep(60)' "
                         "</dev/null >/dev/null 2>&1 & echo $!"],
            capture_output=True, text=True, check=True,
        ).stdout.strip()
        print(child.pid, daemon, flush=True)
        time.sleep(120)
        """
    )
    env = {k: v for k, v in os.environ.items() if k != lifeline.MARK}  # a run of its own
    runner = subprocess.Popen(
        [sys.executable, "-c", script], cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    pids: list[int] = []
    try:
        line = runner.stdout.readline() if runner.stdout else ""
        pids = [int(word) for word in line.split()]
        assert len(pids) == 2, f"the runner printed {line!r}"
        assert all(lifeline.start_time(pid) is not None for pid in pids)
        runner.send_signal(signal.SIGKILL)
        runner.wait(10)
        for pid in pids:
            assert _gone_within(pid, 10), f"{pid} outlived its SIGKILLed run"
    finally:
        if runner.poll() is None:
            runner.kill()
            runner.wait(10)
        for pid in pids:
            if lifeline.start_time(pid) is not None:
                os.kill(pid, signal.SIGKILL)
        if runner.stdout:
            runner.stdout.close()
