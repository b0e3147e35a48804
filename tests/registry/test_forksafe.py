"""A fork waits for the registrar thread's unit of work in progress, then proceeds."""

from __future__ import annotations

import os
import threading
import time

from consul_discovery.registry.forksafe import no_fork


def test_fork_waits_for_a_unit_in_progress() -> None:
    inside = threading.Event()
    released_at: list[float] = []

    def unit() -> None:
        with no_fork():
            inside.set()
            time.sleep(0.3)
            released_at.append(time.monotonic())

    worker = threading.Thread(target=unit)
    worker.start()
    assert inside.wait(5)
    pid = os.fork()
    if pid == 0:  # the child: leave at once, touching nothing
        os._exit(0)
    forked_at = time.monotonic()
    _, status = os.waitpid(pid, 0)
    worker.join(5)
    assert os.waitstatus_to_exitcode(status) == 0
    assert released_at and forked_at >= released_at[0]


def test_units_run_again_after_a_fork() -> None:
    pid = os.fork()
    if pid == 0:
        # In the child the guard is free again: a unit can run there too.
        with no_fork():
            pass
        os._exit(0)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    done = threading.Event()

    def unit() -> None:
        with no_fork():
            done.set()

    threading.Thread(target=unit).start()
    assert done.wait(5)
