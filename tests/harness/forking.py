"""Run a check in a forked child while the parent acts: for what must hold after fork."""

from __future__ import annotations

import os
import time
from collections.abc import Callable


def in_child(
    body: Callable[[], bool], parent: Callable[[], None], timeout: float, failed: str
) -> None:
    """Fork; the child exits 0 if ``body()`` is True (2 if False, 1 if it raised, with its
    traceback); the parent runs ``parent`` meanwhile, then waits up to ``timeout`` seconds
    for the child and asserts it passed (``failed``: what a failure means). The child is
    killed and reaped whatever happens."""
    pid = os.fork()
    if pid == 0:  # the child: never return into pytest
        code = 1
        try:
            code = 0 if body() else 2
        except BaseException:
            import traceback

            traceback.print_exc()
        finally:
            os._exit(code)
    try:
        parent()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                assert os.waitstatus_to_exitcode(status) == 0, failed
                return
            time.sleep(0.02)
        raise AssertionError(f"the forked child did not finish within {timeout}s")
    finally:
        try:
            os.kill(pid, 9)
            os.waitpid(pid, 0)
        except (ProcessLookupError, ChildProcessError):
            pass
