"""Keep ``os.fork`` from landing in the middle of the registrar thread's work.

gunicorn's master runs the registrar thread and forks workers whenever it likes. If a
fork lands while that thread is inside a first-time import (``requests`` imports
``netrc`` lazily on every session's first request, for one), the worker inherits that
module's import lock held by a thread that does not exist there, and the worker's own
first import of the module hangs forever. Seen: a restarted order-service worker whose
first Consul query never returned.

The registrar thread does each unit of work (register, reconcile, heartbeat, drain,
deregister) inside :func:`no_fork`; a fork waits for the unit in progress to end (each
is bounded by its HTTP timeout) and none starts until the fork is done.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager

_guard = threading.RLock()  # held by the registrar thread per unit, by os.fork around it


def _release_after_fork() -> None:
    _guard.release()


os.register_at_fork(
    before=_guard.acquire,
    after_in_parent=_release_after_fork,
    after_in_child=_release_after_fork,
)


@contextmanager
def no_fork() -> Iterator[None]:
    """Hold off any fork in this process until the block ends."""
    with _guard:
        yield
