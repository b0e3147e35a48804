"""The test run's lifeline (consul_discovery.testing.lifeline): what a killed run started
dies with it."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from consul_discovery.testing import lifeline
from tests.testing.killed_runs import alive, run_of_its_own, within


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
    # The runner stands for a pytest run: it marks its run, starts a child and a daemon
    # (a child of init once its launcher is gone, as supervisord is), leaves a directory
    # to the run, and is SIGKILLed.
    script = textwrap.dedent(
        """
        import subprocess, sys, tempfile, time
        from pathlib import Path
        from consul_discovery.testing import lifeline
        lifeline.mark_run()
        sleep = [sys.executable, "-c", "import time; time.sleep(60)"]
        child = subprocess.Popen(sleep, start_new_session=True)
        daemon = subprocess.run(
            ["sh", "-c", f"{sys.executable} -c 'import time; time.sleep(60)' "
                         "</dev/null >/dev/null 2>&1 & echo $!"],
            capture_output=True, text=True, check=True,
        ).stdout.strip()
        left = Path(tempfile.mkdtemp(prefix="lifeline-test-"))
        (left / "data").write_text("x")
        lifeline.remove_after_run(left)
        print(child.pid, daemon, left, flush=True)
        time.sleep(120)
        """
    )
    with run_of_its_own(script, lines=1) as (printed, kill):
        child, daemon, left = printed[0].split()
        pids = [int(child), int(daemon)]
        try:
            assert all(alive(pid) for pid in pids)
            kill()
            for pid in pids:
                assert within(10, lambda pid=pid: not alive(pid)), f"{pid} outlived its run"
            assert within(10, lambda: not Path(left).exists()), f"{left} was left"
        finally:
            shutil.rmtree(left, ignore_errors=True)


def test_the_paths_a_run_left_are_removed_once(tmp_path: Path) -> None:
    mark = f"{os.getpid()}:0"  # a run no process is: its list is this test's alone
    environ = {lifeline.MARK: mark}
    kept, gone = tmp_path / "kept", tmp_path / "gone"
    kept.mkdir()
    (kept / "file").write_text("x")
    for path in (kept, kept, gone):  # kept twice: an agent started again
        lifeline.remove_after_run(path, environ)
    listed = lifeline._paths_file(mark).read_text().splitlines()
    assert listed == [str(kept.resolve()), str(gone.resolve())]
    assert lifeline.remove_left_paths(mark) == [kept.resolve()]
    assert not kept.exists()
    assert lifeline.remove_left_paths(mark) == []  # the list went with them


def test_a_list_anyone_may_write_or_a_symlink_removes_nothing(tmp_path: Path) -> None:
    mark = f"{os.getpid()}:1"
    kept = tmp_path / "kept"
    kept.mkdir()
    lifeline.remove_after_run(kept, {lifeline.MARK: mark})
    listed = lifeline._paths_file(mark)
    try:
        listed.chmod(0o666)  # another user could have written it
        assert lifeline.remove_left_paths(mark) == []
        listed.chmod(0o600)
        moved = listed.with_suffix(".moved")
        listed.rename(moved)
        listed.symlink_to(moved)  # a planted link
        assert lifeline.remove_left_paths(mark) == []
        assert kept.is_dir()
    finally:
        for path in (listed, listed.with_suffix(".moved")):
            path.unlink(missing_ok=True)
