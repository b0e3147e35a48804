"""Objects that start over in a forked child, where their parent's threads do not exist.

``gunicorn --preload`` (or any ``os.fork``) copies a process with one thread: a started
``ConfigClient``'s watch and applier threads stay behind in the parent, and the locks
one of them held stay held. ``restart_in_children(obj)`` registers ``obj`` so that, in
every forked child, ``obj._restart_in_child()`` runs (on the child's only thread, right
after the fork) until ``stop_restarting(obj)``.
"""

from __future__ import annotations

import logging
import os
import weakref
from typing import Protocol

log = logging.getLogger("consul_discovery.config")


class Restartable(Protocol):
    """Something that can start its own threads again in a forked child."""

    def _restart_in_child(self) -> None: ...


#: Registered objects. Only ever iterated in a forked child, which has one thread; no
#: lock (a lock held by a parent thread at fork time would stay held in the child).
_registered: weakref.WeakSet[Restartable] = weakref.WeakSet()


def restart_in_children(obj: Restartable) -> None:
    """Restart ``obj`` in every forked child from now on."""
    _registered.add(obj)


def stop_restarting(obj: Restartable) -> None:
    """Forget ``obj`` (it was closed)."""
    _registered.discard(obj)


def _after_fork_in_child() -> None:
    for obj in list(_registered):
        try:
            obj._restart_in_child()
        except Exception:  # a fork must never fail because of us
            log.exception("%r could not restart after fork", obj)


os.register_at_fork(after_in_child=_after_fork_in_child)
