"""Every process a test run starts dies with the run, however the run ends.

The run's first pytest process (xdist's controller, or a run without xdist) puts
``TEST_RUN_LIFELINE=<pid>:<start time>`` into its own environment when it starts; every
process started after that inherits it: xdist's workers, gunicorn and its workers,
uvicorn, Consul agents, ``consul connect proxy``, a test cluster's supervisord (which
daemonizes) and its programs. A watchdog, in a session of its own (a signal to the run's
process group does not reach it) and holding none of the run's files, waits for that
process to end, then stops every process that carries the mark: SIGTERM, then SIGKILL
for what is left after a grace period, round after round until none is left (a
supervisord may restart a program meanwhile). Then it exits.

A run killed with SIGKILL (the OOM killer, a CI timeout, a Ctrl-C that pytest did not
get to handle) used to leave its servers running and their ports taken. The mark names
the run by PID *and* start time, so a reused PID is never taken for the run, and
processes of another run (a second ``make test``, a ``make run-cluster``) carry another
mark or none and are never touched. The environment scrubbing some tests do
(``CONSUL_*``, ``SERVICE_*``, ``DISCOVERY_*``, ``CONSUL_DISCOVERY_*``) leaves this name alone.

``python -m tests.harness.lifeline <mark>`` is the watchdog; ``start()`` launches it.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, MutableMapping
from pathlib import Path

#: The environment variable that names the test run a process belongs to.
MARK = "TEST_RUN_LIFELINE"
PROC = Path("/proc")
REPO_ROOT = Path(__file__).resolve().parents[2]


def start_time(pid: int, proc: Path = PROC) -> str | None:
    """``pid``'s start time in clock ticks since boot (``/proc/<pid>/stat`` field 22);
    None when there is no such process (or it is a zombie that no longer has one)."""
    try:
        stat = (proc / str(pid) / "stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2 :].split()  # the name may hold spaces and parens
    if fields[0] == "Z":  # exited, not yet reaped: it is over
        return None
    return fields[19]


def mark_of(pid: int, proc: Path = PROC) -> str:
    """The mark naming the run whose first process is ``pid``."""
    started = start_time(pid, proc)
    if started is None:
        raise ProcessLookupError(f"no process {pid}")
    return f"{pid}:{started}"


def is_alive(mark: str, proc: Path = PROC) -> bool:
    """True while the process that ``mark`` names runs (the same PID, the same start)."""
    pid, started = mark.split(":")
    return start_time(int(pid), proc) == started


def marked(mark: str, proc: Path = PROC) -> list[int]:
    """PIDs of live processes (not this one) carrying ``mark``, in PID order."""
    wanted = f"{MARK}={mark}".encode()
    me = os.getpid()
    found = []
    for entry in proc.iterdir():
        if not entry.name.isdigit() or int(entry.name) == me:
            continue
        try:
            environ = (entry / "environ").read_bytes()
        except OSError:  # gone, a zombie, or not ours to read
            continue
        if wanted in environ.split(b"\0") and start_time(int(entry.name), proc) is not None:
            found.append(int(entry.name))
    return sorted(found)


def sweep(
    mark: str,
    *,
    grace: float = 3.0,
    rounds: int = 5,
    find: Callable[[str], list[int]] = marked,
    kill: Callable[[int, int], None] = os.kill,
    sleep: Callable[[float], None] = time.sleep,
) -> list[int]:
    """Stop every process carrying ``mark``: SIGTERM, SIGKILL after ``grace`` seconds for
    what is left, for at most ``rounds`` rounds (the last ones SIGKILL at once). Returns
    every PID it signalled."""
    signalled: list[int] = []
    for n in range(rounds):
        pids = find(mark)
        if not pids:
            break
        first = signal.SIGTERM if n == 0 else signal.SIGKILL
        for pid in pids:
            _signal(kill, pid, first)
        signalled += [pid for pid in pids if pid not in signalled]
        if first == signal.SIGTERM:
            deadline = grace
            while deadline > 0 and find(mark):
                sleep(0.1)
                deadline -= 0.1
            for pid in find(mark):
                _signal(kill, pid, signal.SIGKILL)
        sleep(0.1)  # a supervisord's restart, a child's exit, seen next round
    return signalled


def _signal(kill: Callable[[int, int], None], pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        kill(pid, sig)


def watch(mark: str, poll: float = 0.2) -> None:
    """Wait until the run's first process has ended, then sweep its processes."""
    while is_alive(mark):
        time.sleep(poll)
    sweep(mark)


def start(environ: MutableMapping[str, str] = os.environ) -> str | None:
    """Mark this process's run and launch its watchdog; None (nothing done) when this
    process belongs to a run already (an xdist worker, a pytest run by a test)."""
    if environ.get(MARK):
        return None
    mark = mark_of(os.getpid())
    env = {k: v for k, v in environ.items() if k != MARK}
    env["PYTHONPATH"] = str(REPO_ROOT)
    # The launcher forks the watchdog and returns at once (waited for here): the watchdog
    # is nobody's child to wait for, and holds no pipe of this run's output open.
    subprocess.run(
        [sys.executable, "-m", "tests.harness.lifeline", "--detach", mark],
        env=env,
        cwd=REPO_ROOT,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
        check=True,
        timeout=30,
    )
    environ[MARK] = mark
    return mark


def main(argv: list[str]) -> int:
    """``[--detach] <mark>``: watch the run (in a forked child when detached)."""
    detach = argv[:1] == ["--detach"]
    args = argv[1:] if detach else argv
    if len(args) != 1 or ":" not in args[0]:
        print("usage: python -m tests.harness.lifeline [--detach] <pid>:<start time>",
              file=sys.stderr)  # fmt: skip
        return 2
    if detach and os.fork() != 0:
        return 0
    watch(args[0])
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
