"""Every process a test run starts dies with the run, however the run ends.

A run is named by a mark, ``TEST_RUN_LIFELINE=<pid>:<start time>`` of its first
process, carried in the environment of every process the run starts. A watchdog, in a
session of its own (a signal to the run's process group does not reach it) and holding
none of the run's files, waits for that first process to end, then stops every process
that carries the mark: SIGTERM, then SIGKILL for what is left after a grace period,
round after round until none is left (a supervisord may restart a program meanwhile).
Then it exits. A run killed with SIGKILL (the OOM killer, a CI timeout) used to leave
its agents and servers running and their ports taken.

* ``ConsulAgent`` gives each agent it starts the mark (``process_mark``): the run's, or
  one of its own process, whose watchdog it launches on first use; so an agent dies with
  the process that started it, from whichever thread it was started.
* ``remove_after_run(path)`` leaves a directory to the watchdog: removed once the run's
  processes are gone (a killed run's agents' data and logs).
* A test suite can mark its whole run (``mark_run``, e.g. in ``pytest_configure``): then
  every process started after that inherits the mark too, its servers' workers, a
  daemonized supervisord and its programs included. This repository's suite does.

The mark names the run by PID *and* start time, so a reused PID is never taken for the
run, and processes of another run carry another mark or none and are never touched.
The watchdog is this file run as a script (standard library only):
``python lifeline.py [--detach] <pid>:<start time>``.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Mapping, MutableMapping
from pathlib import Path

#: The environment variable that names the test run a process belongs to.
MARK = "TEST_RUN_LIFELINE"
PROC = Path("/proc")


def start_time(pid: int, proc: Path = PROC) -> str | None:
    """``pid``'s start time in clock ticks since boot (``/proc/<pid>/stat`` field 22);
    None when there is no such process (or it is a zombie that no longer has one)."""
    try:
        line = (proc / str(pid) / "stat").read_text()
    except OSError:
        return None
    fields = line[line.rindex(")") + 2 :].split()  # the name may hold spaces and parens
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
    return carrying(MARK, mark, proc)


def carrying(name: str, value: str, proc: Path = PROC) -> list[int]:
    """PIDs of live processes (not this one, no zombie) whose environment has
    ``name=value``, in PID order (a process of another user's is not ours to read)."""
    wanted = f"{name}={value}".encode()
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
    """Wait until the run's first process has ended, then sweep its processes and remove
    the paths it left to the run (``remove_after_run``)."""
    while is_alive(mark):
        time.sleep(poll)
    sweep(mark)
    remove_left_paths(mark)


def _paths_file(mark: str) -> Path:
    """Where the run's paths to remove are listed (in the temporary directory)."""
    return Path(tempfile.gettempdir()) / f"test-run-lifeline-{mark.replace(':', '-')}.paths"


_listed: set[tuple[str, Path]] = set()  # (mark, path) this process has listed already


def remove_after_run(path: Path, environ: Mapping[str, str] = os.environ) -> None:
    """Have the run's watchdog remove ``path`` (a directory of this user's) once the run
    has ended and its processes are gone: what a killed run's agents leave (their data
    and logs) is removed too. A path already removed by then is skipped; a path this
    process listed already (an agent started again) is not listed twice."""
    mark, resolved = process_mark(environ), Path(path).resolve()
    if (mark, resolved) in _listed:
        return
    flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW
    fd = os.open(_paths_file(mark), flags, 0o600)
    try:
        _check_ours(fd)
        os.write(fd, f"{resolved}\n".encode())  # one short append: whole, beside others'
    finally:
        os.close(fd)
    _listed.add((mark, resolved))


def remove_left_paths(mark: str) -> list[Path]:
    """Remove every directory the run left (``remove_after_run``) and the list; the
    directories that were there. A list or a directory that is not this user's own, or
    that anyone else may write to, is left alone (the names in the temporary directory
    can be guessed)."""
    listed = _paths_file(mark)
    try:
        fd = os.open(listed, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError:
        return []
    try:
        _check_ours(fd)
        with open(fd, "rb", closefd=False) as f:
            lines = f.read().decode().splitlines()
    except (OSError, UnicodeDecodeError):  # PermissionError: not ours
        return []
    finally:
        os.close(fd)
    removed = []
    for line in dict.fromkeys(lines):
        path = Path(line)
        try:
            info = path.lstat() if line and path.is_absolute() else None
        except OSError:
            continue
        if info is not None and stat.S_ISDIR(info.st_mode) and info.st_uid == os.getuid():
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
    listed.unlink(missing_ok=True)
    _listed.difference_update({entry for entry in _listed if entry[0] == mark})
    return removed


def _check_ours(fd: int) -> None:
    """PermissionError unless ``fd`` is a regular file of this user's that only this
    user may write to."""
    info = os.fstat(fd)
    if (
        not stat.S_ISREG(info.st_mode)
        or info.st_uid != os.getuid()
        or info.st_mode & (stat.S_IWGRP | stat.S_IWOTH)
    ):
        raise PermissionError("the run's list of paths is not this user's own")


_launched: dict[int, str] = {}  # this process's own mark, by PID (a fork has its own)
_launch_lock = threading.Lock()


def process_mark(environ: Mapping[str, str] = os.environ) -> str:
    """The mark for a process this one starts: the run's (in ``environ``), or else this
    process's own, whose watchdog is launched on first use (once per process)."""
    mark = environ.get(MARK)
    if mark:
        return mark
    pid = os.getpid()
    with _launch_lock:
        mark = _launched.get(pid)
        if mark is None:
            mark = mark_of(pid)
            _launch(mark, environ)
            _launched[pid] = mark
    return mark


def mark_run(environ: MutableMapping[str, str] = os.environ) -> str:
    """Mark this process's run in ``environ``, so every process started after this
    inherits the mark; the run's mark as it was when ``environ`` had one already (an
    xdist worker, a pytest run by a test), else this process's own (``process_mark``)."""
    mark = process_mark(environ)
    environ[MARK] = mark
    return mark


def _launch(mark: str, environ: Mapping[str, str]) -> None:
    """Start the watchdog of ``mark``: the launcher forks it and returns at once (waited
    for here), so the watchdog is nobody's child to wait for and holds no pipe open."""
    subprocess.run(
        [sys.executable, "-I", str(Path(__file__).resolve()), "--detach", mark],
        env={k: v for k, v in environ.items() if k != MARK},
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
        check=True,
        timeout=30,
    )


def main(argv: list[str]) -> int:
    """``[--detach] <mark>``: watch the run (in a forked child when detached)."""
    detach = argv[:1] == ["--detach"]
    args = argv[1:] if detach else argv
    if len(args) != 1 or ":" not in args[0]:
        print("usage: python lifeline.py [--detach] <pid>:<start time>", file=sys.stderr)
        return 2
    if detach and os.fork() != 0:
        return 0
    watch(args[0])
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
