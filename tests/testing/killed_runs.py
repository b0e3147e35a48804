"""A test run of its own, killed with SIGKILL: what it started must not outlive it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from consul_discovery.testing import lifeline

REPO_ROOT = Path(__file__).resolve().parents[2]


def alive(pid: int) -> bool:
    """True while ``pid`` runs (a zombie, reaped by nobody yet, has ended)."""
    return lifeline.start_time(pid) is not None


def within(seconds: float, done: Callable[[], bool]) -> bool:
    """True once ``done()`` is, polled for at most ``seconds``."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if done():
            return True
        time.sleep(0.05)
    return done()


@contextmanager
def run_of_its_own(script: str, lines: int) -> Iterator[tuple[list[str], Callable[[], None]]]:
    """Run ``script`` as a test run of its own (outside this run's mark); yield the
    first ``lines`` lines it prints and a function that SIGKILLs it. Afterwards every
    PID those lines start with is killed if still alive (the test has failed then)."""
    env = {k: v for k, v in os.environ.items() if k != lifeline.MARK}
    runner = subprocess.Popen(
        [sys.executable, "-c", script], cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    printed: list[str] = []

    def kill() -> None:
        runner.send_signal(signal.SIGKILL)
        runner.wait(10)

    try:
        assert runner.stdout is not None
        for _ in range(lines):
            printed.append(runner.stdout.readline().strip())
        assert all(printed), f"the runner printed {printed!r}"
        yield printed, kill
    finally:
        if runner.poll() is None:
            kill()
        for line in printed:
            for word in line.split():
                if word.isdigit() and alive(int(word)):
                    os.kill(int(word), signal.SIGKILL)
        if runner.stdout:
            runner.stdout.close()
